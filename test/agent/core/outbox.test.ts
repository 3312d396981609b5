import t from 'tap'
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { ManualClock } from '../../../protocol/clock.js'
import { MsgClass, Outbox, type NewMessage, type OutboxOptions } from '../../../agent/core/outbox.js'
import { openStateDb } from '../../../agent/core/state-db.js'

const tmp = () => mkdtempSync(join(tmpdir(), 'cairn-outbox-'))
const msg = (i: number, cls: MsgClass = MsgClass.event, size = 10): NewMessage => ({ id: `msg-${String(i).padStart(6, '0')}`, cls, topic: 't', payload: Buffer.alloc(size, i % 256) })
const open = (dir: string, over: Partial<OutboxOptions> = {}) => {
  const clock = (over.clock as ManualClock | undefined) ?? new ManualClock()
  const db = openStateDb(dir)
  const ob = new Outbox(db, { clock, maxBytes: 1 << 20, lazyWriteMs: 30_000, mustKeepDays: 30, ...over })
  return { db, ob, clock }
}
const drainAll = (ob: Outbox) => {
  const ids: string[] = []
  for (;;) {
    const batch = ob.peek(7, new Set())
    if (batch.length === 0) return ids
    for (const r of batch) {
      ids.push(r.id)
      ob.ack(r.seq)
    }
  }
}

t.test('records come out oldest first, across memory and disk, and leave on ack', async t => {
  const { ob } = open(tmp())
  for (let i = 0; i < 50; i++) ob.enqueue(msg(i, i % 3 === 0 ? MsgClass.telemetry : MsgClass.event))
  t.equal(ob.depth(), 50)
  const ids = drainAll(ob)
  t.same(
    ids,
    [...Array(50).keys()].map(i => `msg-${String(i).padStart(6, '0')}`),
  )
  t.equal(ob.depth(), 0)
  ob.flush()
  t.equal(ob.sizeBytes(), 0, 'deletes are batched; after a flush nothing is held')
})

t.test('in-flight records are skipped by peek', async t => {
  const { ob } = open(tmp())
  for (let i = 0; i < 5; i++) ob.enqueue(msg(i))
  const first = ob.peek(2, new Set())
  const next = ob.peek(2, new Set(first.map(r => r.seq)))
  t.same(
    next.map(r => r.id),
    ['msg-000002', 'msg-000003'],
  )
})

t.test('durable records survive closing without flush (a crash); lazy telemetry is written on flush', async t => {
  const dir = tmp()
  const a = open(dir)
  a.ob.enqueue(msg(1, MsgClass.event))
  a.ob.enqueue(msg(2, MsgClass.mustKeep))
  a.ob.enqueue(msg(3, MsgClass.telemetry))
  a.db.close() // no flush: as after kill -9
  const b = open(dir)
  t.same(drainAll(b.ob), ['msg-000001', 'msg-000002'], 'telemetry still in memory at the crash is the only loss')
  b.ob.enqueue(msg(4, MsgClass.telemetry))
  b.ob.close()
  b.db.close()
  const c = open(dir)
  t.same(drainAll(c.ob), ['msg-000004'], 'flushed telemetry survives')
})

t.test('acknowledged telemetry never touches the disk; unacknowledged is written after lazyWriteMs', async t => {
  const dir = tmp()
  const { ob, db, clock } = open(dir)
  const count = () => (db.prepare('SELECT COUNT(*) AS n FROM outbox').get() as { n: number }).n
  const r = ob.enqueue(msg(1, MsgClass.telemetry))
  ob.ack(r.seq)
  ob.enqueue(msg(2, MsgClass.telemetry))
  t.equal(count(), 0)
  clock.advance(30_000)
  ;(ob as unknown as { tick(): void }).tick()
  t.equal(count(), 1, 'the old unacknowledged sample was written')
  const zero = open(tmp(), { lazyWriteMs: 0 })
  zero.ob.enqueue(msg(1, MsgClass.telemetry))
  t.equal((zero.db.prepare('SELECT COUNT(*) AS n FROM outbox').get() as { n: number }).n, 1, 'lazyWriteMs 0 writes at once')
})

t.test('the size cap evicts telemetry first, then events, never must-keep', async t => {
  const evicted: Array<[number, number]> = []
  const { ob } = open(tmp(), { maxBytes: 64 * 1024, lazyWriteMs: 0, onEvict: (c, n) => evicted.push([c, n]) })
  const size = 900 // + topic + 64 overhead ≈ 965 bytes a row
  for (let i = 0; i < 20; i++) ob.enqueue(msg(i, MsgClass.mustKeep, size))
  for (let i = 20; i < 40; i++) ob.enqueue(msg(i, MsgClass.event, size))
  for (let i = 40; i < 100; i++) ob.enqueue(msg(i, MsgClass.telemetry, size))
  t.ok(ob.sizeBytes() <= 64 * 1024, 'under the cap')
  const ids = drainAll(ob)
  t.same(
    ids.slice(0, 40),
    [...Array(40).keys()].map(i => `msg-${String(i).padStart(6, '0')}`),
    'all must-keep and events kept',
  )
  t.ok(ids.length < 100 && ids.length > 40, 'some telemetry evicted')
  t.equal(ids[ids.length - 1], 'msg-000099', 'the newest telemetry is kept')
  t.ok(evicted.every(([c]) => c === MsgClass.telemetry))
  const full = open(tmp(), { maxBytes: 64 * 1024, lazyWriteMs: 0 })
  for (let i = 0; i < 100; i++) full.ob.enqueue(msg(i, MsgClass.mustKeep, size))
  t.equal(full.ob.depth(), 100, 'must-keep records are kept even over the cap')
})

