// Staged rollout buckets (ota/rollout-bucket.ts): 1,000 simulated devices admit about the
// expected share, exactly reproducibly, and raising the percentage only adds devices.

import t from 'tap'
import { createHash } from 'node:crypto'
import { rolloutAdmits, rolloutBucket } from '../../ota/rollout-bucket.js'

const ids = Array.from({ length: 1000 }, (_, i) => `dev-${createHash('sha256').update(String(i)).digest('hex').slice(0, 16)}`)
const path = 'cairn/1.4.0/cairn-agent-arm64.tar'
const admitted = (pct: number, p = path) => new Set(ids.filter(id => rolloutAdmits(id, p, pct)))

t.test('the bucket is the documented formula', async t => {
  const d = createHash('sha256').update(`dev-a\n${path}`).digest('hex')
  t.equal(rolloutBucket('dev-a', path), (parseInt(d.slice(0, 8), 16) / 2 ** 32) * 100)
  for (const id of ids) {
    const b = rolloutBucket(id, path)
    if (!(b >= 0 && b < 100)) t.fail(`bucket ${b} out of [0, 100)`)
  }
  t.equal(admitted(0).size, 0, '0 % admits nobody')
  t.equal(admitted(100).size, 1000, '100 % admits everybody')
})

t.test('10 / 50 / 90 % of 1,000 devices: exact counts, within binomial tolerance', async t => {
  // Deterministic: these are the exact counts for these ids and this path.
  const expected: Record<number, number> = { 10: 105, 50: 499, 90: 902 }
  for (const pct of [10, 50, 90]) {
    const n = admitted(pct).size
    const sigma = Math.sqrt(1000 * (pct / 100) * (1 - pct / 100))
    t.ok(Math.abs(n - pct * 10) <= 4 * sigma, `${pct} %: ${n} admitted, within 4σ (${sigma.toFixed(1)}) of ${pct * 10}`)
    t.equal(n, expected[pct], `${pct} %: exactly ${expected[pct]}`)
  }
})

t.test('raising the percentage only adds devices', async t => {
  let prev = new Set<string>()
  for (let pct = 0; pct <= 100; pct += 5) {
    const now = admitted(pct)
    t.ok(
      [...prev].every(id => now.has(id)),
      `${pct} % keeps every device admitted before`,
    )
    prev = now
  }
})

t.test('each release draws its own sample', async t => {
  const a = admitted(10)
  const b = admitted(10, 'cairn/1.5.0/cairn-agent-arm64.tar')
  const both = [...a].filter(id => b.has(id)).length
  t.ok(both < 40, `only ${both} devices are in the first 10 % of both releases (independent: ~10)`)
})
