// The agent against a real Mosquitto broker: presence, telemetry, signed commands and
// their replies in MQTT 5 and 3.1.1, trust changes, remote config, persistent sessions.

import t from 'tap'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { startBroker, type TestBroker } from '../helpers/broker.js'
import { Consumer, operatorKey, sleep, startTestAgent, tmp, until, type TestAgent } from '../helpers/agent.js'
import { schemaErrors } from '../helpers/schemas.js'
import { openReply } from '../helpers/replies.js'
import { sendCommand, signCommand } from '../../fleet/command-client.js'
import type { Json } from '../../protocol/canonical.js'
import type { KeyPair } from '../../protocol/keys.js'
import type { ReplyMessage } from '../../protocol/reply.js'

let broker: TestBroker
t.before(async () => {
  broker = await startBroker()
})
t.teardown(async () => broker.close())

const cmd = async (a: TestAgent, key: KeyPair, name: string, body: Json = {}, opts: { version?: 4 | 5; ttlMs?: number; fleet?: string } = {}): Promise<ReplyMessage> => {
  const env = signCommand({ fleet: opts.fleet ?? 'test', device: a.agent.deviceId, name, body, key, ttlMs: opts.ttlMs ?? 60_000 })
  return (await sendCommand(env, { url: broker.url, mqttVersion: opts.version ?? (broker.mqtt5 ? 5 : 4), timeoutMs: 8000 }))!
}

t.test('presence and telemetry: retained online status, telemetry, valid against the docs schemas', async t => {
  const dir = tmp()
  const op = operatorKey(dir)
  const a = await startTestAgent({ url: broker.url, operatorKeys: [op.pub], values: { telemetry: { periodS: 1 } }, mqttVersion: broker.mqtt5 ? 5 : 4 })
  t.teardown(() => a.stop())
  const c = await Consumer.connect(broker.url, `cairn/v1/test/${a.agent.deviceId}/#`, { protocolVersion: broker.mqtt5 ? 5 : 4 })
  t.teardown(() => c.close())
  const status = await c.waitFor(m => m.find(x => x.topic.endsWith('/status') && x.json?.state === 'online'), 10_000, 'online status')
  t.equal(status.json?.device, a.agent.deviceId)
  t.equal(schemaErrors('status', status.json), null, 'status matches docs/schemas/status.json')
  const tel = await c.waitFor(m => m.filter(x => x.topic.endsWith('/telemetry')).length >= 2 && m.filter(x => x.topic.endsWith('/telemetry')), 10_000, 'two telemetry samples')
  for (const m of tel) t.equal(schemaErrors('telemetry', m.json), null, 'telemetry matches docs/schemas/telemetry.json')
  t.ok(
    tel.every(m => typeof (m.json?.outbox as { queued?: unknown } | undefined)?.queued === 'number'),
    'each sample carries the outbox backlog (outbox), validated with the rest',
  )
  t.ok(
    tel.every(m => m.json !== undefined && !('io' in m.json)),
    'no status LED, no button, no GPIO client: no io',
  )
  const second = tel[1]!.json as { sample: { cpu?: { percent?: number }; memory?: { totalBytes: number } } }
  t.ok(second.sample.memory!.totalBytes > 0, 'real memory numbers')
  t.type(second.sample.cpu?.percent, 'number', 'cpu percent from /proc/stat deltas')
  const ev = await c.waitFor(m => m.find(x => x.topic.endsWith('/event') && x.json?.kind === 'agent.started'), 5000, 'agent.started')
  t.equal(schemaErrors('event', ev.json), null)
  // A late subscriber sees the retained status at once.
  const late = await Consumer.connect(broker.url, `cairn/v1/test/${a.agent.deviceId}/status`, { protocolVersion: broker.mqtt5 ? 5 : 4 })
  t.teardown(() => late.close())
  const retained = await late.waitFor(m => m[0], 5000, 'retained status')
  t.equal(retained.retain, true)
  t.equal(retained.json?.state, 'online')
  // A clean stop publishes offline (reason shutdown).
  await a.stop()
  const off = await c.waitFor(m => m.find(x => x.topic.endsWith('/status') && x.json?.state === 'offline'), 5000, 'offline status')
  t.equal(off.json?.reason, 'shutdown')
  t.type(status.json?.conn, 'number', 'the online status names its connection (conn)')
  t.equal(off.json?.conn, status.json?.conn, 'the offline status of the same connection carries the same conn, so a consumer orders it after the online one')
})

