// The hashes of a target file as TUF metadata lists them ({"sha512": hex, …}): which
// algorithms Cairn verifies, and checking a file against all of them in one read. The
// TUF spec requires no particular algorithm; these are the ones python-tuf
// (securesystemslib) names and Node computes, less MD5 and SHA-1, which no longer prove
// anything. Every listed algorithm from this set is checked; others are skipped, and a
// target that lists none of these cannot be verified, so it is refused.

import { createHash } from 'node:crypto'
import { createReadStream } from 'node:fs'
import { CairnError } from '../protocol/errors.js'

/** TUF name → Node's name, the digest's length in hex, and how messages call it. */
const ALGORITHMS: Readonly<Record<string, { node: string; hexLength: number; label: string }>> = {
  sha224: { node: 'sha224', hexLength: 56, label: 'SHA-224' },
  sha256: { node: 'sha256', hexLength: 64, label: 'SHA-256' },
  sha384: { node: 'sha384', hexLength: 96, label: 'SHA-384' },
  sha512: { node: 'sha512', hexLength: 128, label: 'SHA-512' },
  blake2b: { node: 'blake2b512', hexLength: 128, label: 'BLAKE2b' },
  blake2s: { node: 'blake2s256', hexLength: 64, label: 'BLAKE2s' },
}

/** The hashes of a target that Cairn checks: TUF algorithm name → lowercase hex, never empty. */
export type TargetHashes = Readonly<Record<string, string>>

/** The listed hashes Cairn verifies. TUF_METADATA when there is none, or when a value
 * cannot be a digest of its algorithm (it could never match: the metadata is broken). */
export function verifiableHashes(listed: Readonly<Record<string, string>>, what: string): TargetHashes {
  const out: Record<string, string> = {}
  for (const [name, value] of Object.entries(listed)) {
    const alg = Object.hasOwn(ALGORITHMS, name) ? ALGORITHMS[name] : undefined
    if (!alg) continue
    const hex = value.toLowerCase()
    if (hex.length !== alg.hexLength || !/^[0-9a-f]*$/.test(hex)) throw new CairnError('TUF_METADATA', `${what}: the signed ${alg.label} ${JSON.stringify(value)} is not a ${alg.label} digest`)
    out[name] = hex
  }
  if (Object.keys(out).length === 0) {
    const names = Object.keys(listed).join(', ') || 'none'
    throw new CairnError('TUF_METADATA', `${what}: the signed metadata lists no hash algorithm that Cairn verifies (it lists ${names}; Cairn verifies ${Object.keys(ALGORITHMS).join(', ')})`)
  }
  return out
}

/** The hash that names the file in a consistent-snapshot repository: SHA-256 when listed
 * (what `cairn release` publishes), else the first listed. Any listed one is valid. */
export function namingHash(hashes: TargetHashes): string {
  return hashes.sha256 ?? Object.values(hashes)[0]!
}

/** Why `file` does not match `hashes` ("SHA-512 is …, the signed metadata says …"), or
 * null when every one of them matches. Reads the file once. */
export async function hashMismatch(file: string, hashes: TargetHashes): Promise<string | null> {
  const digests = Object.keys(hashes).map(name => ({ name, hash: createHash(ALGORITHMS[name]!.node) }))
  for await (const chunk of createReadStream(file)) for (const d of digests) d.hash.update(chunk as Buffer)
  for (const d of digests) {
    const actual = d.hash.digest('hex')
    if (actual !== hashes[d.name]) return `${ALGORITHMS[d.name]!.label} is ${actual}, the signed metadata says ${hashes[d.name]}`
  }
  return null
}
