// The telemetry loop (agent/core/telemetry-loop.ts) on a real outbox: each message
// carries the outbox backlog as it was just before the message itself was queued, and
// what it queues matches docs/schemas/telemetry.json with and without a backlog.

import t, { type Test } from 'tap'
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { ManualClock } from '../../../protocol/clock.js'
import { createLogger } from '../../../protocol/log.js'
import { generateKeyPair } from '../../../protocol/keys.js'
import type { TelemetryMessage } from '../../../protocol/messages.js'
import type { TelemetrySample } from '../../../hw/index.js'
import { MsgClass, Outbox } from '../../../agent/core/outbox.js'
import { openStateDb } from '../../../agent/core/state-db.js'
import { LocalBus } from '../../../agent/core/local-bus.js'
import { Metrics } from '../../../agent/core/metrics.js'
import { TelemetryLoop } from '../../../agent/core/telemetry-loop.js'
import { schemaErrors } from '../../helpers/schemas.js'

const SAMPLE: TelemetrySample = { board: { kind: 'rpi5', model: 'Raspberry Pi 5 Model B Rev 1.0', arch: 'aarch64' }, uptimeS: 12, load: [0.5, 0.4, 0.3] }

function setup(t: Test, io?: () => TelemetryMessage['io']) {
  const clock = new ManualClock()
  const db = openStateDb(mkdtempSync(join(tmpdir(), 'cairn-telemetry-')))
  t.teardown(() => db.close())
  const outbox = new Outbox(db, { clock, maxBytes: 1 << 20, lazyWriteMs: 30_000, mustKeepDays: 30 })
  const device = generateKeyPair().keyId
  const loop = new TelemetryLoop({
    deviceId: device,
    topic: `cairn/v1/test/${device}/telemetry`,
    clock,
    log: createLogger({ level: 'error', out: process.stderr }),
    outbox,
    metrics: new Metrics(),
    bus: new LocalBus(),
    periodS: () => 3600,
    sample: () => Promise.resolve(SAMPLE),
    ...(io ? { io } : {}),
  })
  t.teardown(() => loop.stop())
  // One sample now, as the timer would take it; returns the message it queued.
  const sampleOnce = async (): Promise<TelemetryMessage & { seq: number }> => {
    await (loop as unknown as { sampleOnce(): Promise<void> }).sampleOnce()
    const all = outbox.peek(1000, new Set()).filter(r => r.topic.endsWith('/telemetry'))
    const rec = all[all.length - 1]!
    return { ...(JSON.parse(rec.payload.toString()) as TelemetryMessage), seq: rec.seq }
  }
  return { clock, outbox, sampleOnce }
}

t.test('each telemetry message carries the outbox backlog from before it was queued', async t => {
  const { clock, outbox, sampleOnce } = setup(t)
  const { seq: firstSeq, ...first } = await sampleOnce()
  t.same(first.outbox, { queued: 0, bytes: 0 }, 'an empty outbox: nothing queued, the message does not count itself, no oldestTs')
  t.equal(schemaErrors('telemetry', first), null, 'valid against docs/schemas/telemetry.json')
  t.equal(outbox.depth(), 1, 'the message itself is queued')

  // Offline: the first sample and an event wait unacknowledged.
  const t0 = first.ts
  clock.advance(60_000)
  outbox.enqueue({ id: 'event-000000001', cls: MsgClass.event, topic: 'cairn/v1/test/x/event', payload: Buffer.from('{}') })
  const before = { queued: outbox.depth(), bytes: outbox.sizeBytes() }
  clock.advance(60_000)
  const { seq: secondSeq, ...second } = await sampleOnce()
  t.same(second.outbox, { ...before, oldestTs: t0 }, 'two waiting ahead of it, the oldest queued with the first sample')
  t.equal(second.outbox!.queued, 2)
  t.ok(second.outbox!.bytes > 0)
  t.equal(schemaErrors('telemetry', second), null, 'valid with a backlog too')

  // Back online: the broker acknowledged the first sample; the event and the second sample still wait.
  outbox.ack(firstSeq)
  clock.advance(60_000)
  const bytes = outbox.sizeBytes()
  const { seq: thirdSeq, ...third } = await sampleOnce()
  t.same(third.outbox, { queued: 2, bytes, oldestTs: t0 + 60_000 }, 'the first sample acknowledged: the oldest is now the event')

  // Everything acknowledged and the deletes done: an empty backlog again.
  for (const r of outbox.peek(1000, new Set())) outbox.ack(r.seq)
  outbox.flush()
  t.equal(outbox.depth(), 0)
  clock.advance(60_000)
  const fourth = await sampleOnce()
  t.same(fourth.outbox, { queued: 0, bytes: 0 }, 'nothing waits')
  t.ok(secondSeq < thirdSeq && thirdSeq < fourth.seq)
})

