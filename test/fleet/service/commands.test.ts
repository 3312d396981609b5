// Commands through the fleet service, in both MQTT versions, against a real Mosquitto
// and a real agent: a command signed by the operator (here with the CLI's signer; the
// browser's signer is tested in test/fleet/console/) is checked, logged, published and
// answered; the audit log keeps the device's signed reply. Refused: every way a command
// can be wrong (each a 4xx with the protocol's code, nothing published), a replay, a key
// the service does not send for, and a forged reply, which is counted beside the
// command and changes nothing.

import t, { type Test } from 'tap'
import mqtt from 'mqtt'
import { signCommand } from '../../../fleet/command-client.js'
import { generateKeyPair } from '../../../protocol/keys.js'
import { readReply, signReply } from '../../../protocol/reply.js'
import { startBroker, type TestBroker } from '../../helpers/broker.js'
import { operatorKey, startTestAgent, tmp, until } from '../../helpers/agent.js'
import { MQTT_VERSIONS } from '../../helpers/mqtt-versions.js'
import { startTestService } from '../../helpers/fleet-service.js'

let broker: TestBroker
t.before(async () => {
  broker = await startBroker()
})
t.teardown(async () => broker.close())

const service = (t: Test, fleet: string, mqttVersion: 4 | 5, operatorKeys?: string[]) =>
  startTestService(t, { broker, fleet, mqttVersion, ...(operatorKeys ? { operatorKeys } : {}) }).then(({ svc, base }) => ({ svc, url: base }))

type Body = Record<string, unknown> & { error?: { code: string; message: string } }
async function call(url: string, method: string, path: string, body?: unknown, raw?: string): Promise<{ status: number; body: Body }> {
  const res = await fetch(`${url}${path}`, {
    method,
    ...(body !== undefined || raw !== undefined ? { headers: { 'content-type': 'application/json' }, body: raw ?? JSON.stringify(body) } : {}),
  })
  return { status: res.status, body: (await res.json()) as Body }
}

for (const { mqttVersion, label } of MQTT_VERSIONS) {
  t.test(`${label}: a signed command through the service, answered by a real agent; the audit log`, async t => {
    if (mqttVersion === 5 && !broker.mqtt5) return t.comment('SKIPPED: MQTT 5 needs mosquitto; the aedes fallback speaks 3.1.1 only')
    const fleet = `cmd${mqttVersion}`
    const op = operatorKey(tmp())
    const { url } = await service(t, fleet, mqttVersion)
    const agent = await startTestAgent({ url: broker.url, fleet, mqttVersion, operatorKeys: [op.pub] })
    t.teardown(() => agent.stop())
    const device = agent.agent.deviceId
    await until(async () => (await call(url, 'GET', `/api/v1/devices/${device}`)).body.state === 'online', 30_000, 'the agent online in the service')

    const ping = signCommand({ fleet, device, name: 'ping', body: {}, key: op, ttlMs: 60_000 })
    const sent = await call(url, 'POST', `/api/v1/devices/${device}/commands`, ping)
    t.equal(sent.status, 202, 'accepted')
    t.match(sent.body, { id: ping.id, device, name: 'ping', operator: op.keyId, by: 'loopback', state: 'sent', result: null }, 'logged as sent')
    await until(async () => (await call(url, 'GET', `/api/v1/commands/${ping.id}`)).body.state === 'ok', 30_000, 'the reply')
    const done = (await call(url, 'GET', `/api/v1/commands/${ping.id}`)).body
    t.match(done, { state: 'ok', result: { pong: true }, repliedAt: Number, refused: 0 }, 'answered: pong')
    t.same(JSON.parse(done.envelope as string), ping, 'the signed command as published')
    const reread = readReply(Buffer.from(done.replyEnvelope as string), { fleet, device, operator: op.keyId, cmd: ping.id, now: Date.now(), skewMs: 0, maxBytes: 1 << 20 })
    t.ok(reread.ok, 'the stored reply verifies again, offline, with the device key')

    // a key this device does not trust: the service sends it (none pinned), the device
    // answers with a signed refusal, and the log says so
    const stranger = generateKeyPair()
    const foreign = signCommand({ fleet, device, name: 'ping', body: {}, key: stranger, ttlMs: 60_000 })
    t.equal((await call(url, 'POST', `/api/v1/devices/${device}/commands`, foreign)).status, 202)
    await until(async () => (await call(url, 'GET', `/api/v1/commands/${foreign.id}`)).body.state === 'error', 30_000, 'the refusal')
    t.match((await call(url, 'GET', `/api/v1/commands/${foreign.id}`)).body, { state: 'error', result: { code: 'UNTRUSTED_KEY' } }, 'the device refused an operator it does not trust')

    // a forged reply (signed, but not by the device) to the answered ping: counted, changes nothing
    const forger = await mqtt.connectAsync(broker.url, { protocolVersion: mqttVersion })
    t.teardown(() => forger.endAsync(true))
    const forged = signReply(generateKeyPair(), { id: ping.id, status: 'ok', data: { pong: 'forged' } }, { fleet, to: op.keyId, now: Date.now() })
    await forger.publishAsync(`cairn/v1/${fleet}/${device}/reply`, JSON.stringify(forged), { qos: 1 })
    await until(async () => (await call(url, 'GET', `/api/v1/commands/${ping.id}`)).body.refused === 1, 30_000, 'the forgery counted')
    t.match((await call(url, 'GET', `/api/v1/commands/${ping.id}`)).body, { state: 'ok', result: { pong: true }, refused: 1, refusedWhy: /^UNTRUSTED_KEY/ }, 'the genuine answer stands')

    const audit = (await call(url, 'GET', `/api/v1/devices/${device}/commands`)).body.items as Array<{ id: string }>
    t.same(
      audit.map(c => c.id),
      [foreign.id, ping.id],
      "the device's audit log, newest first",
    )
    t.same(
      ((await call(url, 'GET', '/api/v1/commands?limit=1')).body.items as Array<{ id: string }>).map(c => c.id),
      [foreign.id],
      "the fleet's, paged",
    )
    const older = (await call(url, 'GET', `/api/v1/commands?before=${(audit[0] as unknown as { sentAt: number }).sentAt}`)).body.items as Array<{ id: string }>
    t.ok(
      older.every(c => c.id !== foreign.id),
      'before= pages back',
    )
  })
}

