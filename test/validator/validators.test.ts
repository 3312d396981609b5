// Validator processes on real Mosquitto: two processes sharing one store and one
// shared subscription, a restart in the middle of an epoch, and a second process that
// claims a name already in use.

import t, { type Test } from 'tap'
import { execFile } from 'node:child_process'
import { join } from 'node:path'
import { promisify } from 'node:util'
import type { KeyPair } from '../../protocol/keys.js'
import type { Attestation, Beacon, ScoreParams } from '../../protocol/proof-format.js'
import { DEFAULT_WEIGHTS, epochBounds } from '../../validator/score.js'
import { validatorKey } from '../../validator/validator-cli.js'
import type { Validator } from '../../validator/validator.js'
import { openStateDb } from '../../agent/core/state-db.js'
import { testValidator } from '../helpers/validator.js'
import { startBroker, type TestBroker } from '../helpers/broker.js'
import { Consumer, sleep, startTestAgent, tmp, until, type TestAgent } from '../helpers/agent.js'

const FLEET = 'test'
const bundle = new URL('../../dist/cairn.mjs', import.meta.url).pathname
let broker: TestBroker
t.before(async () => {
  broker = await startBroker()
})
t.teardown(async () => broker.close())

/** Each test uses its own share group, so one test's processes never share with another's. */
function validator(t: Test, o: { stateDir: string; key: KeyPair; params: ScoreParams; instance: string; shareGroup: string }): Validator {
  return testValidator(t, broker.url, { ...o, fleet: FLEET, challengeTimeoutMs: 500 })
}

async function agent(t: Test, vdir: string, periodS = 60): Promise<TestAgent> {
  const a = await startTestAgent({ url: broker.url, values: { proof: { validatorKeys: [join(vdir, 'validator.key.pub')], jitterMs: 0, periodS }, log: { level: 'warn' } } })
  t.teardown(() => a.stop())
  return a
}

const epochOf = (p: ScoreParams, ms: number) => Math.floor(Math.floor(ms / p.slotMs) / p.epochSlots)
/** Sleeps until `offsetMs` into the given slot. */
const untilSlot = (p: ScoreParams, slot: number, offsetMs: number) => sleep(Math.max(0, slot * p.slotMs + offsetMs - Date.now()))

function attestation(v: Validator, device: string, epoch: number): Attestation | undefined {
  const row = v.db.prepare('SELECT payload FROM attestations WHERE device = ? AND epoch = ?').get(device, epoch) as { payload: Buffer } | undefined
  return row ? (JSON.parse(row.payload.toString()) as Attestation) : undefined
}

