// Validator processes on real Mosquitto: two processes sharing one store and one
// shared subscription, a restart in the middle of an epoch, and a second process that
// claims a name already in use, a process that stores nothing saying so, and the CLI
// making its state dir. What goes over the network runs in MQTT 5 and 3.1.1.

import t, { type Test } from 'tap'
import { execFile, spawn } from 'node:child_process'
import { statSync } from 'node:fs'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { generateKeyPair, writeKeyPairFiles, type KeyPair } from '../../protocol/keys.js'
import { createLogger } from '../../protocol/log.js'
import { connectMqttAsync } from '../../protocol/mqtt-client.js'
import type { Attestation, Beacon, ScoreParams } from '../../protocol/proof-format.js'
import { DEFAULT_WEIGHTS, epochBounds } from '../../validator/score.js'
import { validatorKey } from '../../validator/validator-cli.js'
import type { Validator } from '../../validator/validator.js'
import { openStateDb } from '../../agent/core/state-db.js'
import { testValidator } from '../helpers/validator.js'
import { MQTT_VERSION_NUMBERS, versionName, type MqttVersion } from '../helpers/mqtt-versions.js'
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
function validator(t: Test, o: { stateDir: string; key: KeyPair; params: ScoreParams; instance: string; shareGroup: string; mqttVersion?: MqttVersion }): Validator {
  return testValidator(t, broker.url, { ...o, fleet: FLEET, challengeTimeoutMs: 500 })
}