t.test('commands: every way one can be wrong is a 4xx with its code, and nothing is sent', async t => {
  const fleet = 'cmdbad'
  const mqttVersion = broker.mqtt5 ? 5 : 4
  const op = operatorKey(tmp())
  const other = generateKeyPair()
  // this service sends only for `op`
  const { url } = await service(t, fleet, mqttVersion, [op.keyId])
  const agent = await startTestAgent({ url: broker.url, fleet, mqttVersion, operatorKeys: [op.pub] })
  t.teardown(() => agent.stop())
  const device = agent.agent.deviceId
  await until(async () => (await call(url, 'GET', `/api/v1/devices/${device}`)).body.state === 'online', 30_000, 'the agent online in the service')
  // what reaches the device's command topics
  const watcher = await mqtt.connectAsync(broker.url, { protocolVersion: mqttVersion })
  t.teardown(() => watcher.endAsync(true))
  const published: string[] = []
  watcher.on('message', (_t, p) => published.push(p.toString()))
  await watcher.subscribeAsync(`cairn/v1/${fleet}/+/cmd/+`, { qos: 1 })

  const good = () => signCommand({ fleet, device, name: 'ping', body: {}, key: op, ttlMs: 60_000 })
  const post = (body: unknown, dev = device, raw?: string) => call(url, 'POST', `/api/v1/devices/${dev}/commands`, body, raw)
  const cases: Array<[string, Promise<{ status: number; body: Body }>, number, string]> = [
    ['malformed JSON', post(undefined, device, '{"v":1,'), 400, 'BAD_REQUEST'],
    ['not an object', post(undefined, device, '[1,2]'), 400, 'BAD_REQUEST'],
    ['no signature', post({ ...good(), sig: undefined }), 400, 'BAD_REQUEST'],
    ['an unknown field', post({ ...good(), extra: 1 }), 400, 'BAD_REQUEST'],
    ['a changed body', post({ ...good(), body: { lines: 5 } }), 400, 'BAD_SIGNATURE'],
    ['not a command type', post({ ...good(), type: 'reply' }), 400, 'BAD_REQUEST'],
    ['another fleet', post(signCommand({ fleet: 'elsewhere', device, name: 'ping', body: {}, key: op, ttlMs: 60_000 })), 400, 'WRONG_TARGET'],
    ['another device', post(good(), 'a'.repeat(52)), 400, 'WRONG_TARGET'],
    ['expired', post(signCommand({ fleet, device, name: 'ping', body: {}, key: op, ttlMs: 1000, now: Date.now() - 10 * 60_000 })), 400, 'EXPIRED'],
    ['lives too long', post(signCommand({ fleet, device, name: 'ping', body: {}, key: op, ttlMs: 2 * 86_400_000 })), 400, 'TTL_TOO_LONG'],
    ['a key this service does not send for', post(signCommand({ fleet, device, name: 'ping', body: {}, key: other, ttlMs: 60_000 })), 403, 'UNTRUSTED_KEY'],
    ['a device it does not know', post(signCommand({ fleet, device: 'b'.repeat(52), name: 'ping', body: {}, key: op, ttlMs: 60_000 }), 'b'.repeat(52)), 404, 'NOT_FOUND'],
    ['a device id that is no id', post(good(), 'NOT-AN-ID'), 400, 'BAD_REQUEST'],
    [
      'text, not JSON',
      fetch(`${url}/api/v1/devices/${device}/commands`, { method: 'POST', headers: { 'content-type': 'text/plain' }, body: 'hi' }).then(async r => ({
        status: r.status,
        body: (await r.json()) as Body,
      })),
      415,
      'UNSUPPORTED_MEDIA_TYPE',
    ],
    ['too large', post({ ...good(), body: { pad: 'x'.repeat(70_000) } }), 413, 'TOO_LARGE'],
  ]
  for (const [what, res, status, code] of cases) {
    const r = await res
    t.equal(r.status, status, `${what}: ${status}`)
    t.equal(r.body.error?.code, code, `${what}: ${code} (${r.body.error?.message})`)
  }
  const once = good()
  t.equal((await post(once)).status, 202, 'a good one is sent')
  const again = await post(once)
  t.match(again, { status: 409, body: { error: { code: 'REPLAY' } } }, 'the same command again: a replay, not sent twice')
  await until(async () => (await call(url, 'GET', `/api/v1/commands/${once.id}`)).body.state === 'ok', 30_000, 'its reply')
  t.same(
    published.map(p => (JSON.parse(p) as { id: string }).id),
    [once.id],
    'only the good command reached the broker, once',
  )
  t.equal(((await call(url, 'GET', '/api/v1/commands')).body.items as unknown[]).length, 1, 'and only it is in the audit log')
  t.match(await call(url, 'GET', '/api/v1/commands/nosuchcommand1'), { status: 404, body: { error: { code: 'NOT_FOUND' } } })
  t.match(await call(url, 'GET', '/api/v1/commands?limit=100000'), { status: 400, body: { error: { code: 'BAD_REQUEST' } } }, 'the page size is bounded')
  t.match(await call(url, 'GET', '/api/v1/commands/bad id!'), { status: 400 })
})