t.test('two processes on one store: one beacon per slot, each heartbeat stored once, full coverage', async t => {
  const vdir = tmp('cairn-val-')
  const key = validatorKey(vdir)
  const params: ScoreParams = { slotMs: 1000, epochSlots: 4, maxAgeMs: 1000, skewMs: 30_000, ...DEFAULT_WEIGHTS }
  const beacons = await Consumer.connect(broker.url, `cairn/v1/${FLEET}/beacon/+`)
  t.teardown(() => beacons.close())
  const va = validator(t, { stateDir: vdir, key, params, instance: 'a', shareGroup: 'val' })
  const vb = validator(t, { stateDir: vdir, key, params, instance: 'b', shareGroup: 'val' })
  await Promise.all([va.start(), vb.start()])
  const agents = [await agent(t, vdir), await agent(t, vdir)]
  const devices = agents.map(a => a.agent.deviceId)
  const epoch = epochOf(params, Date.now()) + 1
  await until(() => devices.every(d => attestation(va, d, epoch) !== undefined), 20_000, `attestations for epoch ${epoch}`)

  for (const d of devices) {
    const att = attestation(va, d, epoch)!
    t.match(att.body.counts, { slotsLive: 4, slotsCovered: 4, equivocations: 0, forks: 0 }, 'every slot beaconed and covered')
    t.equal(att.body.score, 1_000_000)
  }
  // One synchronous read of the store and both processes' counters (they run in this
  // process: no beacon can land between these lines); the validators go on beaconing.
  const rows = va.db.prepare('SELECT slot, hash FROM beacons ORDER BY slot').all() as Array<{ slot: number; hash: string }>
  const a = va.snapshot()
  const b = vb.snapshot()
  const stored = (va.db.prepare('SELECT COUNT(*) AS n FROM heartbeats').get() as { n: number }).n
  // The last beacon stored may still be on its way to the test's subscriber.
  const lastSlot = rows.at(-1)!.slot
  const topicSlots = () => beacons.messages.map(m => (m.json as unknown as Beacon).body.slot).filter(s => s <= lastSlot)
  await until(() => rows.every(r => topicSlots().includes(r.slot)), 5000, 'every stored beacon on the beacon topic')
  const perSlot = new Map<number, number>()
  for (const slot of topicSlots()) perSlot.set(slot, (perSlot.get(slot) ?? 0) + 1)
  t.same(
    [...perSlot.values()].filter(n => n !== 1),
    [],
    'the beacon topic shows one beacon per slot',
  )
  t.same(
    [...perSlot.keys()].sort((x, y) => x - y),
    rows.map(r => r.slot),
    'the same slots as the store holds',
  )
  t.same(
    rows.map(r => r.slot),
    [...Array(rows.length).keys()].map(i => rows[0]!.slot + i),
    'no slot skipped while one process leads',
  )

  t.ok(a.heartbeats > 0 && b.heartbeats > 0, `both processes took heartbeats (${a.heartbeats} + ${b.heartbeats})`)
  t.equal(a.heartbeats + b.heartbeats, stored, 'each stored exactly once between them')
  t.equal(a.evidence + b.evidence, 0)
  t.equal(a.beacons + b.beacons, rows.length, 'beacons published = beacon rows')
  t.ok(a.leader !== b.leader, 'exactly one leads')
})

t.test('a validator restarted mid-epoch loses no heartbeat; slots without a beacon are not live', async t => {
  const vdir = tmp('cairn-val-')
  const key = validatorKey(vdir)
  const params: ScoreParams = { slotMs: 1000, epochSlots: 6, maxAgeMs: 1000, skewMs: 30_000, ...DEFAULT_WEIGHTS }
  const first = validator(t, { stateDir: vdir, key, params, instance: 'a', shareGroup: 'val-restart' })
  await first.start()
  const a = await agent(t, vdir, 1)
  const device = a.agent.deviceId
  await until(() => a.agent.proofs!.head() !== undefined, 5000, 'first heartbeat')
  const epoch = epochOf(params, Date.now()) + 1
  const { firstSlot } = epochBounds(params, epoch)
  // Down from 200 ms into slot 1 of the epoch until 200 ms into slot 4.
  await untilSlot(params, firstSlot + 1, 200)
  await first.stop()
  const stoppedAt = Date.now()
  await untilSlot(params, firstSlot + 4, 200)
  const second = validator(t, { stateDir: vdir, key, params, instance: 'a', shareGroup: 'val-restart' })
  await second.start()
  const startedAt = Date.now()
  await until(() => attestation(second, device, epoch) !== undefined, 20_000, `attestation for epoch ${epoch}`)

  await a.stop()
  const adb = openStateDb(a.stateDir)
  const published = adb.prepare('SELECT seq, hash FROM heartbeats ORDER BY seq').all() as Array<{ seq: number; hash: string }>
  adb.close()
  const stored = () => new Set((second.db.prepare('SELECT hash FROM heartbeats WHERE device = ?').all(device) as Array<{ hash: string }>).map(r => r.hash))
  await until(() => published.every(h => stored().has(h.hash)), 10_000, 'every heartbeat in the validator store').catch(() => undefined)
  t.same(
    published.filter(h => !stored().has(h.hash)).map(h => h.seq),
    [],
    `all ${published.length} heartbeats the device signed are stored`,
  )

  const slots = [...Array(params.epochSlots).keys()].map(i => firstSlot + i)
  const missing = slots.filter(s => s * params.slotMs >= stoppedAt && (s + 1) * params.slotMs <= startedAt)
  const live = (second.db.prepare('SELECT slot FROM beacons WHERE slot BETWEEN ? AND ? ORDER BY slot').all(slots[0], slots[slots.length - 1]) as Array<{ slot: number }>).map(r => r.slot)
  t.same(missing, [firstSlot + 2, firstSlot + 3], 'the validator was down for two whole slots')
  t.same(
    live,
    slots.filter(s => !missing.includes(s)),
    'a beacon in every other slot',
  )
  const att = attestation(second, device, epoch)!
  t.equal(att.body.counts.slotsLive, live.length, 'slotsLive excludes exactly the slots without a beacon')
  t.equal(att.body.counts.slotsCovered, live.length, 'the device covered every live slot')
  t.equal(att.body.score, 1_000_000)
  t.equal(att.body.fraud, false)
})

