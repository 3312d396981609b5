// Serve receipts: exact body bytes per response (a client that leaves mid-body counts
// only what the socket took), counters that survive a restart, one signed must-keep
// receipt per period that verifies with the envelope rules and fails when altered.

import t from 'tap'
import { request } from 'node:http'
import { ManualClock } from '../../../protocol/clock.js'
import { generateKeyPair } from '../../../protocol/keys.js'
import { createLogger } from '../../../protocol/log.js'
import { MsgClass, Outbox } from '../../../agent/core/outbox.js'
import { openStateDb } from '../../../agent/core/state-db.js'
import { startCacheServer, type ServedRecord } from '../../../agent/cache/http-server.js'
import { ServeReceipts, verifyServeReceipt, type ServedBody } from '../../../agent/cache/serve-receipts.js'
import { ContentStore } from '../../../agent/cache/store.js'
import { tmp, until } from '../../helpers/agent.js'
import { blob, sha256 } from './origin.js'

const FLEET = 'test'

function fetchAll(url: string, headers: Record<string, string> = {}): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    request(url, { headers, agent: false }, res => {
      const chunks: Buffer[] = []
      res.on('data', c => chunks.push(c))
      res.on('end', () => resolve(Buffer.concat(chunks)))
    })
      .on('error', reject)
      .end()
  })
}

/** Reads about `bytes` of the body, then drops the connection. Returns what it received. */
function readThenAbort(url: string, bytes: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request(url, { agent: false }, res => {
      let got = 0
      res.on('data', c => {
        got += c.length
        if (got >= bytes) {
          req.destroy()
          resolve(got)
        }
      })
    })
    req.on('error', err => ((err as NodeJS.ErrnoException).code === 'ECONNRESET' ? undefined : reject(err)))
    req.end()
  })
}

