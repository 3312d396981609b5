// The root helper's own check of an OS release, before it writes a byte: it runs the
// TUF client itself, from the trusted root that shipped in the image (read-only root,
// /opt/cairn/root.json) into metadata only root can write (/var/lib/cairn/os/tuf), and
// takes the target's length and SHA-256 from there. The agent only says which target it
// downloaded; its own verification is not trusted, so a compromised agent cannot get
// anything but a signed OS release of a newer version written onto the partitions.

import { compareSemver, isSemver } from '../../protocol/semver.js'
import { refreshMetadata, seedTrustedRoot, targetInfo } from '../../ota/tuf-client.js'
import { parseReleaseInfo } from '../../ota/release-types.js'
import type { Verified } from './write-slot.js'
import { VerifyError } from './verify-error.js'

export interface ReleaseTrust {
  /** the published repository (metadata/ below it) */
  readonly releaseUrl: string
  /** the trusted root.json shipped with the OS */
  readonly trustedRoot: string
  /** root's own TUF metadata dir */
  readonly metadataDir: string
}

export interface DeviceOs {
  readonly runningVersion: string
  /** Node's architecture name (arm64) */
  readonly arch: string
  /** hw/board.ts kind (rpi4, rpi5, generic, …) */
  readonly board: string
}

export { VerifyError } from './verify-error.js'

/** Refreshes TUF metadata and returns what the signed targets say of `targetPath`,
 * after checking it is an OS release of `version`, for this device, newer than the
 * running OS. Network and metadata failures throw plain errors (retried); a target that
 * is signed but not acceptable throws VerifyError. */
export async function verifyOsTarget(trust: ReleaseTrust, req: { targetPath: string; version: string }, os: DeviceOs): Promise<Verified> {
  seedTrustedRoot(trust.metadataDir, trust.trustedRoot)
  const updater = await refreshMetadata({ metadataDir: trust.metadataDir, metadataUrl: `${trust.releaseUrl.replace(/\/+$/, '')}/metadata` })
  const t = await targetInfo(updater, req.targetPath)
  if (!t) throw new VerifyError(`${req.targetPath} is not in the signed targets`)
  const info = parseReleaseInfo(t.custom.cairn)
  const sha256 = t.hashes.sha256
  if (!info || !sha256) throw new VerifyError(`${req.targetPath} has no Cairn release metadata`)
  if (info.kind !== 'os') throw new VerifyError(`${req.targetPath} is a release of kind ${info.kind}, not an OS release`)
  if (info.version !== req.version) throw new VerifyError(`${req.targetPath} is version ${info.version} in the signed metadata, not ${req.version}`)
  if (info.arch && !info.arch.includes(os.arch)) throw new VerifyError(`${req.targetPath} is not built for ${os.arch} (${info.arch.join(', ')})`)
  if (info.boards && !info.boards.includes(os.board)) throw new VerifyError(`${req.targetPath} is not for board ${os.board} (${info.boards.join(', ')})`)
  // Anti-rollback on the helper's side too: an older release, however well signed, could
  // bring back what a newer one fixed. A running version it cannot read refuses too.
  if (!isSemver(os.runningVersion))
    throw new VerifyError(`the running OS version ${JSON.stringify(os.runningVersion)} (/etc/cairn-release) is not a semantic version: no release can be shown to be newer`)
  if (compareSemver(info.version, os.runningVersion) <= 0) throw new VerifyError(`${info.version} is not newer than the running OS ${os.runningVersion}`)
  if (info.minVersion !== undefined && compareSemver(os.runningVersion, info.minVersion) < 0) throw new VerifyError(`${info.version} needs OS ${info.minVersion} or newer to update from`)
  return { length: t.length, sha256 }
}
