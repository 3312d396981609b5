// Every release a TUF repository publishes, verified exactly as a device verifies it
// (ota/tuf-client.ts: root chain, thresholds, expiry, versions): the device's channel
// picks from this list (ota/tuf-channel.ts), and the fleet service shows it on its
// rollouts page, so the console never lists a release a device would refuse.

import { refreshMetadata, seedTrustedRoot, targetInfo } from './tuf-client.js'
import { parseReleaseInfo, type ReleaseCandidate } from './release-types.js'

export interface ReleaseListOptions {
  /** Base URL of the published metadata/ directory. */
  metadataUrl: string
  /** Local trusted metadata, seeded from `trustedRoot` (e.g. <state-dir>/tuf). */
  metadataDir: string
  /** The trusted root.json (the one shipped with the agent, or given to the service). */
  trustedRoot: string
  fetchTimeoutMs?: number
  fetchRetries?: number
}

export interface ReleaseListing {
  /** The verified targets role's version and expiry (ISO time). */
  targetsVersion: number
  expires: string
  /** Releases listed by the top-level targets role itself, with a SHA-256 each (every
   * Cairn release has one); targets without Cairn's custom metadata are left out. */
  releases: ReleaseCandidate[]
}

export async function listReleases(o: ReleaseListOptions): Promise<ReleaseListing> {
  seedTrustedRoot(o.metadataDir, o.trustedRoot)
  const trusted = await refreshMetadata({
    metadataDir: o.metadataDir,
    metadataUrl: o.metadataUrl,
    ...(o.fetchTimeoutMs !== undefined ? { fetchTimeoutMs: o.fetchTimeoutMs } : {}),
    ...(o.fetchRetries !== undefined ? { fetchRetries: o.fetchRetries } : {}),
  })
  const releases: ReleaseCandidate[] = []
  for (const path of trusted.topLevelPaths()) {
    const t = await targetInfo(trusted, path)
    const info = t ? parseReleaseInfo(t.custom.cairn) : null
    const sha256 = t?.hashes.sha256
    if (!t || !info || !sha256) continue
    releases.push({ ...info, targetPath: path, length: t.length, sha256 })
  }
  return { targetsVersion: trusted.targetsVersion, expires: trusted.targetsExpires, releases }
}
