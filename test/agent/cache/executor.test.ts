// The `cache` task executor on its own (the queue is tested in test/task/): params with
// clear errors, admission against the quota, the outcome's hashes, idempotent re-runs,
// and an end-to-end through a running agent: fetched, served with Range, receipt over MQTT.

import t from 'tap'
import { request } from 'node:http'
import { cidFromSha256 } from '../../../agent/cache/cid.js'
import { createCacheExecutor } from '../../../agent/cache/cache-executor.js'
import { verifyServeReceipt, type ServedBody } from '../../../agent/cache/serve-receipts.js'
import { ContentStore } from '../../../agent/cache/store.js'
import type { TaskRunContext } from '../../../agent/task/executor-port.js'
import { startBroker } from '../../helpers/broker.js'
import { Consumer, startTestAgent, tmp, until } from '../../helpers/agent.js'
import { blob, sha256, startOrigin, type Origin } from './origin.js'

let origin: Origin
t.before(async () => {
  origin = await startOrigin()
})
t.teardown(() => origin.close())

const ctx = (): TaskRunContext & { seen: number[] } => {
  const seen: number[] = []
  return { signal: new AbortController().signal, deadline: Date.now() + 60_000, progress: f => seen.push(f), seen }
}

t.test('params: clear errors naming the field', async t => {
  const store = await ContentStore.open({ dir: tmp('cairn-cache-'), quotaBytes: 1 << 20, maxObjectBytes: 1 << 20, diskFree: () => 1e12 })
  t.teardown(() => store.close())
  const ex = createCacheExecutor({ store })
  const h = sha256('x')
  const bad: Array<[unknown, RegExp]> = [
    [{}, /\/objects/],
    [{ objects: [] }, /\/objects/],
    [{ objects: [{ origins: ['http://a/'] }] }, /objects\/0: give cid or sha256/],
    [{ objects: [{ sha256: h.toUpperCase(), origins: ['http://a/'] }] }, /\/objects\/0\/sha256/],
    [{ objects: [{ cid: 'bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi', origins: ['http://a/'] }] }, /objects\/0\/cid: expected/],
    [{ objects: [{ sha256: h, cid: cidFromSha256(sha256('y')), origins: ['http://a/'] }] }, /name different content/],
    [{ objects: [{ sha256: h, origins: ['ftp://a/'] }] }, /\/objects\/0\/origins\/0/],
    [{ objects: [{ sha256: h, origins: [] }] }, /\/objects\/0\/origins/],
    [{ objects: [{ sha256: h, origins: ['http://a/'], extra: 1 }] }, /\/objects\/0/],
    [{ objects: Array.from({ length: 65 }, () => ({ sha256: h, origins: ['http://a/'] })) }, /\/objects/],
    [
      {
        objects: [
          { sha256: h, origins: ['http://a/'] },
          { cid: cidFromSha256(h), origins: ['http://b/'] },
        ],
      },
      /listed twice/,
    ],
  ]
  for (const [params, msg] of bad) t.throws(() => ex.parse(params), { code: 'BAD_REQUEST', message: msg }, JSON.stringify(params).slice(0, 80))
  const p = ex.parse({ objects: [{ cid: cidFromSha256(h), origins: ['http://a/'], bytes: 1, pin: true }] })
  t.same(p.objects[0], { sha256: h, cid: cidFromSha256(h), origins: ['http://a/'], bytes: 1, pin: true })
  t.match(ex.admit(ex.parse({ objects: [{ sha256: h, origins: ['http://a/'], bytes: 2 << 20 }] })), { ok: false, code: 'TOO_LARGE' })
})

