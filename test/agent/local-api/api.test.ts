// The local API of a real agent on a real Mosquitto: transport, token, file modes, the
// hello, every read-only op, subscriptions to telemetry and events, bad frames, TCP
// mode, and the client library (reconnect and re-subscribe across an agent restart).

import t from 'tap'
import { existsSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { startBroker, freePort, type TestBroker } from '../../helpers/broker.js'
import { tmp, until } from '../../helpers/agent.js'
import { createLogger, LogRing } from '../../../protocol/log.js'
import { LocalBus } from '../../../agent/core/local-bus.js'
import { AgentState, GpioHost } from '../../../agent/device-ui/device-ui.js'
import { startLocalApi } from '../../../agent/local-api/api-server.js'
import { createCommandRunner } from '../../../hw/index.js'
import { LocalApiClient, LocalApiError, readTokenFile } from '../../../agent/local-api/api-client.js'
import { RawClient, requestErrors, resultErrors, startApiAgent, upgradeStatus } from './helpers.js'

let broker: TestBroker
t.before(async () => {
  broker = await startBroker()
})
t.teardown(async () => broker.close())

t.test('socket and token: file modes, 401 without the right token, 404 off /v1, TCP off by default', async t => {
  const a = await startApiAgent(broker.url)
  t.teardown(() => a.stop())
  t.equal(statSync(a.socket).mode & 0o777, 0o660, 'socket is 0660')
  t.equal(statSync(a.agent.localApi!.tokenFile).mode & 0o777, 0o640, 'token is 0640')
  t.match(a.token, /^[A-Za-z0-9_-]{43}$/, '32 random bytes, base64url')
  t.equal(readTokenFile(a.agent.localApi!.tokenFile), a.token)
  t.equal(a.agent.localApi!.port, undefined, 'no TCP listener unless localApi.port is set')
  t.equal((await upgradeStatus(a.socket, {})).status, 401, 'no Authorization header')
  t.equal((await upgradeStatus(a.socket, { authorization: 'Bearer nope' })).status, 401, 'wrong token')
  t.equal((await upgradeStatus(a.socket, { authorization: a.token })).status, 401, 'token without Bearer')
  t.equal((await upgradeStatus(a.socket, { authorization: `Bearer ${a.token}` }, '/v2')).status, 404, 'wrong path')
  t.equal((await upgradeStatus(a.socket, { authorization: `Bearer ${a.token}` })).status, 101, 'right token upgrades')
  const c = new LocalApiClient({ socketPath: a.socket, token: 'x'.repeat(43) })
  await t.rejects(c.connect(), { code: 'UNAUTHORIZED' }, 'the client reports UNAUTHORIZED')
  c.close()
  t.ok(
    a.logs.some(l => l.includes('missing or wrong token')),
    'refusal logged',
  )
})

t.test('hello, status, self-test, infer without a model runner, all as documented', async t => {
  const a = await startApiAgent(broker.url)
  t.teardown(() => a.stop())
  const c = await RawClient.open(a.socket, a.token)
  t.teardown(() => c.close())
  const hello = await c.waitFor(f => f.type === 'hello', 'hello')
  t.match(hello, { v: 1, type: 'hello', api: 1, device: a.agent.deviceId, fleet: 'test', version: '0.0.0-test' })
  await until(() => a.agent.link.connected, 10_000, 'broker connection')
  const status = await c.req('status')
  t.equal(status.ok, true)
  t.equal(resultErrors('status', status.data), null, 'status result matches the docs')
  t.match(status.data, { device: a.agent.deviceId, fleet: 'test', connected: true, state: 'online' })
  t.type((status.data as { outboxDepth: number }).outboxDepth, 'number')
  const self = await c.req('self-test')
  t.same(self.data, { ok: true, failures: [] }, 'self-test passes on a healthy agent')
  const inferArgs = { input: { tensor: { shape: [1, 2], dtype: 'float32', data: [0.5, 0.25] } } }
  t.equal(requestErrors({ v: 1, type: 'req', id: 'x', op: 'infer', args: inferArgs }), null, 'the infer request is documented')
  const infer = await c.req('infer', inferArgs)
  // tasks.types is ['cache'] here (helpers.ts): the real task queue refuses the type.
  t.equal((infer.error as { code: string } | undefined)?.code, 'UNSUPPORTED', 'no inference executor in this agent: UNSUPPORTED')
  t.match((infer.error as { message: string }).message, /no inference tasks/, "the task queue's own refusal, not the API's")
  const led = await c.req('led.set', { pattern: 'on' })
  t.equal((led.error as { code: string }).code, 'UNSUPPORTED', 'led.set without a configured LED')
  t.same(c.schemaProblems, [], 'every frame matched docs/schemas')
})

t.test("infer goes to the task queue's local runner with the executor's model shape", async t => {
  const dir = tmp('cairn-lapi-')
  const bus = new LocalBus()
  const calls: Array<{ type: string; params: unknown }> = []
  const log = createLogger({ level: 'fatal', ring: new LogRing(10), out: { write: () => true } })
  const api = await startLocalApi({
    config: { enabled: true, host: '127.0.0.1', port: 0, maxClients: 4, maxFrameBytes: 1 << 20, maxQueueBytes: 1 << 20 },
    stateDir: dir,
    log,
    host: {
      hello: { device: 'd', fleet: 'f', version: '1.0.0' },
      status: async () => ({ connected: false, board: 'generic', model: 'x', outboxDepth: 0 }),
      bus,
      state: new AgentState({ bus, connected: () => false, network: () => true, provisioningError: () => false }),
      gpio: new GpioHost({ hw: { root: '/nonexistent', run: createCommandRunner() }, driver: 'fake', log, reserved: new Map() }),
      led: () => undefined,
      selfTest: async () => ({ ok: true, failures: [] }),
      runLocal: async (type, params) => {
        calls.push({ type, params })
        return { taskId: 't1', result: { labels: [{ label: 'cat', score: 0.9 }] }, receipt: { sig: 'x' } }
      },
    },
  })
  t.teardown(() => api.close())
  const c = new LocalApiClient({ socketPath: api.socketPath!, token: readTokenFile(api.tokenFile) })
  t.teardown(() => c.close())
  await c.connect()
  const sha = 'ab'.repeat(32)
  const res = await c.request('infer', { model: sha, input: { image: { data: 'iVBORw0KGgo=' } }, topK: 3 })
  t.same(res, { taskId: 't1', result: { labels: [{ label: 'cat', score: 0.9 }] }, receipt: { sig: 'x' } })
  t.equal(resultErrors('infer', res), null)
  await c.request('infer', { input: { tensor: { shape: [2], dtype: 'float32', data: [1, 2] } } })
  t.same(calls, [
    { type: 'inference', params: { model: { sha256: sha }, input: { image: { data: 'iVBORw0KGgo=' } }, topK: 3 } },
    { type: 'inference', params: { model: 'demo', input: { tensor: { shape: [2], dtype: 'float32', data: [1, 2] } } } },
  ])
  await t.rejects(c.request('infer', { model: 'resnet', input: { image: { data: 'x' } } } as never), { code: 'BAD_REQUEST' }, 'model is demo or a sha256')
})

t.test('bad frames get clear errors and the connection keeps working', async t => {
  const a = await startApiAgent(broker.url)
  t.teardown(() => a.stop())
  const c = await RawClient.open(a.socket, a.token)
  t.teardown(() => c.close())
  await c.waitFor(f => f.type === 'hello', 'hello')
  const errorsBefore = () => c.frames.filter(f => f.type === 'error').length
  const expectError = async (send: () => void, code: string, what: string) => {
    const n = errorsBefore()
    send()
    await c.waitFor(() => c.frames.filter(f => f.type === 'error').length > n, what)
    t.equal((c.frames.filter(f => f.type === 'error').at(-1)!.error as { code: string }).code, code, what)
  }
  await expectError(() => c.sendRaw('{"v":1,"type":"req",'), 'BAD_JSON', 'truncated JSON')
  await expectError(() => c.sendRaw('hello there'), 'BAD_JSON', 'not JSON at all')
  await expectError(() => c.sendRaw(Buffer.from([1, 2, 3]), true), 'BAD_REQUEST', 'a binary frame')
  await expectError(() => c.sendRaw('[1,2]'), 'BAD_REQUEST', 'JSON that is not a request')
  await expectError(() => c.sendRaw(JSON.stringify({ v: 1, type: 'req', id: 'x'.repeat(65), op: 'status' })), 'BAD_REQUEST', 'id over 64 chars')
  const noV = await (async () => {
    c.sendRaw(JSON.stringify({ type: 'req', id: 'nov', op: 'status' }))
    return c.waitFor(f => f.id === 'nov', 'reply to a frame without v')
  })()
  t.equal((noV.error as { code: string }).code, 'BAD_REQUEST', 'a readable id gets a reply, even on a bad frame')
  const unknown = await c.req('reboot-the-world')
  t.equal((unknown.error as { code: string }).code, 'UNKNOWN_OP')
  const badArgs = await c.req('subscribe', { topics: ['weather'] })
  t.equal((badArgs.error as { code: string }).code, 'BAD_REQUEST')
  t.match((badArgs.error as { message: string }).message, /subscribe: \/topics\/0/, 'the message names the field')
  const extra = await c.req('status', { verbose: true })
  t.equal((extra.error as { code: string }).code, 'BAD_REQUEST', 'unknown args are refused')
  const pin = await c.req('gpio.open', { pin: 'seventeen', mode: 'out' })
  t.equal((pin.error as { code: string }).code, 'BAD_REQUEST')
  const ok = await c.req('status')
  t.equal(ok.ok, true, 'still served after all that')
  t.equal(c.closed, undefined, 'never disconnected')
  t.same(c.schemaProblems, [])
})

t.test('subscribe: telemetry samples and events, filtered by kind prefix', async t => {
  const a = await startApiAgent(broker.url, { telemetry: { periodS: 1 } })
  t.teardown(() => a.stop())
  const c = await RawClient.open(a.socket, a.token)
  t.teardown(() => c.close())
  await c.waitFor(f => f.type === 'hello', 'hello')
  const sub = await c.req('subscribe', { topics: ['telemetry', 'event'], kinds: ['demo.', 'button.'] })
  t.same(sub.data, { topics: ['telemetry', 'event'], kinds: ['demo.', 'button.'] })
  const tel = await c.waitFor(f => f.type === 'event' && f.topic === 'telemetry', 'a telemetry sample')
  t.type((tel.data as { memory?: { totalBytes: number } }).memory?.totalBytes, 'number', 'a real sample')
  a.agent.publishEvent('other.thing', { n: 1 })
  a.agent.publishEvent('demo.ping', { n: 2 })
  const ev = await c.waitFor(f => f.type === 'event' && f.topic === 'event', 'an event')
  t.same(ev.data, { kind: 'demo.ping', data: { n: 2 } }, 'only the kinds asked for')
  const unsub = await c.req('unsubscribe', { topics: ['telemetry'] })
  t.same(unsub.data, { topics: ['event'], kinds: ['demo.', 'button.'] })
  t.same(c.schemaProblems, [])
})

t.test('socket and token outside the state dir (localApi.socket, localApi.tokenFile)', async t => {
  const dir = tmp('cairn-lapi-')
  const a = await startApiAgent(broker.url, { localApi: { socket: join(dir, 'api.sock'), tokenFile: join(dir, 'api.token') } })
  t.teardown(() => a.stop())
  t.equal(a.socket, join(dir, 'api.sock'))
  t.equal(a.agent.localApi!.tokenFile, join(dir, 'api.token'))
  t.equal(statSync(join(dir, 'api.token')).mode & 0o777, 0o640)
  t.notOk(existsSync(join(a.stateDir, 'api.sock')), 'nothing in the state dir')
  const c = new LocalApiClient({ socketPath: a.socket, token: readTokenFile(join(dir, 'api.token')) })
  t.teardown(() => c.close())
  t.equal((await c.connect()).device, a.agent.deviceId)
  await a.stop()
  t.notOk(existsSync(join(dir, 'api.sock')), 'the socket is removed on stop')
})

t.test('TCP on 127.0.0.1 when localApi.port is set, same token rules', async t => {
  const port = await freePort()
  const a = await startApiAgent(broker.url, { localApi: { port } })
  t.teardown(() => a.stop())
  t.equal(a.agent.localApi!.port, port)
  await t.rejects(RawClient.open(`ws://127.0.0.1:${port}/v1`, 'wrong'), { message: 'HTTP 401' })
  const c = new LocalApiClient({ url: `ws://127.0.0.1:${port}`, token: a.token })
  t.teardown(() => c.close())
  const hello = await c.connect()
  t.equal(hello.device, a.agent.deviceId)
  const status = await c.request('status')
  t.equal(status.device, a.agent.deviceId)
})

t.test('client library: typed errors, reconnect after an agent restart, subscriptions come back', async t => {
  const a = await startApiAgent(broker.url)
  const stateDir = a.stateDir
  const events: Array<{ topic: string; data: unknown }> = []
  const seen: string[] = []
  const c = new LocalApiClient({ socketPath: a.socket, token: a.token, tokenFile: a.agent.localApi!.tokenFile, reconnect: true })
  t.teardown(() => c.close())
  c.on('event', (topic, data) => events.push({ topic, data }))
  c.on('connected', () => seen.push('connected'))
  c.on('disconnected', () => seen.push('disconnected'))
  c.on('error', () => undefined)
  await c.connect()
  await c.subscribe(['event'], ['demo.'])
  const err = await c.request('gpio.read', { pin: 5 }).catch(e => e as LocalApiError)
  t.type(err, LocalApiError)
  t.equal((err as LocalApiError).code, 'BAD_REQUEST', 'reply errors carry the code')
  await a.stop()
  await until(() => seen.includes('disconnected'), 10_000, 'disconnected event')
  await t.rejects(c.request('status'), { code: 'DISCONNECTED' }, 'requests fail fast while disconnected')
  const b = await startApiAgent(broker.url, {}, stateDir)
  t.teardown(() => b.stop())
  t.equal(b.token, a.token, 'the token survives a restart')
  await until(() => seen.filter(s => s === 'connected').length === 2, 15_000, 'reconnected')
  await until(
    async () => {
      b.agent.publishEvent('demo.after-restart', {})
      await new Promise(r => setTimeout(r, 100))
      return events.some(e => (e.data as { kind: string }).kind === 'demo.after-restart')
    },
    10_000,
    'an event after the restart, without subscribing again',
  )
  t.pass('re-subscribed by itself')
})
