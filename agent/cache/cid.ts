// Content ids of the cache: a lowercase hex SHA-256, or the same digest spelled as a
// CIDv1 (multibase base32 'b', raw codec 0x55, multihash sha2-256 0x12 length 0x20),
// which always starts "bafkrei". Only this one CID shape is accepted: any other codec
// or hash names bytes that the store cannot verify with SHA-256 alone.

import { base32Decode, base32Encode } from '../../protocol/base32.js'
import { CairnError } from '../../protocol/errors.js'

/** version 1, raw (0x55), sha2-256 (0x12), 32-byte digest: the fixed 4-byte prefix. */
const CID_PREFIX = Uint8Array.from([0x01, 0x55, 0x12, 0x20])
export const HEX_PATTERN = /^[0-9a-f]{64}$/
/** 'b' + base32 of 36 bytes = 1 + 58 characters. */
const CID_PATTERN = /^bafkrei[a-z2-7]{52}$/

export function cidFromSha256(sha256: string): string {
  if (!HEX_PATTERN.test(sha256)) throw new CairnError('BAD_REQUEST', `not a lowercase hex sha256: ${sha256.slice(0, 80)}`)
  const bytes = new Uint8Array(36)
  bytes.set(CID_PREFIX, 0)
  bytes.set(Buffer.from(sha256, 'hex'), 4)
  return 'b' + base32Encode(bytes)
}

/** The sha256 a CIDv1 raw/sha2-256 names, or undefined when `cid` is not one. */
export function sha256FromCid(cid: string): string | undefined {
  if (!CID_PATTERN.test(cid)) return undefined
  const bytes = base32Decode(cid.slice(1))
  if (!bytes || bytes.length !== 36) return undefined
  for (let i = 0; i < CID_PREFIX.length; i++) if (bytes[i] !== CID_PREFIX[i]) return undefined
  return Buffer.from(bytes.subarray(4)).toString('hex')
}

/** A content name (hex sha256 or CID) to its sha256, or undefined when it is neither. */
export function parseContentId(name: string): string | undefined {
  if (HEX_PATTERN.test(name)) return name
  return sha256FromCid(name)
}

/** Like parseContentId, but throws BAD_REQUEST naming `what`. */
export function toSha256(name: string, what = 'content id'): string {
  const sha = parseContentId(name)
  if (sha === undefined) throw new CairnError('BAD_REQUEST', `${what}: expected a lowercase hex sha256 or a CIDv1 raw sha2-256 (bafkrei…), got ${JSON.stringify(name.slice(0, 80))}`)
  return sha
}
