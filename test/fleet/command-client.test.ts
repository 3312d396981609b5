// Issue 17, finding 6: replies are signed, so the broker cannot fake them. With no agent
// running, a plain MQTT client answers `operator-revoke` for the device, unsigned, and
// then signed with a key that is not the device's: `cairn fleet cmd` reports both as
// refused and exits 1, never `ok`. A genuine agent's reply verifies (MQTT 5 and 3.1.1).

import t from 'tap'
import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import mqtt from 'mqtt'
import { generateKeyPair, keyPairFromSeed } from '../../protocol/keys.js'
import { REPLY_TYPE, readReply, signReply } from '../../protocol/reply.js'
import { signEnvelope, signedBytes } from '../../protocol/envelope.js'
import type { Json } from '../../protocol/canonical.js'
import { startBroker, type TestBroker } from '../helpers/broker.js'
import { operatorKey, startTestAgent, tmp } from '../helpers/agent.js'
import { sendCommand, signCommand } from '../../fleet/command-client.js'

const run = promisify(execFile)
const bundle = new URL('../../dist/cairn.mjs', import.meta.url).pathname

let broker: TestBroker
t.before(async () => {
  broker = await startBroker()
})
t.teardown(async () => broker.close())

/** An impostor on the broker: answers every command to `device` as `answer` says. */
async function impostor(device: string, answer: (cmd: { id: string; iss: string }, topic: string) => string | Buffer) {
  const c = await mqtt.connectAsync(broker.url, { protocolVersion: 5, reconnectPeriod: 0 })
  c.on('message', (topic, payload, packet) => {
    const cmd = JSON.parse(payload.toString()) as { id: string; iss: string }
    const to = packet.properties?.responseTopic ?? topic.replace(/\/cmd\/[^/]+$/, '/reply')
    void c.publishAsync(to, answer(cmd, to), { qos: 1, ...(packet.properties?.correlationData ? { properties: { correlationData: packet.properties.correlationData } } : {}) })
  })
  await c.subscribeAsync(`cairn/v1/demo/${device}/cmd/#`, { qos: 1 })
  return c
}

t.test('a reply that the device did not sign is never taken for its answer', async t => {
  const dir = tmp()
  const op = operatorKey(dir)
  const device = generateKeyPair().keyId // a device that is not running
  const body = JSON.stringify({ keyId: op.keyId })
  for (const [what, answer] of [
    ['unsigned', (cmd: { id: string }) => JSON.stringify({ id: cmd.id, status: 'ok', data: { revoked: true } })],
    [
      'signed by another key',
      (cmd: { id: string; iss: string }) => {
        const other = generateKeyPair()
        return JSON.stringify({ ...signReply(other, { id: cmd.id, status: 'ok', data: { revoked: true } }, { fleet: 'demo', to: cmd.iss, now: Date.now() }), iss: device })
      },
    ],
  ] as const) {
    const fake = await impostor(device, answer)
    const r = await run(process.execPath, [bundle, 'fleet', 'cmd', device, 'operator-revoke', body, '--broker', broker.url, '--fleet', 'demo', '--key', op.file, '--timeout', '3'], {
      encoding: 'utf8',
    }).catch((e: { code: number; stdout: string; stderr: string }) => e)
    await fake.endAsync(true)
    t.equal((r as { code?: number }).code, 1, `${what}: exit 1`)
    t.notMatch(r.stdout, /"status": "ok"/, `${what}: never printed as ok`)
    t.match(r.stderr, /no reply signed by device .*refused \((BAD_SIGNATURE|UNTRUSTED_KEY|BAD_REQUEST)/, `${what}: says the reply was refused and why`)
    t.equal(r.stderr.trim().split('\n').length, 1, `${what}: one line`)
  }
})

t.test("a genuine agent's reply verifies, in MQTT 5 and 3.1.1", async t => {
  const dir = tmp()
  const op = operatorKey(dir)
  const a = await startTestAgent({ url: broker.url, fleet: 'demo', operatorKeys: [op.pub] })
  t.teardown(() => a.stop())
  for (const version of broker.mqtt5 ? ([5, 4] as const) : ([4] as const)) {
    const env = signCommand({ fleet: 'demo', device: a.agent.deviceId, name: 'ping', body: {}, key: op, ttlMs: 60_000 })
    const reply = await sendCommand(env, { url: broker.url, mqttVersion: version, timeoutMs: 10_000 })
    t.match(reply, { id: env.id, status: 'ok', data: { pong: true } }, `MQTT ${version}`)
  }
})

t.test('readReply binds a reply to its device, its operator and its command', async t => {
  const device = keyPairFromSeed('11'.repeat(32))
  const op = keyPairFromSeed('22'.repeat(32))
  const now = Date.now()
  const env = signReply(device, { id: 'command-0001', status: 'ok', data: { pong: true } }, { fleet: 'demo', to: op.keyId, now })
  const wire = Buffer.from(JSON.stringify(env))
  const read = (o: Partial<Parameters<typeof readReply>[1]>) =>
    readReply(wire, { fleet: 'demo', device: device.keyId, operator: op.keyId, cmd: 'command-0001', now, skewMs: 60_000, maxBytes: 1 << 20, ...o })
  t.match(read({}), { ok: true, reply: { id: 'command-0001', status: 'ok', data: { pong: true } } })
  t.match(read({ device: op.keyId }), { ok: false, error: { code: 'UNTRUSTED_KEY' } }, 'another device')
  t.match(read({ operator: device.keyId }), { ok: false, error: { code: 'WRONG_TARGET' } }, 'another operator')
  t.match(read({ cmd: 'command-0002' }), { ok: false, error: { code: 'WRONG_TARGET' } }, 'another command')
  t.match(read({ fleet: 'other' }), { ok: false, error: { code: 'WRONG_TARGET' } }, 'another fleet')
  const tampered = Buffer.from(JSON.stringify({ ...env, body: { ...(env.body as object), status: 'ok', data: { pong: false } } }))
  t.match(
    readReply(tampered, { fleet: 'demo', device: device.keyId, operator: op.keyId, cmd: 'command-0001', now, skewMs: 60_000, maxBytes: 1 << 20 }),
    { ok: false, error: { code: 'BAD_SIGNATURE' } },
    'a changed body',
  )
  t.equal(env.type, REPLY_TYPE)
  // The signed bytes are the one envelope's: domain-separated by the type "reply".
  t.match(signedBytes(env).toString('utf8'), /^CAIRN-SIG-1\nreply\n\{"body":\{"cmd":"command-0001"/)
  // A command cannot pass for a reply (the type is part of the signed bytes).
  const asCmd = signEnvelope(device, { type: 'cmd.ping', id: env.id, fleet: 'demo', sub: op.keyId, iat: now, exp: now + 60_000, body: env.body as Json })
  t.match(readReply(Buffer.from(JSON.stringify(asCmd)), { fleet: 'demo', device: device.keyId, operator: op.keyId, cmd: 'command-0001', now, skewMs: 60_000, maxBytes: 1 << 20 }), {
    ok: false,
    error: { code: 'BAD_REQUEST' },
  })
})