for (const version of [5, 4] as const) {
  t.test(`signed commands with MQTT ${version === 5 ? '5 (response topic, correlation data)' : '3.1.1 (reply topic, request id)'}`, async t => {
    if (version === 5 && !broker.mqtt5) {
      t.comment('SKIPPED: MQTT 5 needs mosquitto; the aedes fallback speaks 3.1.1 only')
      return
    }
    const dir = tmp()
    const op = operatorKey(dir)
    const a = await startTestAgent({ url: broker.url, operatorKeys: [op.pub], mqttVersion: version })
    t.teardown(() => a.stop())
    const ping = await cmd(a, op, 'ping', {}, { version })
    t.equal(ping.status, 'ok')
    const { id: cmdId, ...rest } = ping
    t.equal(schemaErrors('reply', { cmd: cmdId, ...rest }), null, 'the reply body matches docs/schemas/reply.json')
    t.equal((ping as { data: { pong: boolean } }).data.pong, true)
    const logs = await cmd(a, op, 'logs', { lines: 5 }, { version })
    t.equal(logs.status, 'ok')
    t.ok((logs as { data: { lines: string[] } }).data.lines.length > 0)
    const unknown = await cmd(a, op, 'self-destruct', {}, { version })
    t.same(unknown.status === 'error' && unknown.error.code, 'UNKNOWN_COMMAND')
    const badBody = await cmd(a, op, 'logs', { lines: 'all' }, { version })
    t.same(badBody.status === 'error' && badBody.error.code, 'BAD_REQUEST')
    const reboot = await cmd(a, op, 'reboot', {}, { version })
    t.equal(reboot.status, 'ok')
    await until(() => a.reboots === 1, 5000, 'reboot through the system port')
  })
}

t.test('refusals: unsigned, forged, untrusted, other fleet, expired, replayed, oversized, junk', async t => {
  const dir = tmp()
  const op = operatorKey(dir)
  const stranger = operatorKey(dir, 'stranger')
  const a = await startTestAgent({ url: broker.url, operatorKeys: [op.pub], mqttVersion: 4 })
  t.teardown(() => a.stop())
  const id = a.agent.deviceId
  const c = await Consumer.connect(broker.url, `cairn/v1/test/${id}/reply`, { protocolVersion: 4 })
  t.teardown(() => c.close())
  const pub = (name: string, payload: string | Buffer) => c.client.publishAsync(`cairn/v1/test/${id}/cmd/${name}`, payload, { qos: 1 })
  const codeFor = async (reqId: string | null, n: number) => {
    const r = await c.waitFor(m => m.filter(x => x.json).length >= n && m.filter(x => x.json)[n - 1], 5000, `reply ${n}`)
    const reply = openReply(r.json, id)
    t.ok(reply, 'a reply signed by the device, even to junk')
    t.equal(schemaErrors('envelope', r.json), null)
    t.equal(schemaErrors('reply', reply?.body), null)
    if (reqId !== null) t.equal(reply?.id, reqId)
    return reply?.error?.code ?? null
  }
  const good = signCommand({ fleet: 'test', device: id, name: 'ping', body: {}, key: op, ttlMs: 60_000 })
  let n = 0
  await pub('ping', JSON.stringify({ ...good, sig: good.sig.replace(/^./, good.sig[0] === 'A' ? 'B' : 'A') }))
  t.equal(await codeFor(good.id, ++n), 'BAD_SIGNATURE')
  const bySranger = signCommand({ fleet: 'test', device: id, name: 'ping', body: {}, key: stranger, ttlMs: 60_000 })
  await pub('ping', JSON.stringify(bySranger))
  t.equal(await codeFor(bySranger.id, ++n), 'UNTRUSTED_KEY')
  const otherFleet = signCommand({ fleet: 'other', device: id, name: 'ping', body: {}, key: op, ttlMs: 60_000 })
  await pub('ping', JSON.stringify(otherFleet))
  t.equal(await codeFor(otherFleet.id, ++n), 'WRONG_TARGET')
  const expired = signCommand({ fleet: 'test', device: id, name: 'ping', body: {}, key: op, ttlMs: 1000, now: Date.now() - 10_000 })
  await pub('ping', JSON.stringify(expired))
  t.equal(await codeFor(expired.id, ++n), 'EXPIRED')
  const wrongTopic = signCommand({ fleet: 'test', device: id, name: 'ping', body: {}, key: op, ttlMs: 60_000 })
  await pub('reboot', JSON.stringify(wrongTopic))
  t.equal(await codeFor(wrongTopic.id, ++n), 'BAD_REQUEST', 'a ping envelope on cmd/reboot is refused')
  await pub('ping', JSON.stringify(good))
  t.equal(await codeFor(good.id, ++n), null, 'the genuine command works once')
  await pub('ping', JSON.stringify(good))
  t.equal(await codeFor(good.id, ++n), 'REPLAY', 'and is refused the second time')
  await pub('ping', Buffer.alloc(70_000, 0x7b))
  t.equal(await codeFor(null, ++n), 'TOO_LARGE')
  await pub('ping', 'not json')
  t.equal(await codeFor(null, ++n), 'BAD_JSON')
  await pub('ping', '{"v":1,"type":"cmd.ping","id":"12345678"}')
  t.equal(await codeFor('12345678', ++n), 'BAD_REQUEST')
  await pub('ping', '[1,2,3]')
  t.equal(await codeFor(null, ++n), 'BAD_REQUEST')
  const ok = await cmd(a, op, 'ping', {}, { version: 4 })
  t.equal(ok.status, 'ok', 'the agent keeps working')
  t.equal(a.agent.metrics.get('cairn_commands_total', { result: 'REPLAY' }), 1)
})