t.test('a second process with the same instance name on the same store is refused', async t => {
  const vdir = tmp('cairn-val-')
  const key = validatorKey(vdir)
  const params: ScoreParams = { slotMs: 1000, epochSlots: 4, maxAgeMs: 1000, skewMs: 30_000, ...DEFAULT_WEIGHTS }
  const first = validator(t, { stateDir: vdir, key, params, instance: 'a', shareGroup: 'val-lock' })
  await first.start()
  t.throws(() => validator(t, { stateDir: vdir, key, params, instance: 'a', shareGroup: 'val-lock' }), { name: 'CairnError', code: 'LOCKED', message: /instance "a" is already running/ })
  const other = validator(t, { stateDir: vdir, key, params, instance: 'b', shareGroup: 'val-lock' })
  t.ok(other, 'another name is welcome')

  const run = promisify(execFile)
  const cli = await run(
    process.execPath,
    [bundle, 'validator', '--broker', broker.url, '--fleet', FLEET, '--state-dir', vdir, '--slot', '1', '--epoch-slots', '4', '--max-age', '1', '--instance', 'a'],
    { timeout: 15_000 },
  ).catch((e: { code: number; stderr: string }) => e)
  t.not((cli as { code?: number }).code ?? 0, 0, 'the CLI exits non-zero')
  t.match((cli as { stderr: string }).stderr, /already running/, 'and says why')

  await first.stop()
  const again = validator(t, { stateDir: vdir, key, params, instance: 'a', shareGroup: 'val-lock' })
  t.ok(again, 'the name is free once its process stopped')
})

// Mosquitto (like EMQX) keeps handing a shared group's messages round-robin to a member
// whose session is offline but not expired, and queues them there. So members of a share
// group end their session with their connection; a process stopped for good (scaled
// down, renamed) must not keep taking its share of heartbeats.
t.test('a process stopped for good stops taking heartbeats from the group', async t => {
  const vdir = tmp('cairn-val-')
  const key = validatorKey(vdir)
  const params: ScoreParams = { slotMs: 1000, epochSlots: 4, maxAgeMs: 1000, skewMs: 30_000, ...DEFAULT_WEIGHTS }
  const va = validator(t, { stateDir: vdir, key, params, instance: 'a', shareGroup: 'val-retire' })
  const vb = validator(t, { stateDir: vdir, key, params, instance: 'b', shareGroup: 'val-retire' })
  await Promise.all([va.start(), vb.start()])
  await vb.stop()
  const a = await agent(t, vdir)
  const epoch = epochOf(params, Date.now()) + 1
  await until(() => attestation(va, a.agent.deviceId, epoch) !== undefined, 20_000, `attestation for epoch ${epoch}`)
  const att = attestation(va, a.agent.deviceId, epoch)!
  t.equal(att.body.counts.slotsLive, 4)
  t.equal(att.body.counts.slotsCovered, 4, `the live process received every heartbeat in time (covered ${att.body.counts.slotsCovered} of 4)`)
  t.equal(att.body.score, 1_000_000)
})
