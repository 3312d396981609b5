// Issue 17, finding 6 (its second half): task updates are signed, so the broker cannot
// speak for a device. With no agent running, a plain MQTT client answers every task
// request with a `rejected` update, unsigned (the old wire form), then as a task.update
// signed by a key that is not the device's: `cairn task submit` takes neither for the
// device's answer (before: exit 3, "rejected"), waits, and reports them as not verified.
// A genuine agent's updates verify (MQTT 5 and 3.1.1); readTaskUpdate binds an update to
// its device, its dispatcher and its fleet.

import t from 'tap'
import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import mqtt from 'mqtt'
import { generateKeyPair, keyPairFromSeed } from '../../protocol/keys.js'
import { newId } from '../../protocol/ids.js'
import { signEnvelope, type Envelope } from '../../protocol/envelope.js'
import type { Json } from '../../protocol/canonical.js'
import { readTaskUpdate, signTaskUpdate } from '../../protocol/task-update.js'
import { SUBMIT_EXIT, submitTask } from '../../fleet/task-cli.js'
import { startBroker, type TestBroker } from '../helpers/broker.js'
import { operatorKey, tmp } from '../helpers/agent.js'
import { MQTT_VERSIONS } from '../helpers/mqtt-versions.js'
import { FLEET, taskAgent } from '../helpers/task-agent.js'

const run = promisify(execFile)
const bundle = new URL('../../dist/cairn.mjs', import.meta.url).pathname

let broker: TestBroker
t.before(async () => {
  broker = await startBroker()
})
t.teardown(async () => broker.close())

/** An impostor on the broker: answers every task request to `device` as `answer` says. */
async function impostor(device: string, answer: (req: Envelope) => string) {
  const c = await mqtt.connectAsync(broker.url, { protocolVersion: 5, reconnectPeriod: 0 })
  c.on('message', (topic, payload, packet) => {
    const req = JSON.parse(payload.toString()) as Envelope
    const to = packet.properties?.responseTopic ?? topic.replace(/\/request$/, '/update')
    void c.publishAsync(to, answer(req), { qos: 1, ...(packet.properties?.correlationData ? { properties: { correlationData: packet.properties.correlationData } } : {}) })
  })
  await c.subscribeAsync(`cairn/v1/${FLEET}/${device}/task/request`, { qos: 1 })
  return c
}

