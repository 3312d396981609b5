// RFC 6962 (Certificate Transparency) Merkle tree hash over 32-byte leaves. Chosen
// because it is specified exactly, has no odd-node ambiguity (the split is at the
// largest power of two below n) and separates leaves from nodes (0x00 / 0x01).

import { createHash } from 'node:crypto'

const h = (...parts: Uint8Array[]): Buffer => {
  const d = createHash('sha256')
  for (const p of parts) d.update(p)
  return d.digest()
}
const LEAF = Uint8Array.of(0)
const NODE = Uint8Array.of(1)

/** MTH(D[n]) of RFC 6962 section 2.1; leaves given as hex strings of 32 bytes. */
export function merkleRoot(leavesHex: readonly string[]): string {
  const leaves = leavesHex.map(x => Buffer.from(x, 'hex'))
  return mth(leaves, 0, leaves.length).toString('hex')
}

function mth(leaves: readonly Buffer[], start: number, n: number): Buffer {
  if (n === 0) return h()
  if (n === 1) return h(LEAF, leaves[start]!)
  let k = 1
  while (k * 2 < n) k *= 2
  return h(NODE, mth(leaves, start, k), mth(leaves, start + k, n - k))
}
