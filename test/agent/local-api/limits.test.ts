// The local API under abuse, against a real agent on a real Mosquitto: oversized
// frames, clients that vanish mid-stream or mid-frame, a request flood, a client that
// stops reading, and more clients than allowed. The agent must keep serving throughout.

import t, { type Test } from 'tap'
import { connect } from 'node:net'
import { startBroker, type TestBroker } from '../../helpers/broker.js'
import { Consumer, sleep, until } from '../../helpers/agent.js'
import { LocalApiClient } from '../../../agent/local-api/api-client.js'
import { RawClient, startApiAgent, type ApiAgent } from './helpers.js'

let broker: TestBroker
t.before(async () => {
  broker = await startBroker()
})
t.teardown(async () => broker.close())

/** The agent still answers a fresh client and still publishes to the broker. */
async function stillServing(t: Test, a: ApiAgent): Promise<void> {
  const c = await RawClient.open(a.socket, a.token)
  const status = await c.req('status')
  t.equal(status.ok, true, 'a new client is served')
  c.close()
  const mq = await Consumer.connect(broker.url, `cairn/v1/test/${a.agent.deviceId}/event`)
  a.agent.publishEvent('demo.alive', {})
  await mq.waitFor(m => m.find(x => x.json?.kind === 'demo.alive'), 10_000, 'an event over MQTT')
  await mq.close()
  t.pass('the agent still publishes to the broker')
}

t.test('oversized frame: an error frame, then close 1009; frames under the limit are fine', async t => {
  const a = await startApiAgent(broker.url, { localApi: { maxFrameBytes: 65536 } })
  t.teardown(() => a.stop())
  const c = await RawClient.open(a.socket, a.token)
  t.teardown(() => c.close())
  await c.waitFor(f => f.type === 'hello', 'hello')
  const near = await c.req('infer', { input: { image: { data: 'A'.repeat(60_000) } } })
  // Answered by the op (UNSUPPORTED without an inference executor, BAD_INPUT with one), not by the frame limit.
  t.equal(near.type, 'res', 'a 60 kB frame is read and answered')
  t.not((near.error as { code: string } | undefined)?.code, 'TOO_LARGE')
  c.sendRaw(JSON.stringify({ v: 1, type: 'req', id: 'big', op: 'infer', args: { input: { image: { data: 'A'.repeat(70_000) } } } }))
  const closed = await c.waitClosed()
  t.equal(closed.code, 1009, 'closed with 1009 (message too big)')
  const err = c.frames.find(f => f.type === 'error')
  t.equal((err?.error as { code: string } | undefined)?.code, 'TOO_LARGE', 'told why before the close')
  t.same(c.schemaProblems, [])
  const lib = new LocalApiClient({ socketPath: a.socket, token: a.token })
  t.teardown(() => lib.close())
  await lib.connect()
  await t.rejects(lib.request('infer', { input: { image: { data: 'A'.repeat(70_000) } } }), { code: 'TOO_LARGE' }, 'the client library rejects with TOO_LARGE')
  await stillServing(t, a)
})

t.test('clients that vanish mid-stream, mid-request and mid-frame', async t => {
  const a = await startApiAgent(broker.url, { telemetry: { periodS: 1 } })
  t.teardown(() => a.stop())
  for (let i = 0; i < 5; i++) {
    const c = await RawClient.open(a.socket, a.token)
    await c.req('subscribe', { topics: ['telemetry', 'event', 'status'] })
    c.sendRaw(JSON.stringify({ v: 1, type: 'req', id: 'st', op: 'self-test' }))
    for (let k = 0; k < 20; k++) a.agent.publishEvent('demo.stream', { k, pad: 'x'.repeat(2000) })
    c.close() // TCP-level destroy, no close handshake, a request still running
  }
  // Half a frame header, then gone.
  const half = await RawClient.open(a.socket, a.token)
  ;(half.ws as unknown as { _socket: { write(b: Buffer): void; destroy(): void } })._socket.write(Buffer.from([0x81, 0xfe, 0x10]))
  ;(half.ws as unknown as { _socket: { destroy(): void } })._socket.destroy()
  // Half an upgrade request, then gone.
  await new Promise<void>(resolve => {
    const s = connect(a.socket, () => {
      s.write('GET /v1 HTTP/1.1\r\nUpgrade: websocket\r\nAuthor')
      s.destroy()
      resolve()
    })
  })
  await until(() => a.agent.localApi!.clientCount === 0, 10_000, 'every vanished client forgotten')
  await stillServing(t, a)
})