t.test('receipts count exact bytes, survive a restart and verify', async t => {
  const stateDir = tmp('cairn-receipts-')
  const clock = new ManualClock(1_700_000_000_000)
  const identity = generateKeyPair()
  let db = openStateDb(stateDir)
  let outbox = new Outbox(db, { clock, maxBytes: 1 << 24, lazyWriteMs: 0, mustKeepDays: 30 })
  let receipts = new ServeReceipts({ db, identity, fleet: FLEET, outbox, clock, periodS: 300 })
  const store = await ContentStore.open({ dir: tmp('cairn-cache-'), quotaBytes: 1 << 30, maxObjectBytes: 1 << 28, diskFree: () => 1e12 })
  const served: ServedRecord[] = []
  const srv = await startCacheServer({ store, host: '127.0.0.1', port: 0, clock, onServed: r => (served.push(r), receipts.record(r)) })
  t.teardown(async () => {
    await srv.close()
    store.close()
  })
  const small = blob(100_000)
  const big = blob(16 * 1024 * 1024)
  const hs = sha256(small)
  const hb = sha256(big)
  await store.put(hs, small)
  await store.put(hb, big)

  await fetchAll(`${srv.url}/c/${hs}`)
  await fetchAll(`${srv.url}/c/${hs}`, { range: 'bytes=10-19' })
  await fetchAll(`${srv.url}/c/${hs}`, { 'if-none-match': `"${hs}"` })
  await fetchAll(`${srv.url}/c/${hs}`, { range: 'bytes=100000-' })
  await fetchAll(`${srv.url}/c/${sha256('absent')}`)
  const received = await readThenAbort(`${srv.url}/c/${hb}`, 256 * 1024)
  await until(() => served.length === 5, 60_000, 'five responses counted')
  const cut = served.find(r => r.sha256 === hb)!
  t.ok(cut.bytes >= received, `the aborted response counts what the client got at least (${cut.bytes} >= ${received})`)
  t.ok(cut.bytes < big.length, `and not the whole object (${cut.bytes} < ${big.length})`)
  t.same(
    served.filter(r => r.sha256 === hs).map(r => [r.status, r.bytes]),
    [
      [200, 100_000],
      [206, 10],
      [304, 0],
      [416, 0],
    ],
  )

  // Restart: counters written on stop, read back by a new aggregator on the reopened db.
  receipts.stop()
  outbox.close()
  db.close()
  clock.advance(60_000)
  db = openStateDb(stateDir)
  outbox = new Outbox(db, { clock, maxBytes: 1 << 24, lazyWriteMs: 0, mustKeepDays: 30 })
  receipts = new ServeReceipts({ db, identity, fleet: FLEET, outbox, clock, periodS: 300 })
  t.teardown(() => {
    receipts.stop()
    outbox.close()
    db.close()
  })
  t.equal(receipts.current().totals.bytes, 100_010 + cut.bytes, 'served bytes survived the restart')

  clock.advance(240_000)
  const env = receipts.publish()!
  const body = env.body as unknown as ServedBody
  const want: ServedBody = {
    seq: 0,
    start: 1_700_000_000_000,
    end: 1_700_000_300_000,
    objects: [
      { sha256: hs, bytes: 100_010, requests: 2, ranges: 1 },
      { sha256: hb, bytes: cut.bytes, requests: 1, ranges: 0 },
    ].sort((a, b) => (a.sha256 < b.sha256 ? -1 : 1)),
    totals: { bytes: 100_010 + cut.bytes, requests: 3, ranges: 1, notModified: 1, unsatisfiable: 1 },
  }
  t.same(body, want, 'the body, exactly')
  const checked = verifyServeReceipt(JSON.parse(JSON.stringify(env)), { fleet: FLEET, device: identity.keyId, now: clock.now() })
  t.equal(checked.type, 'cache.served')
  t.throws(
    () => verifyServeReceipt({ ...env, body: { ...body, totals: { ...body.totals, bytes: body.totals.bytes + 1 } } }, { fleet: FLEET, device: identity.keyId, now: clock.now() }),
    { code: 'BAD_SIGNATURE' },
    'altered body refused',
  )
  t.throws(() => verifyServeReceipt(env, { fleet: FLEET, device: generateKeyPair().keyId, now: clock.now() }), { code: 'UNTRUSTED_KEY' }, 'another device’s key refused')

  const rows = db.prepare('SELECT topic, cls, payload FROM outbox').all() as Array<{ topic: string; cls: number; payload: Buffer }>
  const rec = rows.find(r => r.topic === `cairn/v1/${FLEET}/${identity.keyId}/cache/served`)
  t.ok(rec, 'queued on cairn/v1/<fleet>/<device>/cache/served')
  t.equal(rec?.cls, MsgClass.mustKeep, 'as a must-keep record')
  t.same(JSON.parse(rec!.payload.toString()), JSON.parse(JSON.stringify(env)), 'the signed envelope')

  t.same(receipts.current().totals, { bytes: 0, requests: 0, ranges: 0, notModified: 0, unsatisfiable: 0 }, 'a fresh period')
  clock.advance(300_000)
  t.equal(receipts.publish(), undefined, 'nothing served: no receipt')
  await fetchAll(`${srv.url}/c/${hs}`)
  await until(() => served.length === 6, 60_000, 'counted')
  clock.advance(1000)
  t.equal((receipts.publish()!.body as unknown as ServedBody).seq, 1, 'the next receipt is seq 1')
})

t.test('a failing database is logged and retried by the timers, never thrown out of them', async t => {
  const stateDir = tmp('cairn-receipts-')
  const db = openStateDb(stateDir)
  const clock = new ManualClock(1_700_000_000_000)
  const outbox = new Outbox(db, { clock, maxBytes: 1 << 24, lazyWriteMs: 0, mustKeepDays: 30 })
  const lines: string[] = []
  const log = createLogger({ level: 'info', out: { write: (s: string) => lines.push(s) } })
  const receipts = new ServeReceipts({ db, identity: generateKeyPair(), fleet: FLEET, outbox, clock, periodS: 1, log })
  receipts.start()
  outbox.close()
  db.close()
  // The period timer fires about a second later; an exception there would end this process.
  await until(() => lines.some(l => l.includes('publish failed, retrying later')), 60_000, 'the failure logged')
  receipts.stop()
  t.pass('logged, not thrown')
})
