// One contract for both proof logs DeviceProofs runs on: the agent's (SQLite state
// file) and the fleet simulator's (memory).

import t, { type Test } from 'tap'
import { MemoryProofLog, sqliteProofLog, type ProofLog } from '../../../agent/proof/proof-log.js'
import { openStateDb } from '../../../agent/core/state-db.js'
import { tmp } from '../../helpers/agent.js'

const impls: Array<[string, (t: Test) => ProofLog]> = [
  [
    'sqlite',
    t => {
      const db = openStateDb(tmp())
      t.teardown(() => db.close())
      return sqliteProofLog(db)
    },
  ],
  ['memory', () => new MemoryProofLog(100)],
]

for (const [name, make] of impls) {
  t.test(`${name}: the chain head, ranges and pruning`, async t => {
    const log = make(t)
    t.equal(log.head(), undefined, 'empty at first')
    for (let seq = 0; seq < 5; seq++) log.append(seq, `h${seq}`, 1000 + seq, Buffer.from(`hb ${seq}`))
    t.same(log.head(), { seq: 4, hash: 'h4' })
    t.same(
      log.range(1, 3).map(r => [r.seq, r.payload.toString()]),
      [
        [1, 'hb 1'],
        [2, 'hb 2'],
        [3, 'hb 3'],
      ],
    )
    t.same(log.range(7, 9), [])
    t.equal(log.prune(1003), 3, 'created before 1003')
    t.same(
      log.range(0, 10).map(r => r.seq),
      [3, 4],
    )
    t.equal(log.prune(10_000), 1, 'never the head')
    t.same(log.head(), { seq: 4, hash: 'h4' })
  })

  t.test(`${name}: the newest beacon per validator, in validator order`, async t => {
    const log = make(t)
    t.same(log.beacons(), [])
    t.equal(log.beacon('vb'), undefined)
    log.saveBeacon('vb', 5, 'b5', 1)
    log.saveBeacon('va', 7, 'a7', 2)
    log.saveBeacon('vb', 6, 'b6', 3)
    t.same(log.beacons(), [
      { validator: 'va', slot: 7, hash: 'a7' },
      { validator: 'vb', slot: 6, hash: 'b6' },
    ])
    t.same(log.beacon('vb'), { slot: 6 })
  })
}

t.test('memory: holds the newest `capacity` heartbeats only', async t => {
  const log = new MemoryProofLog(3)
  for (let seq = 0; seq < 5; seq++) log.append(seq, `h${seq}`, seq, Buffer.from(String(seq)))
  t.same(
    log.held().map(r => r.seq),
    [2, 3, 4],
  )
  t.same(
    log.range(0, 10).map(r => r.seq),
    [2, 3, 4],
  )
})
