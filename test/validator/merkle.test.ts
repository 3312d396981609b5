import t from 'tap'
import { createHash } from 'node:crypto'
import { merkleRoot } from '../../validator/merkle.js'

const sha = (...parts: Buffer[]) => createHash('sha256').update(Buffer.concat(parts)).digest()
const leaf = (d: Buffer) => sha(Buffer.of(0), d)
const node = (l: Buffer, r: Buffer) => sha(Buffer.of(1), l, r)

/** RFC 6962 section 2.1, computed differently from the code under test: left to right
 * with a stack of perfect subtrees (as a CT log appends), then folded right to left.
 * Equal-height neighbours merge at once, so what is left on the stack are the perfect
 * subtrees of sizes given by the binary digits of n, largest first: exactly the
 * splits at the largest power of two below n. */
function reference(leavesHex: string[]): string {
  if (leavesHex.length === 0) return sha().toString('hex')
  const stack: Array<{ size: number; hash: Buffer }> = []
  for (const x of leavesHex) {
    stack.push({ size: 1, hash: leaf(Buffer.from(x, 'hex')) })
    while (stack.length >= 2 && stack.at(-1)!.size === stack.at(-2)!.size) {
      const r = stack.pop()!
      const l = stack.pop()!
      stack.push({ size: l.size * 2, hash: node(l.hash, r.hash) })
    }
  }
  let acc = stack.pop()!.hash
  while (stack.length > 0) acc = node(stack.pop()!.hash, acc)
  return acc.toString('hex')
}

const leaves = (n: number) => Array.from({ length: n }, (_, i) => createHash('sha256').update(`leaf ${i}`).digest('hex'))

t.test('the empty tree is SHA-256 of nothing (RFC 6962)', async t => {
  t.equal(merkleRoot([]), 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855')
})

t.test('merkleRoot agrees with an independent RFC 6962 computation', async t => {
  for (const n of [0, 1, 2, 3, 4, 5, 7, 8, 9, 16, 17]) t.equal(merkleRoot(leaves(n)), reference(leaves(n)), `n = ${n}`)
})

t.test('small trees spelled out', async t => {
  const d = leaves(5).map(x => Buffer.from(x, 'hex'))
  const [a, b, c, e, f] = d.map(leaf) as [Buffer, Buffer, Buffer, Buffer, Buffer]
  t.equal(merkleRoot(leaves(1)), a.toString('hex'), 'one leaf: H(00 || d0)')
  t.equal(merkleRoot(leaves(2)), node(a, b).toString('hex'))
  t.equal(merkleRoot(leaves(3)), node(node(a, b), c).toString('hex'), 'split 2 + 1, not 1 + 2')
  t.equal(merkleRoot(leaves(4)), node(node(a, b), node(c, e)).toString('hex'))
  t.equal(merkleRoot(leaves(5)), node(node(node(a, b), node(c, e)), f).toString('hex'), 'split 4 + 1')
})

t.test('leaves are raw bytes: order matters, and leaves are not nodes', async t => {
  const l = leaves(3)
  t.not(merkleRoot(l), merkleRoot([l[1]!, l[0]!, l[2]!]))
  // A node's children cannot pose as two leaves (the 0x00 / 0x01 separation).
  const inner = node(leaf(Buffer.from(l[0]!, 'hex')), leaf(Buffer.from(l[1]!, 'hex'))).toString('hex')
  t.not(merkleRoot([inner]), merkleRoot(l.slice(0, 2)))
})