t.test('the replay store and trust changes survive a restart', async t => {
  const dir = tmp()
  const op = operatorKey(dir)
  const op2 = operatorKey(dir, 'op2')
  const stateDir = tmp()
  const opts = { url: broker.url, operatorKeys: [op.pub], mqttVersion: 4 as const, stateDir }
  let a = await startTestAgent(opts)
  const id = a.agent.deviceId
  const env = signCommand({ fleet: 'test', device: id, name: 'ping', body: {}, key: op, ttlMs: 600_000 })
  const first = await sendCommand(env, { url: broker.url, mqttVersion: 4, timeoutMs: 8000 })
  t.equal(first?.status, 'ok')
  // Trust op2, then let op2 revoke op (a configured key).
  t.equal((await cmd(a, op, 'operator-add', { publicKey: readFileSync(op2.pub, 'utf8') })).status, 'ok')
  const revoke = await cmd(a, op2, 'operator-revoke', { keyId: op.keyId })
  t.equal(revoke.status, 'ok')
  const afterRevoke = await cmd(a, op, 'ping')
  t.same(afterRevoke.status === 'error' && afterRevoke.error.code, 'UNTRUSTED_KEY', 'revocation takes effect at once')
  const last = await cmd(a, op2, 'operator-revoke', { keyId: op2.keyId })
  t.same(last.status === 'error' && last.error.code, 'LAST_OPERATOR_KEY')
  await a.stop()
  a = await startTestAgent(opts)
  t.teardown(() => a.stop())
  t.equal(a.agent.deviceId, id, 'same identity')
  const replay = await sendCommand(env, { url: broker.url, mqttVersion: 4, timeoutMs: 8000 })
  t.same(replay?.status === 'error' && replay.error.code, 'UNTRUSTED_KEY', 'the configured key stays revoked after restart')
  const list = await cmd(a, op2, 'operator-list')
  t.same(
    (list as { data: { keys: Array<{ keyId: string }> } }).data.keys.map(k => k.keyId),
    [op2.keyId],
  )
  await cmd(a, op2, 'operator-add', { publicKey: op.keyId })
  const replay2 = await sendCommand(env, { url: broker.url, mqttVersion: 4, timeoutMs: 8000 })
  t.same(replay2?.status === 'error' && replay2.error.code, 'REPLAY', 're-trusted, the old command is still a replay')
})

t.test('set-config and get-config: validated, persisted, applied live, secrets redacted', async t => {
  const dir = tmp()
  const op = operatorKey(dir)
  const a = await startTestAgent({ url: broker.url, operatorKeys: [op.pub], mqttVersion: 4, values: { broker: { url: broker.url, mqttVersion: 4, username: 'dev', password: 'hunter2' } } })
  t.teardown(() => a.stop())
  const set = await cmd(a, op, 'set-config', { telemetry: { periodS: 2 }, log: { level: 'warn' } })
  t.equal(set.status, 'ok')
  const setData = (set as { data: { applied: string[]; shadowed: string[] } }).data
  t.same(setData.applied, ['telemetry.periodS'])
  t.match(setData.shadowed, [/^log\.level \(overridden by test\)$/], 'a value the flags set still wins, and the reply says so')
  const remote = JSON.parse(readFileSync(join(a.stateDir, 'config.remote.json'), 'utf8'))
  t.same(remote, { telemetry: { periodS: 2 }, log: { level: 'warn' } }, 'persisted in the state dir')
  const get = await cmd(a, op, 'get-config')
  const data = (get as { data: { config: { telemetry: { periodS: number }; broker: { password: string } }; sources: Record<string, string> } }).data
  t.equal(data.config.telemetry.periodS, 2)
  t.match(data.sources['telemetry.periodS'], /^remote/)
  t.equal(data.config.broker.password, '(redacted)')
  const bad = await cmd(a, op, 'set-config', { telemetry: { periodS: 0 } })
  t.match(bad.status === 'error' && bad.error, { code: 'INVALID_CONFIG', message: /telemetry\.periodS/ })
  t.same(JSON.parse(readFileSync(join(a.stateDir, 'config.remote.json'), 'utf8')), remote, 'a refused change writes nothing')
  const broker2 = await cmd(a, op, 'set-config', { broker: { url: 'mqtt://evil' } } as unknown as Json)
  t.same(broker2.status === 'error' && broker2.error.code, 'BAD_REQUEST', 'broker settings cannot be changed remotely')
})