t.test('expired replies are dropped; must-keep records go after their retention', async t => {
  const { ob, clock } = open(tmp())
  ob.enqueue({ ...msg(1, MsgClass.reply), expires: clock.now() + 1000 })
  ob.enqueue(msg(2, MsgClass.mustKeep))
  clock.advance(2000)
  t.same(
    ob.peek(10, new Set()).map(r => r.id),
    ['msg-000002'],
  )
  clock.advance(31 * 86_400_000)
  ;(ob as unknown as { tick(): void }).tick()
  t.equal(ob.depth(), 0)
})

t.test('oldestCreated: when the oldest unacknowledged message was queued, across memory and disk', async t => {
  const dir = tmp()
  const { ob, db, clock } = open(dir)
  t.equal(ob.oldestCreated(), undefined, 'nothing waits')
  const t0 = clock.now()
  const tel = ob.enqueue(msg(1, MsgClass.telemetry)) // lazy: in memory
  clock.advance(1000)
  const ev = ob.enqueue(msg(2, MsgClass.event)) // on disk at once
  clock.advance(1000)
  ob.enqueue(msg(3, MsgClass.event))
  t.equal(ob.oldestCreated(), t0, 'the telemetry in memory is older than the rows on disk')
  ob.ack(tel.seq)
  t.equal(ob.oldestCreated(), t0 + 1000, 'then the oldest row on disk')
  ob.ack(ev.seq)
  t.equal(ob.oldestCreated(), t0 + 2000, 'an acknowledged row whose delete is still batched does not count')
  ob.flush()
  t.equal(ob.oldestCreated(), t0 + 2000, 'nor once it is deleted')
  clock.advance(1000)
  ob.enqueue(msg(4, MsgClass.telemetry))
  ob.flush() // the telemetry goes to disk too
  db.close()
  const b = open(dir, { clock })
  t.equal(b.ob.oldestCreated(), t0 + 2000, 'after a restart, from the table')
  const [first, second] = b.ob.peek(2, new Set())
  b.ob.ack(second!.seq)
  t.equal(b.ob.oldestCreated(), t0 + 2000, 'an acknowledgement out of order leaves the oldest in place')
  b.ob.ack(first!.seq)
  t.equal(b.ob.oldestCreated(), undefined, 'all acknowledged (deletes still batched): nothing waits')
  t.equal(b.ob.depth(), 0)
  // The query walks the table in seq order (its rowid) and stops at its LIMIT: no sort, no scan.
  const head = (b.ob as unknown as { st: { head: { source: string } } }).st.head
  const plan = (b.db.prepare(`EXPLAIN QUERY PLAN ${head.source}`).all(1) as Array<{ detail: string }>).map(r => r.detail).join('; ')
  t.notMatch(plan, /TEMP B-TREE/, `no sort: ${plan}`)
})

t.test('a week of 60 s heartbeats offline fits the default cap', async t => {
  const { ob } = open(tmp(), { maxBytes: 32 * 1024 * 1024, lazyWriteMs: 0 })
  const n = 7 * 24 * 60
  const tx = (ob as unknown as { db: { transaction(f: () => void): () => void } }).db
  tx.transaction(() => {
    for (let i = 0; i < n; i++) ob.enqueue({ id: `hb-${String(i).padStart(8, '0')}`, cls: MsgClass.mustKeep, topic: 'cairn/v1/demo/x/proof', payload: Buffer.alloc(600, 1) })
  })()
  t.equal(ob.depth(), n)
  t.ok(ob.sizeBytes() < 32 * 1024 * 1024, `${(ob.sizeBytes() / 1048576).toFixed(1)} MiB < 32 MiB`)
})

t.test('a second agent on the same state dir is refused', async t => {
  const dir = tmp()
  const a = open(dir)
  a.ob.enqueue(msg(1))
  t.throws(() => openStateDb(dir), { code: 'LOCKED', message: /another agent/ })
})

t.test('disk full: a durable record fails loudly and nothing already stored is lost', async t => {
  const { ob, db } = open(tmp(), { lazyWriteMs: 0 })
  const pages = db.pragma('page_count', { simple: true }) as number
  db.pragma(`max_page_count = ${pages + 2}`)
  t.throws(
    () => {
      for (let i = 0; i < 100; i++) ob.enqueue(msg(i, MsgClass.mustKeep, 4000))
    },
    { code: 'STATE_DIR', message: /SQLITE_FULL/ },
  )
  const depth = ob.depth()
  t.ok(depth > 0, 'what was stored is still there')
  t.same(drainAll(ob).length, depth)
})