t.test('run: fetches, pins, reports hashes; a re-run finds the objects present', async t => {
  const store = await ContentStore.open({ dir: tmp('cairn-cache-'), quotaBytes: 1 << 24, maxObjectBytes: 1 << 22, diskFree: () => 1e12 })
  t.teardown(() => store.close())
  const ex = createCacheExecutor({ store })
  const [a, b] = [blob(10_000), blob(20_000)]
  const params = ex.parse({
    objects: [
      { sha256: sha256(a), origins: [origin.route('/ex-a', { kind: 'ok', body: a })], bytes: a.length, pin: true },
      { cid: cidFromSha256(sha256(b)), origins: [origin.route('/ex-bad', { kind: 'wrong', body: blob(20_000) }), origin.route('/ex-b', { kind: 'ok', body: b })] },
    ],
  })
  t.same(ex.admit(params), { ok: true })
  const c = ctx()
  const out = await ex.run(params, c)
  t.same(out.outputs, [
    { name: cidFromSha256(sha256(a)), sha256: sha256(a), bytes: a.length },
    { name: cidFromSha256(sha256(b)), sha256: sha256(b), bytes: b.length },
  ])
  t.same(
    out.inputs.map(i => i.name),
    [`${origin.url}/ex-a`, `${origin.url}/ex-b`],
    'inputs name the origin that delivered',
  )
  t.equal(out.resources.bytesFetched, 30_000)
  t.equal(out.backend, 'http')
  t.same(c.seen, [0, 0.5, 1])
  t.equal(store.stat(sha256(a))?.pinned, true)
  t.equal(store.stat(sha256(a))?.leases, 0, 'leases released after the task')
  const again = await ex.run(params, ctx())
  t.equal(again.resources.bytesFetched, 0, 're-run: nothing fetched')
  t.same(again.outputs, out.outputs, 're-run: the same outputs')
  t.equal(origin.hits.get('/ex-a'), 1)

  const bad = ex.parse({ objects: [{ sha256: sha256('nope'), origins: [origin.route('/ex-wrong', { kind: 'wrong', body: blob(10) })] }] })
  await t.rejects(ex.run(bad, ctx()), { code: 'CONTENT_MISMATCH', message: /ex-wrong: CONTENT_MISMATCH sha256 of the 10 bytes received/ })
})

function get(url: string, headers: Record<string, string>): Promise<{ status: number; body: Buffer }> {
  return new Promise((resolve, reject) => {
    request(url, { headers, agent: false }, res => {
      const chunks: Buffer[] = []
      res.on('data', c => chunks.push(c))
      res.on('end', () => resolve({ status: res.statusCode!, body: Buffer.concat(chunks) }))
    })
      .on('error', reject)
      .end()
  })
}

t.test('end to end through a running agent', async t => {
  const broker = await startBroker()
  t.teardown(() => broker.close())
  const a = await startTestAgent({ url: broker.url, values: { cache: { port: 0, receiptPeriodS: 3600 } } })
  t.teardown(() => a.stop())
  const device = a.agent.deviceId
  const c = await Consumer.connect(broker.url, `cairn/v1/test/${device}/cache/served`)
  t.teardown(() => c.close())
  const body = blob(50_000)
  const h = sha256(body)
  const ex = createCacheExecutor({ store: a.agent.cache.store })
  await ex.run(ex.parse({ objects: [{ sha256: h, origins: [origin.route('/e2e', { kind: 'ok', body })] }] }), ctx())
  const server = a.agent.cache.server!
  const r = await get(`${server.url}/c/${cidFromSha256(h)}`, { range: 'bytes=-100' })
  t.equal(r.status, 206)
  t.ok(r.body.equals(body.subarray(-100)), 'served with Range')
  await until(() => a.agent.cache.receipts!.current().totals.bytes === 100, 60_000, 'counted')
  a.agent.cache.receipts!.publish()
  const msg = await c.waitFor(m => m[0], 10_000, 'the receipt over MQTT')
  const env = verifyServeReceipt(msg.json, { fleet: 'test', device })
  t.same((env.body as ServedBody).objects, [{ sha256: h, bytes: 100, requests: 1, ranges: 1 }])
})
