// The device's release channel (ReleaseChannel in ota/release-types.ts) over TUF: each check runs
// the full TUF client workflow with tuf-js, then picks the newest release this device may
// take; downloads go through ota/fetcher.ts (Range resume, TUF length cap, SHA-256).

import { CairnError } from '../protocol/errors.js'
import { fetchTarget, type FetchResult, type FetchTargetOptions } from './fetcher.js'
import { rolloutAdmits } from './rollout-bucket.js'
import { compareSemver, parseSemver, type SemVer } from '../protocol/semver.js'
import { listReleases } from './release-list.js'
import { targetUrl } from './tuf-client.js'
import type { DeviceFacts, DownloadProgress, ReleaseCandidate, ReleaseChannel, ReleaseInfo } from './release-types.js'

export interface TufChannelOptions {
  /** The published tree (agent setting --release-url): metadata/ and targets/ below it. */
  releaseUrl: string
  /** Device-local trusted metadata, e.g. <state-dir>/ota/tuf. */
  metadataDir: string
  /** The trusted root shipped with the agent or image (agent setting --release-root). */
  trustedRoot: string
  /** Which payloads this channel offers (default 'agent'). */
  kind?: ReleaseInfo['kind']
  /** Overrides of the URLs derived from releaseUrl. */
  metadataUrl?: string
  targetBaseUrl?: string
  metadataTimeoutMs?: number
  metadataRetries?: number
  /** Passed to the target fetcher (timeouts, retries, resume overlap). */
  download?: Pick<FetchTargetOptions, 'idleTimeoutMs' | 'retries' | 'retryDelayMs' | 'resumeOverlap'>
}

export class TufChannel implements ReleaseChannel {
  /** What the last download did (bytes received, re-fetched, attempts), for reports. */
  lastDownload: FetchResult | null = null
  private readonly metadataUrl: string
  private readonly targetBaseUrl: string

  constructor(private readonly opts: TufChannelOptions) {
    const base = opts.releaseUrl.replace(/\/+$/, '')
    this.metadataUrl = opts.metadataUrl ?? `${base}/metadata`
    this.targetBaseUrl = opts.targetBaseUrl ?? `${base}/targets`
  }

  async check(facts: DeviceFacts): Promise<ReleaseCandidate | null> {
    const { releases: offered } = await listReleases({
      metadataDir: this.opts.metadataDir,
      metadataUrl: this.metadataUrl,
      trustedRoot: this.opts.trustedRoot,
      ...(this.opts.metadataTimeoutMs !== undefined ? { fetchTimeoutMs: this.opts.metadataTimeoutMs } : {}),
      ...(this.opts.metadataRetries !== undefined ? { fetchRetries: this.opts.metadataRetries } : {}),
    })
    return selectRelease(offered, facts, this.opts.kind ?? 'agent')
  }

  async download(candidate: ReleaseCandidate, file: string, onProgress?: (p: DownloadProgress) => void): Promise<void> {
    this.lastDownload = await fetchTarget({
      url: targetUrl(this.targetBaseUrl, candidate.targetPath, candidate.sha256),
      file,
      length: candidate.length,
      hashes: { sha256: candidate.sha256 },
      ...(onProgress ? { onProgress } : {}),
      ...this.opts.download,
    })
  }
}

/** Why a release is not offered to a device, or null when it is. */
export function refusal(c: ReleaseCandidate, facts: DeviceFacts, kind: ReleaseInfo['kind']): string | null {
  const v = parseSemver(c.version)
  const running = mustParse(facts.runningVersion, 'runningVersion')
  if (!v) return 'version is not semver'
  if (c.kind !== kind) return `kind ${c.kind}`
  if (c.channel !== facts.channel) return `channel ${c.channel}`
  if (c.arch && !c.arch.includes(facts.arch)) return `not built for ${facts.arch}`
  if (c.boards && !c.boards.includes(facts.board)) return `not for board ${facts.board}`
  // Anti-rollback: never a lower or equal version, however well signed.
  if (compareSemver(v, running) <= 0) return `not newer than ${facts.runningVersion}`
  if (facts.badVersions.has(c.version)) return 'failed its health check here before'
  if (facts.pinnedVersion !== undefined && compareSemver(v, mustParse(facts.pinnedVersion, 'pinnedVersion')) > 0) return `newer than the pinned ${facts.pinnedVersion}`
  if (c.minVersion !== undefined) {
    const min = parseSemver(c.minVersion)
    if (!min || compareSemver(running, min) < 0) return `needs ${c.minVersion} or newer to update from`
  }
  if (!rolloutAdmits(facts.deviceId, c.targetPath, c.rollout)) return `outside the ${c.rollout} % rollout`
  return null
}

/** The newest admissible release; among equal versions the most specific target (one
 * naming this arch and board), then the first by path, so the choice is deterministic. */
export function selectRelease(offered: readonly ReleaseCandidate[], facts: DeviceFacts, kind: ReleaseInfo['kind'] = 'agent'): ReleaseCandidate | null {
  const ok = offered.filter(c => refusal(c, facts, kind) === null)
  const specificity = (c: ReleaseCandidate): number => (c.arch ? 2 : 0) + (c.boards ? 1 : 0)
  ok.sort((a, b) => compareSemver(b.version, a.version) || specificity(b) - specificity(a) || (a.targetPath < b.targetPath ? -1 : 1))
  return ok[0] ?? null
}

function mustParse(text: string, what: string): SemVer {
  const v = parseSemver(text)
  if (!v) throw new CairnError('BAD_REQUEST', `${what} ${JSON.stringify(text)} is not a semantic version`)
  return v
}
