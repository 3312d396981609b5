// The seam between the two halves of OTA: the release channel (TUF metadata, target
// selection, verified resumable downloads: ota/tuf-*.ts) and the device's updater
// (A/B slots, launcher, health-checked commit and rollback: ota/slots.ts,
// ota/updater.ts). Both sides code against these types only, and read a target's
// custom metadata with parseReleaseInfo.

import { isSemver } from '../protocol/semver.js'

/** Custom metadata of one release target (TUF `targets.<name>.custom.cairn`). */
export interface ReleaseInfo {
  /** Semantic version of the release, e.g. "1.4.0". */
  version: string
  /** Channel name, e.g. "stable", "beta". */
  channel: string
  /** Lowest running version allowed to update straight to this one. */
  minVersion?: string
  /** Node architectures this target runs on ("arm64", "x64"); absent = any. */
  arch?: string[]
  /** Board kinds (hw/board.ts: "rpi4", "rpi5", "jetson-orin", "generic", …); absent = any. */
  boards?: string[]
  /** Staged rollout, 0–100: a device is admitted when its bucket is below this. */
  rollout: number
  /** Kind of payload: the agent bundle (a tar of the slot tree) or an OS image pair. */
  kind: 'agent' | 'os'
}

/** One verified target the device may install. */
export interface ReleaseCandidate extends ReleaseInfo {
  /** TUF target path, e.g. "cairn/1.4.0/linux-arm64/cairn-agent.tar". */
  targetPath: string
  length: number
  sha256: string
}

export interface DeviceFacts {
  deviceId: string
  runningVersion: string
  arch: string
  board: string
  channel: string
  /** Versions that failed their health check on this device: never retried. */
  badVersions: ReadonlySet<string>
  /** Hold at this version (fleet `pin-version`): nothing newer is selected. */
  pinnedVersion?: string
}

export interface DownloadProgress {
  bytes: number
  total: number
  /** Bytes fetched again after an interruption (resume overlap). */
  refetched: number
}

/** The release channel as the updater sees it. Every method verifies TUF metadata
 * (root chain, thresholds, expiry, versions, snapshot/timestamp consistency) before
 * trusting anything it returns. */
export interface ReleaseChannel {
  /** Refreshes metadata and returns the newest admissible release, or null. Throws
   * CairnError with a clear message when the metadata does not verify. */
  check(facts: DeviceFacts): Promise<ReleaseCandidate | null>
  /** Downloads a target into `file`, resuming a partial `file` with HTTP Range, and
   * verifies its length and SHA-256 against the TUF metadata before resolving. */
  download(candidate: ReleaseCandidate, file: string, onProgress?: (p: DownloadProgress) => void): Promise<void>
}

/** Reads `custom.cairn` back into a ReleaseInfo, or null when it is missing or malformed
 * (such a target is never selected). */
export function parseReleaseInfo(raw: unknown): ReleaseInfo | null {
  if (!raw || typeof raw !== 'object' || Array.isArray(raw)) return null
  const r = raw as Record<string, unknown>
  const strings = (v: unknown): string[] | undefined | null => (v === undefined ? undefined : Array.isArray(v) && v.every(x => typeof x === 'string') ? (v as string[]) : null)
  const arch = strings(r.arch)
  const boards = strings(r.boards)
  if (typeof r.version !== 'string' || !isSemver(r.version) || typeof r.channel !== 'string') return null
  if (typeof r.rollout !== 'number' || !(r.rollout >= 0 && r.rollout <= 100)) return null
  if (r.kind !== 'agent' && r.kind !== 'os') return null
  if (r.minVersion !== undefined && (typeof r.minVersion !== 'string' || !isSemver(r.minVersion))) return null
  if (arch === null || boards === null) return null
  const info: ReleaseInfo = { version: r.version, channel: r.channel, rollout: r.rollout, kind: r.kind }
  if (r.minVersion !== undefined) info.minVersion = r.minVersion as string
  if (arch !== undefined) info.arch = arch
  if (boards !== undefined) info.boards = boards
  return info
}