t.test('a flood of requests on one connection: every one answered, ok or UNAVAILABLE', async t => {
  const a = await startApiAgent(broker.url)
  t.teardown(() => a.stop())
  const c = await RawClient.open(a.socket, a.token)
  t.teardown(() => c.close())
  await c.waitFor(f => f.type === 'hello', 'hello')
  const n = 2000
  for (let i = 0; i < n; i++) c.sendRaw(JSON.stringify({ v: 1, type: 'req', id: `f${i}`, op: i % 2 ? 'status' : 'gpio.read', args: i % 2 ? undefined : { pin: 4 } }))
  await until(() => c.frames.filter(f => f.type === 'res').length === n, 30_000, `${n} replies`)
  const codes = new Map<string, number>()
  for (const f of c.frames.filter(f => f.type === 'res')) {
    const code = f.ok === true ? 'ok' : (f.error as { code: string }).code
    codes.set(code, (codes.get(code) ?? 0) + 1)
  }
  t.comment(`replies: ${JSON.stringify(Object.fromEntries(codes))}`)
  t.ok((codes.get('ok') ?? 0) > 0, 'some status requests answered ok')
  t.same(
    [...codes.keys()].filter(k => !['ok', 'UNAVAILABLE', 'BAD_REQUEST'].includes(k)),
    [],
    'nothing but ok, UNAVAILABLE (in-flight cap) and BAD_REQUEST (pin not open)',
  )
  t.ok((codes.get('ok') ?? 0) + (codes.get('BAD_REQUEST') ?? 0) > n / 2, 'back-pressure, not refusal, handles most of a flood')
  t.equal(new Set(c.frames.filter(f => f.type === 'res').map(f => f.id)).size, n, 'each id answered once')
  t.same(c.schemaProblems, [])
  await stillServing(t, a)
})

t.test('a client that stops reading loses telemetry and events, then is closed (1008); others are unaffected', async t => {
  const a = await startApiAgent(broker.url, { localApi: { maxQueueBytes: 65536 } })
  t.teardown(() => a.stop())
  const slow = await RawClient.open(a.socket, a.token)
  t.teardown(() => slow.close())
  await slow.req('subscribe', { topics: ['event', 'telemetry'] })
  const good = await RawClient.open(a.socket, a.token)
  t.teardown(() => good.close())
  await good.req('subscribe', { topics: ['event'], kinds: ['demo.'] })
  slow.ws.pause() // reads nothing from now on
  const total = 150
  for (let k = 0; k < total; k++) {
    a.agent.publishEvent('demo.big', { k, pad: 'x'.repeat(20_000) })
    await sleep(5) // let the reading client keep up, as a real one would
  }
  await until(() => a.agent.localApi!.clientCount === 1, 15_000, 'the slow client closed')
  t.ok(
    a.logs.some(l => l.includes('does not read; closing it')),
    'closing logged',
  )
  await until(() => good.frames.filter(f => f.topic === 'event').length === total, 15_000, 'every event at the reading client')
  t.equal(good.closed, undefined, 'the reading client stays connected')
  slow.ws.resume()
  const closed = await slow.waitClosed()
  t.ok([1008, 1006].includes(closed.code), `slow client closed (${closed.code})`)
  t.ok(slow.frames.filter(f => f.topic === 'event').length < total, `the slow client got only ${slow.frames.filter(f => f.topic === 'event').length} of ${total} events`)
  await stillServing(t, a)
})

t.test('at most localApi.maxClients connections; a slot frees when one leaves', async t => {
  const a = await startApiAgent(broker.url, { localApi: { maxClients: 2 } })
  t.teardown(() => a.stop())
  const c1 = await RawClient.open(a.socket, a.token)
  const c2 = await RawClient.open(a.socket, a.token)
  t.teardown(() => c2.close())
  await t.rejects(RawClient.open(a.socket, a.token), { message: 'HTTP 503' }, 'the third is refused with 503')
  const lib = new LocalApiClient({ socketPath: a.socket, token: a.token })
  await t.rejects(lib.connect(), { code: 'UNAVAILABLE' }, 'the client library says UNAVAILABLE')
  lib.close()
  c1.close()
  await until(() => a.agent.localApi!.clientCount === 1, 10_000, 'first client gone')
  const c3 = await RawClient.open(a.socket, a.token)
  t.teardown(() => c3.close())
  t.equal((await c3.req('status')).ok, true, 'a new client takes the free slot')
})