async function agent(t: Test, vdir: string, mqttVersion: MqttVersion, periodS = 60): Promise<TestAgent> {
  const a = await startTestAgent({ url: broker.url, mqttVersion, values: { proof: { validatorKeys: [join(vdir, 'validator.key.pub')], jitterMs: 0, periodS }, log: { level: 'warn' } } })
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

for (const mqttVersion of MQTT_VERSION_NUMBERS) {
  t.test(`two processes on one store: one beacon per slot, each heartbeat stored once, full coverage (${versionName(mqttVersion)})`, async t => {
    const vdir = tmp('cairn-val-')
    const key = validatorKey(vdir)
    const params: ScoreParams = { slotMs: 1000, epochSlots: 4, maxAgeMs: 1000, skewMs: 30_000, ...DEFAULT_WEIGHTS }
    // This validator's topic only: an earlier test's validator left its beacon retained.
    const beacons = await Consumer.connect(broker.url, `cairn/v1/${FLEET}/beacon/${key.keyId}`)
    t.teardown(() => beacons.close())
    const va = validator(t, { stateDir: vdir, key, params, instance: 'a', shareGroup: `val-${mqttVersion}`, mqttVersion })
    const vb = validator(t, { stateDir: vdir, key, params, instance: 'b', shareGroup: `val-${mqttVersion}`, mqttVersion })
    await Promise.all([va.start(), vb.start()])
    const agents = [await agent(t, vdir, mqttVersion), await agent(t, vdir, mqttVersion)]
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

  t.test(`a validator restarted mid-epoch loses no heartbeat; slots without a beacon are not live (${versionName(mqttVersion)})`, async t => {
    const vdir = tmp('cairn-val-')
    const key = validatorKey(vdir)
    const params: ScoreParams = { slotMs: 1000, epochSlots: 6, maxAgeMs: 1000, skewMs: 30_000, ...DEFAULT_WEIGHTS }
    const first = validator(t, { stateDir: vdir, key, params, instance: 'a', shareGroup: `val-restart-${mqttVersion}`, mqttVersion })
    await first.start()
    const a = await agent(t, vdir, mqttVersion, 1)
    const device = a.agent.deviceId
    await until(() => a.agent.proofs!.head() !== undefined, 5000, 'first heartbeat')
    const epoch = epochOf(params, Date.now()) + 1
    const { firstSlot } = epochBounds(params, epoch)
    // Down from 200 ms into slot 1 of the epoch until 200 ms into slot 4.
    await untilSlot(params, firstSlot + 1, 200)
    await first.stop()
    const stoppedAt = Date.now()
    await untilSlot(params, firstSlot + 4, 200)
    const second = validator(t, { stateDir: vdir, key, params, instance: 'a', shareGroup: `val-restart-${mqttVersion}`, mqttVersion })
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

  // Mosquitto (like EMQX) keeps handing a shared group's messages round-robin to a member
  // whose session is offline but not expired, and queues them there. So members of a share
  // group end their session with their connection; a process stopped for good (scaled
  // down, renamed) must not keep taking its share of heartbeats.
  t.test(`a process stopped for good stops taking heartbeats from the group (${versionName(mqttVersion)})`, async t => {
    const vdir = tmp('cairn-val-')
    const key = validatorKey(vdir)
    const params: ScoreParams = { slotMs: 1000, epochSlots: 4, maxAgeMs: 1000, skewMs: 30_000, ...DEFAULT_WEIGHTS }
    const va = validator(t, { stateDir: vdir, key, params, instance: 'a', shareGroup: `val-retire-${mqttVersion}`, mqttVersion })
    const vb = validator(t, { stateDir: vdir, key, params, instance: 'b', shareGroup: `val-retire-${mqttVersion}`, mqttVersion })
    await Promise.all([va.start(), vb.start()])
    await vb.stop()
    const a = await agent(t, vdir, mqttVersion)
    const epoch = epochOf(params, Date.now()) + 1
    await until(() => attestation(va, a.agent.deviceId, epoch) !== undefined, 20_000, `attestation for epoch ${epoch}`)
    const att = attestation(va, a.agent.deviceId, epoch)!
    t.equal(att.body.counts.slotsLive, 4)
    t.equal(att.body.counts.slotsCovered, 4, `the live process received every heartbeat in time (covered ${att.body.counts.slotsCovered} of 4)`)
    t.equal(att.body.score, 1_000_000)
  })

  t.test(`a process that receives proof messages but stores no heartbeat warns once the epoch is over, with the reasons (${versionName(mqttVersion)})`, async t => {
    const vdir = tmp('cairn-val-')
    const key = validatorKey(vdir)
    const params: ScoreParams = { slotMs: 500, epochSlots: 2, maxAgeMs: 500, skewMs: 30_000, ...DEFAULT_WEIGHTS }
    const lines: string[] = []
    const v = testValidator(t, broker.url, {
      stateDir: vdir,
      key,
      params,
      fleet: FLEET,
      shareGroup: `val-warn-${mqttVersion}`,
      mqttVersion,
      log: createLogger({ level: 'info', out: { write: s => lines.push(s) } }),
    })
    await v.start()
    const pub = await connectMqttAsync({ url: broker.url, mqttVersion, reconnectPeriodMs: 0, maximumPacketSize: 1 << 20 })
    t.teardown(() => pub.endAsync())
    const topic = `cairn/v1/${FLEET}/${generateKeyPair().keyId}/proof`
    for (const payload of ['{"v":1,', 'not json', 'null']) await pub.publishAsync(topic, payload, { qos: 1 })
    type Summary = { level: number; msg: string; received: number; stored: number; refused: Record<string, number> }
    const warned = () => lines.map(l => JSON.parse(l) as Summary).filter(l => l.msg === 'proof messages received but no heartbeat stored this epoch')
    // The three may straddle an epoch boundary: then two warnings share them.
    await until(() => warned().reduce((n, w) => n + w.received, 0) >= 3, 10_000, 'the warning')
    t.ok(
      warned().every(w => w.level === 40 && w.stored === 0),
      'at warning level',
    )
    const refused: Record<string, number> = {}
    for (const w of warned()) for (const [code, n] of Object.entries(w.refused)) refused[code] = (refused[code] ?? 0) + n
    t.same(refused, { BAD_JSON: 2, BAD_REQUEST: 1 }, 'each refusal counted by its code')
  })
}

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

t.test('cairn validator makes a missing --state-dir (0700) and runs on MQTT 3.1.1', async t => {
  const dir = join(tmp('cairn-val-'), 'not', 'yet')
  const keyFile = join(tmp('cairn-val-key-'), 'validator.key')
  writeKeyPairFiles(keyFile, generateKeyPair())
  const child = spawn(
    process.execPath,
    [bundle, 'validator', '--broker', broker.url, '--fleet', FLEET, '--state-dir', dir, '--key', keyFile, '--slot', '1', '--epoch-slots', '4', '--mqtt-version', '4'],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  )
  t.teardown(() => child.kill('SIGKILL'))
  let out = ''
  let err = ''
  child.stderr.on('data', (d: Buffer) => (err += d.toString()))
  const exited = new Promise<number | null>(r => child.once('exit', code => r(code)))
  await new Promise<void>((resolve, reject) => {
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString()
      if (out.includes('"msg":"validator started"')) resolve()
    })
    void exited.then(code => reject(new Error(`exited ${code} before starting: ${err}`)))
  })
  t.equal(statSync(dir).mode & 0o777, 0o700, 'made, private to its user')
  child.kill('SIGTERM')
  t.equal(await exited, 0, 'SIGTERM stops it cleanly')
})
