// Staged rollout: a deterministic bucket per (device, release target) in [0, 100).
// A device is admitted when its bucket is below the rollout percentage, so raising the
// percentage only ever adds devices, and the same device always decides the same way.
// Keyed by target path (not by version alone) so that each release draws a fresh
// sample: the same devices are not always the first to take a risk.

import { createHash } from 'node:crypto'

/** bucket = first 8 hex digits of SHA-256(deviceId + "\n" + targetPath), as an integer,
 * / 2^32 × 100. */
export function rolloutBucket(deviceId: string, targetPath: string): number {
  const digest = createHash('sha256').update(`${deviceId}\n${targetPath}`, 'utf8').digest()
  return (digest.readUInt32BE(0) / 2 ** 32) * 100
}

export function rolloutAdmits(deviceId: string, targetPath: string, rolloutPct: number): boolean {
  return rolloutBucket(deviceId, targetPath) < rolloutPct
}