t.test('commands sent while the device is offline are delivered when it returns, unless expired', async t => {
  if (!broker.mqtt5) t.comment('NOTE: aedes keeps sessions in memory; this still works while it runs')
  const dir = tmp()
  const op = operatorKey(dir)
  const stateDir = tmp()
  const opts = { url: broker.url, operatorKeys: [op.pub], mqttVersion: (broker.mqtt5 ? 5 : 4) as 4 | 5, stateDir }
  let a = await startTestAgent(opts)
  const id = a.agent.deviceId
  await until(() => a.agent.link.connected, 5000, 'first connection (it makes the persistent subscription)')
  await a.stop()
  const c = await Consumer.connect(broker.url, `cairn/v1/test/${id}/reply`, { protocolVersion: 4 })
  t.teardown(() => c.close())
  const live = signCommand({ fleet: 'test', device: id, name: 'ping', body: {}, key: op, ttlMs: 600_000 })
  const short = signCommand({ fleet: 'test', device: id, name: 'ping', body: {}, key: op, ttlMs: 1500 })
  await c.client.publishAsync(`cairn/v1/test/${id}/cmd/ping`, JSON.stringify(live), { qos: 1 })
  await c.client.publishAsync(`cairn/v1/test/${id}/cmd/ping`, JSON.stringify(short), { qos: 1 })
  await sleep(2000)
  a = await startTestAgent(opts)
  t.teardown(() => a.stop())
  const r1 = await c.waitFor(m => m.map(x => openReply(x.json, id)).find(r => r?.id === live.id), 10_000, 'reply to the queued command')
  t.equal(r1.status, 'ok')
  const r2 = await c.waitFor(m => m.map(x => openReply(x.json, id)).find(r => r?.id === short.id), 10_000, 'refusal of the expired one')
  t.same(r2.error?.code, 'EXPIRED')
})

t.test('health endpoints on 127.0.0.1', async t => {
  const a = await startTestAgent({ url: broker.url, mqttVersion: 4 })
  t.teardown(() => a.stop())
  await until(() => a.agent.link.connected, 5000, 'connected')
  const port = a.agent.healthPort!
  const hz = await fetch(`http://127.0.0.1:${port}/healthz`)
  t.equal(hz.status, 200)
  t.match(await hz.json(), { ok: true, connected: true, device: a.agent.deviceId })
  await sleep(1100)
  const metrics = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text()
  t.match(metrics, /# TYPE cairn_outbox_depth gauge\ncairn_outbox_depth \d+/)
  t.match(metrics, /cairn_mqtt_connected 1/)
  t.match(metrics, /cairn_memory_used_percent \d/)
  t.equal((await fetch(`http://127.0.0.1:${port}/nope`)).status, 404)
})

t.test('an unsigned response topic cannot aim replies at other devices’ topics', async t => {
  if (!broker.mqtt5) {
    t.comment('SKIPPED: response topics need MQTT 5 (mosquitto); the aedes fallback speaks 3.1.1 only')
    return
  }
  const dir = tmp()
  const op = operatorKey(dir)
  const a = await startTestAgent({ url: broker.url, operatorKeys: [op.pub], mqttVersion: 5 })
  t.teardown(() => a.stop())
  await until(() => a.agent.link.connected, 5000, 'connected')
  const id = a.agent.deviceId
  const c = await Consumer.connect(broker.url, 'cairn/v1/test/#', { protocolVersion: 5 })
  t.teardown(() => c.close())
  const victim = 'cairn/v1/test/someoneelse/telemetry'
  const env = signCommand({ fleet: 'test', device: id, name: 'ping', body: {}, key: op, ttlMs: 60_000 })
  await c.client.publishAsync(`cairn/v1/test/${id}/cmd/ping`, JSON.stringify(env), { qos: 1, properties: { responseTopic: victim, correlationData: Buffer.from('x') } })
  const reply = await c.waitFor(m => m.find(x => openReply(x.json, id)?.id === env.id && openReply(x.json, id)?.status === 'ok'), 5000, 'the reply')
  t.equal(reply.topic, `cairn/v1/test/${id}/reply`, 'the reply goes to the device’s own reply topic')
  t.equal(c.messages.filter(m => m.topic === victim).length, 0)
})