t.test('older agents send no outbox: the schema accepts its absence, and refuses a malformed one', async t => {
  const device = generateKeyPair().keyId
  const msg = { v: 1, id: '0mwvr3wua-VgU_KZe0OzM', device, ts: 1_700_000_000_000, sample: SAMPLE }
  t.equal(schemaErrors('telemetry', msg), null, 'no outbox')
  t.equal(schemaErrors('telemetry', { ...msg, outbox: { queued: 3, bytes: 900, oldestTs: 1_699_999_000_000 } }), null)
  t.not(schemaErrors('telemetry', { ...msg, outbox: { queued: -1, bytes: 0 } }), null, 'a negative count')
  t.not(schemaErrors('telemetry', { ...msg, outbox: { queued: 1.5, bytes: 0 } }), null, 'a fractional count')
  t.not(schemaErrors('telemetry', { ...msg, outbox: { queued: 1 } }), null, 'bytes missing')
  t.not(schemaErrors('telemetry', { ...msg, outbox: { queued: 1, bytes: 0, oldest: 5 } }), null, 'an unknown field')
  t.not(schemaErrors('telemetry', { ...msg, sample: { ...SAMPLE, outbox: { queued: 1, bytes: 0 } } }), null, 'not inside sample')
})

t.test("each message carries the provider's io when it has something, none when it has not", async t => {
  let io: TelemetryMessage['io']
  let calls = 0
  const { sampleOnce } = setup(t, () => (calls++, io))
  const { seq: _seq0, ...none } = await sampleOnce()
  t.notOk('io' in none, 'nothing held: no io')
  t.equal(schemaErrors('telemetry', none), null)

  io = {
    led: { pin: 17, shown: 'broker-unreachable', source: 'agent' },
    lines: [
      { pin: 17, holder: 'led', direction: 'out', value: 1 },
      { pin: 22, holder: 'local-api', direction: 'out', value: 0 },
      { pin: 23, holder: 'local-api', direction: 'in' },
      { pin: 27, holder: 'button', direction: 'in', value: 0 },
    ],
  }
  const { seq: _seq1, ...full } = await sampleOnce()
  t.same(full.io, io, 'the LED and every line, as given')
  t.equal(full.outbox?.queued, 1, 'beside the outbox backlog')
  t.equal(schemaErrors('telemetry', full), null, 'valid against docs/schemas/telemetry.json')

  io = { lines: [{ pin: 5, holder: 'local-api', direction: 'in', value: 1 }] }
  const { seq: _seq2, ...linesOnly } = await sampleOnce()
  t.same(linesOnly.io, io, 'a line and no LED')
  t.equal(schemaErrors('telemetry', linesOnly), null)
  t.equal(calls, 3, 'asked once a sample')

  io = undefined
  t.notOk('io' in (await sampleOnce()), 'everything closed: no io again')
})

t.test('the schema refuses a malformed io', async t => {
  const device = generateKeyPair().keyId
  const msg = { v: 1, id: '0mwvr3wua-VgU_KZe0OzM', device, ts: 1_700_000_000_000, sample: SAMPLE }
  const led = { pin: 17, shown: 'online', source: 'agent' }
  const line = { pin: 17, holder: 'led', direction: 'out', value: 1 }
  t.equal(schemaErrors('telemetry', { ...msg, io: { led, lines: [line] } }), null)
  t.equal(schemaErrors('telemetry', { ...msg, io: { lines: [] } }), null, 'no LED, no lines')
  t.not(schemaErrors('telemetry', { ...msg, io: { led } }), null, 'lines missing')
  t.not(schemaErrors('telemetry', { ...msg, io: { led: { ...led, shown: 'Online' }, lines: [] } }), null, 'shown not lowercase')
  t.not(schemaErrors('telemetry', { ...msg, io: { led: { ...led, source: 'user' }, lines: [] } }), null, 'an unknown source')
  t.not(schemaErrors('telemetry', { ...msg, io: { lines: [{ ...line, value: 2 }] } }), null, 'a level other than 0 or 1')
  t.not(schemaErrors('telemetry', { ...msg, io: { lines: [{ ...line, holder: 'node-red' }] } }), null, 'an unknown holder')
  t.not(schemaErrors('telemetry', { ...msg, io: { lines: Array.from({ length: 65 }, (_, pin) => ({ ...line, pin })) } }), null, 'more than 64 lines')
})