t.test('an update that the device did not sign is never taken for its answer', async t => {
  const dispatcher = operatorKey(tmp(), 'dispatcher')
  const device = generateKeyPair().keyId // a device that is not running
  const rejected = (req: Envelope) => ({
    task: (req.body as { task: string }).task,
    request: req.id,
    event: 'rejected' as const,
    error: { code: 'UNTRUSTED_KEY' as const, message: 'not your device' },
  })
  for (const [what, answer] of [
    ['unsigned', (req: Envelope) => JSON.stringify({ v: 1, id: newId(Date.now()), device, ts: Date.now(), ...rejected(req) })],
    ['signed by another key', (req: Envelope) => JSON.stringify({ ...signTaskUpdate(generateKeyPair(), rejected(req), { fleet: FLEET, to: req.iss, now: Date.now() }), iss: device })],
  ] as const) {
    const fake = await impostor(device, answer)
    const args = [
      'task',
      'submit',
      device,
      '--broker',
      broker.url,
      '--fleet',
      FLEET,
      '--key',
      dispatcher.file,
      '--type',
      'cache',
      '--cid',
      'a'.repeat(64),
      '--origin',
      'http://127.0.0.1:9/x',
      '--timeout',
      '3',
    ]
    const r = await run(process.execPath, [bundle, ...args], { encoding: 'utf8' }).catch((e: { code: number; stdout: string; stderr: string }) => e)
    await fake.endAsync(true)
    t.equal((r as { code?: number }).code, SUBMIT_EXIT.timeout, `${what}: ends as a timeout (exit ${SUBMIT_EXIT.timeout}), not as rejected`)
    t.notMatch(r.stdout, /rejected/, `${what}: never printed as the device's rejection`)
    t.match(r.stderr, /no receipt signed by device .*1 message\(s\) about this task did not verify and were ignored \(update: (BAD_SIGNATURE|BAD_REQUEST)/, `${what}: says why`)
  }
})

for (const { mqttVersion, label } of MQTT_VERSIONS)
  t.test(`${label}: a genuine agent's updates verify and reach the dispatcher`, async t => {
    const h = await taskAgent(t, { url: broker.url, mqttVersion })
    const now = Date.now()
    const body = { task: `genuine-${mqttVersion}-${now}`, type: 'inference', params: { label: 'g' }, deadline: now + 30_000, priority: 0 }
    const env = signEnvelope(h.dispatcher, { type: 'task.request', id: newId(now), fleet: FLEET, sub: h.device, iat: now, exp: now + 60_000, body })
    const res = await submitTask(env, { url: broker.url, mqttVersion, timeoutMs: 30_000 })
    if (res.kind !== 'receipt') throw new Error(`expected a receipt, got ${JSON.stringify(res)}`)
    const events = res.updates.map(u => u.event)
    t.ok(events.includes('accepted') && events.includes('started'), `accepted and started came as signed updates (${events.join(', ')})`)
    t.ok(
      res.updates.every(u => u.device === h.device),
      'each signed by the device',
    )
  })

t.test('readTaskUpdate binds an update to its device, its dispatcher and its fleet', async t => {
  const device = keyPairFromSeed('11'.repeat(32))
  const dispatcher = keyPairFromSeed('22'.repeat(32))
  const now = Date.now()
  const env = signTaskUpdate(device, { task: 'task-0001', request: 'request-0001', event: 'accepted', position: 0 }, { fleet: 'demo', to: dispatcher.keyId, now })
  const wire = Buffer.from(JSON.stringify(env))
  const read = (o: Partial<Parameters<typeof readTaskUpdate>[1]>, payload = wire) =>
    readTaskUpdate(payload, { fleet: 'demo', device: device.keyId, dispatcher: dispatcher.keyId, now, skewMs: 60_000, maxBytes: 1 << 20, ...o })
  t.match(read({}), { ok: true, update: { task: 'task-0001', request: 'request-0001', event: 'accepted', position: 0, device: device.keyId, id: env.id, ts: now } })
  t.match(read({ device: dispatcher.keyId }), { ok: false, error: { code: 'UNTRUSTED_KEY' } }, 'another device')
  t.match(read({ dispatcher: device.keyId }), { ok: false, error: { code: 'WRONG_TARGET' } }, 'another dispatcher')
  t.match(read({ fleet: 'other' }), { ok: false, error: { code: 'WRONG_TARGET' } }, 'another fleet')
  t.match(read({ now: env.exp + 1 }), { ok: false, error: { code: 'EXPIRED' } }, 'expired')
  const tampered = Buffer.from(JSON.stringify({ ...env, body: { ...(env.body as object), event: 'rejected' } }))
  t.match(read({}, tampered), { ok: false, error: { code: 'BAD_SIGNATURE' } }, 'a changed body')
  const wrongType = signEnvelope(device, { type: 'reply', id: newId(now), fleet: 'demo', sub: dispatcher.keyId, iat: now, exp: now + 60_000, body: env.body as Json })
  t.match(read({}, Buffer.from(JSON.stringify(wrongType))), { ok: false, error: { code: 'BAD_REQUEST' } }, 'another message type')
  const badBody = signEnvelope(device, { type: 'task.update', id: newId(now), fleet: 'demo', sub: dispatcher.keyId, iat: now, exp: now + 60_000, body: { task: 'task-0001', event: 'finished' } })
  t.match(read({}, Buffer.from(JSON.stringify(badBody))), { ok: false, error: { code: 'BAD_REQUEST' } }, 'a body that is not an update')
})
