// `cairn sim` against a real Mosquitto and a real validator with short slots: honest
// devices earn no evidence, an equivocating device is caught with evidence that
// `cairn verify` proves offline, a device with a clock two minutes fast is flagged, and
// every heartbeat the broker acknowledged reaches the validator's store.

import t from 'tap'
import { spawnSync } from 'node:child_process'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { keyIdOf } from '../../protocol/keys.js'
import { validatorKey } from '../../validator/validator-cli.js'
import { DEFAULT_WEIGHTS } from '../../validator/score.js'
import { startSim, type SimDevice } from '../../fleet/sim/sim.js'
import { parseMisbehaviour } from '../../fleet/sim/sim-cli.js'
import { startBroker } from '../helpers/broker.js'
import { testValidator } from '../helpers/validator.js'
import { Consumer, tmp, until } from '../helpers/agent.js'
import { schemaErrors } from '../helpers/schemas.js'
import type { TelemetryMessage } from '../../protocol/messages.js'

const CLI = join(import.meta.dirname, '../../dist/cairn.mjs')

t.test('--misbehave specs', async t => {
  t.same(parseMisbehaviour('equivocate:0.01'), { kind: 'equivocate', who: { fraction: 0.01 } })
  t.same(parseMisbehaviour('clock:@3:+120s'), { kind: 'clock', who: { index: 3 }, arg: 120 })
  t.same(parseMisbehaviour('offline:0.5:30:10'), { kind: 'offline', who: { fraction: 0.5 }, arg: 30, at: 10 })
  t.same(parseMisbehaviour('fork:@0:2'), { kind: 'fork', who: { index: 0 }, arg: 2 })
  t.same(parseMisbehaviour('hot:@2'), { kind: 'hot', who: { index: 2 } })
  t.same(parseMisbehaviour('disk-full:0.1'), { kind: 'disk-full', who: { fraction: 0.1 } })
  t.same(parseMisbehaviour('update-failed:@12'), { kind: 'update-failed', who: { index: 12 } })
  t.throws(() => parseMisbehaviour('update-failed:@12:5'), /takes no number/)
  t.same(parseMisbehaviour('backlog:@4'), { kind: 'backlog', who: { index: 4 } })
  t.same(parseMisbehaviour('backlog:0.05'), { kind: 'backlog', who: { fraction: 0.05 } })
  t.throws(() => parseMisbehaviour('backlog:@4:100'), /takes no number/)
  for (const bad of ['lie:0.1', 'clock:0.1', 'equivocate', 'equivocate:2', 'replay:0.1:0', 'offline:0.1', 'fork:0.1:1:5', 'hot:0.1:5', 'under-voltage:@1:2:3']) {
    t.throws(() => parseMisbehaviour(bad), { code: 'BAD_REQUEST' }, bad)
  }
})

t.test('20 honest devices, one equivocating, one with a fast clock, one validator', async t => {
  const broker = await startBroker()
  t.teardown(() => broker.close())
  const vdir = tmp('cairn-val-')
  const key = validatorKey(vdir)
  const params = { slotMs: 2000, epochSlots: 4, maxAgeMs: 2000, skewMs: 30_000, ...DEFAULT_WEIGHTS }
  const validator = testValidator(t, broker.url, { stateDir: vdir, key, params })
  await validator.start()

  // jitter 0, as in live.test.ts: each heartbeat follows its beacon at once.
  const sim = startSim({
    devices: 22,
    brokerUrl: broker.url,
    fleet: 'test',
    validators: [key.keyId],
    periodS: 4,
    jitterMs: 0,
    misbehave: [
      { kind: 'equivocate', who: { index: 20 }, arg: 2 },
      { kind: 'clock', who: { index: 21 }, arg: 120 },
    ],
  })
  t.teardown(() => sim.stop())
  await sim.ready
  const [liar, skewed] = [sim.devices[20]!, sim.devices[21]!]
  const honest = sim.devices.slice(0, 20)
  t.equal(keyIdOf(liar.key.publicKey), liar.id, 'device id = key id of its public key')
  t.same(liar.faultNames(), ['equivocate/2'])
  t.same(skewed.faultNames(), ['clock+120s'])

  type Ev = { device: string; kind: string; payload: Buffer }
  const evidence = () => validator.db.prepare('SELECT device, kind, payload FROM evidence ORDER BY created').all() as Ev[]
  await until(() => evidence().some(e => e.kind === 'equivocation') && evidence().some(e => e.kind === 'clock-skew'), 15_000, 'equivocation and clock-skew evidence')
  // A few more slots, so honest devices have had time to earn evidence if they were going to.
  const seen = () => sim.stats().totals.heartbeats
  const before = seen()
  await until(() => honest.every(d => d.counts.acked >= 4), 15_000, 'four heartbeats from every honest device')
  t.ok(seen() > before)

  const ch = validator.challenge(honest[0]!.id)
  await until(() => validator.snapshot().responses === 1, 5000, 'challenge response')
  // The broker may deliver the response to the validator before its PUBACK reaches the
  // device (the sim counts an answer on its PUBACK), so the device's count is awaited too.
  await until(() => honest[0]!.counts.challenges >= 1, 5000, 'the PUBACK of the response')
  t.equal(honest[0]!.counts.challenges, 1, 'the sim device answered the challenge once')
  t.equal(validator.snapshot().responses, 1, 'the validator recorded one response')
  t.ok(ch.id)

  const ev = evidence()
  t.same([...new Set(ev.filter(e => e.kind === 'equivocation').map(e => e.device))], [liar.id], 'equivocation evidence names exactly the equivocating device')
  t.same([...new Set(ev.filter(e => e.kind === 'clock-skew').map(e => e.device))], [skewed.id], 'clock-skew evidence names exactly the fast-clock device')
  const honestIds = new Set(honest.map(d => d.id))
  t.same(
    ev.filter(e => honestIds.has(e.device)).map(e => `${e.kind} ${e.device}`),
    [],
    'no evidence against honest devices',
  )
  t.ok(liar.counts.equivocations >= 1)

  const file = join(vdir, 'equivocation.json')
  writeFileSync(file, ev.find(e => e.kind === 'equivocation')!.payload)
  const ver = spawnSync(process.execPath, [CLI, 'verify', file], { encoding: 'utf8' })
  t.equal(ver.status, 0, `cairn verify exits 0: ${ver.stdout}${ver.stderr}`)
  t.match(ver.stdout, /PROVEN/)
  t.match(ver.stdout, new RegExp(`device ${liar.id}`))

  // Accounting: every heartbeat the broker acknowledged is in the validator's store.
  const final = await sim.stop()
  const stored = () => new Map((validator.db.prepare('SELECT device, COUNT(*) AS n FROM heartbeats GROUP BY device').all() as Array<{ device: string; n: number }>).map(r => [r.device, r.n]))
  await until(() => sim.devices.every(d => (stored().get(d.id) ?? 0) >= d.counts.acked), 5000, 'acknowledged heartbeats stored')
  t.equal(final.totals.failed, 0, 'no publish failed')
  t.equal(final.everConnected, 22)
})

t.test('the other misbehaviours earn the evidence they should', async t => {
  const broker = await startBroker()
  t.teardown(() => broker.close())
  const vdir = tmp('cairn-val-')
  const key = validatorKey(vdir)
  const validator = testValidator(t, broker.url, { stateDir: vdir, key, params: { slotMs: 2000, epochSlots: 4, maxAgeMs: 2000, skewMs: 30_000, ...DEFAULT_WEIGHTS } })
  await validator.start()
  const sim = startSim({
    devices: 5,
    brokerUrl: broker.url,
    fleet: 'test',
    validators: [key.keyId],
    periodS: 4,
    jitterMs: 0,
    misbehave: ['fork:@0:2', 'forge-beacon:@1:2', 'replay:@2:2', 'offline:@3:3:1'].map(parseMisbehaviour),
  })
  t.teardown(() => sim.stop())
  await sim.ready
  const [fork, forge, replay, offline, honest] = sim.devices as [SimDevice, SimDevice, SimDevice, SimDevice, SimDevice]
  const kinds = (d: SimDevice) => [...new Set((validator.db.prepare('SELECT kind FROM evidence WHERE device = ?').all(d.id) as Array<{ kind: string }>).map(r => r.kind))].sort()
  await until(
    () => kinds(fork).length > 0 && kinds(forge).length > 0 && validator.snapshot().duplicates >= 1 && offline.counts.connects >= 2 && offline.counts.acked >= 4,
    20_000,
    'evidence and a device back from offline',
  )
  t.same(kinds(fork), ['fork'], 'a heartbeat not chained to its predecessor')
  t.same(kinds(forge), ['forged-beacon'], 'a beacon hash the validator never signed')
  // Byte for byte what the device signed (a resend after a crash looks the same): a
  // duplicate that earns nothing, and nothing against the device.
  t.same(kinds(replay), [], 'an old heartbeat published again is no evidence')
  t.same(kinds(offline), [], 'a device that was offline for a while is not a cheat')
  t.same(kinds(honest), [])
  t.ok(fork.counts.forks >= 1 && forge.counts.forgedBeacons >= 1 && replay.counts.replays >= 1)
})

t.test('--telemetry-period: samples carry an empty outbox backlog; backlog:WHO a large, old, growing one', async t => {
  const broker = await startBroker()
  t.teardown(() => broker.close())
  const fleet = 'backlog'
  const consumer = await Consumer.connect(broker.url, `cairn/v1/${fleet}/+/telemetry`, { protocolVersion: broker.mqtt5 ? 5 : 4 })
  t.teardown(() => consumer.close())
  const sim = startSim({
    devices: 3,
    brokerUrl: broker.url,
    fleet,
    validators: [],
    mqtt: { protocolVersion: broker.mqtt5 ? 5 : 4 },
    periodS: 60,
    telemetryPeriodS: 1,
    rampPerS: 1000,
    misbehave: [parseMisbehaviour('backlog:@1')],
  })
  t.teardown(() => sim.stop())
  await sim.ready
  const [honest, stuck] = [sim.devices[0]!, sim.devices[1]!]
  t.same(stuck.faultNames(), ['backlog'])
  t.same(honest.faultNames(), [])
  const of = (id: string) => consumer.messages.filter(m => m.topic.endsWith(`/${id}/telemetry`)).map(m => m.json as unknown as TelemetryMessage)
  await consumer.waitFor(() => of(stuck.id).length >= 3 && of(honest.id).length >= 1, 20_000, 'three samples from the backlogged device, one from an honest one')
  for (const m of [...of(honest.id), ...of(stuck.id)]) t.equal(schemaErrors('telemetry', m), null, 'matches docs/schemas/telemetry.json')
  t.same(of(honest.id)[0]!.outbox, { queued: 0, bytes: 0 }, 'an honest device: nothing waits')
  const samples = of(stuck.id)
  const first = samples[0]!.outbox!
  const last = samples[samples.length - 1]!.outbox!
  t.ok(first.queued >= 3600 && first.bytes > 1_000_000, `thousands of messages queued: ${JSON.stringify(first)}`)
  t.ok(samples[0]!.ts - first.oldestTs! >= 3_600_000, 'the oldest queued an hour or more before the sample')
  t.ok(last.queued > first.queued && last.bytes > first.bytes, `growing: ${first.queued} then ${last.queued}`)
  t.equal(last.oldestTs, first.oldestTs, 'the oldest stays where it was: nothing is delivered')
})

t.test('--telemetry-period: every Pi reports its status LED, one Pi in four also lent lines; a Jetson no io', async t => {
  const broker = await startBroker()
  t.teardown(() => broker.close())
  const fleet = 'gpio'
  const consumer = await Consumer.connect(broker.url, `cairn/v1/${fleet}/+/telemetry`, { protocolVersion: broker.mqtt5 ? 5 : 4 })
  t.teardown(() => consumer.close())
  // Boards go Pi 4, Pi 5, Jetson, ...: 0 is a Pi 4 and 4 a Pi 5 that lend lines, 1 and 3 Pis that do not, 2 and 5 Jetsons.
  const sim = startSim({ devices: 6, brokerUrl: broker.url, fleet, validators: [], mqtt: { protocolVersion: broker.mqtt5 ? 5 : 4 }, periodS: 60, telemetryPeriodS: 1, rampPerS: 1000 })
  t.teardown(() => sim.stop())
  await sim.ready
  const of = (d: SimDevice) => consumer.messages.filter(m => m.topic.endsWith(`/${d.id}/telemetry`)).map(m => m.json as unknown as TelemetryMessage)
  await consumer.waitFor(() => sim.devices.every(d => of(d).length >= 2), 20_000, 'two samples from every device')
  for (const d of sim.devices) for (const m of of(d)) t.equal(schemaErrors('telemetry', m), null, 'matches docs/schemas/telemetry.json')
  const boards = sim.devices.map(d => of(d)[0]!.sample.board.kind)
  t.same(boards, ['rpi4', 'rpi5', 'jetson-orin', 'rpi4', 'rpi5', 'jetson-orin'])
  const led = { pin: 17, shown: 'online', source: 'agent' }
  for (const i of [0, 1, 3, 4]) {
    for (const m of of(sim.devices[i]!)) {
      t.same(m.io!.led, led, `Pi ${i}: the status LED, online`)
      t.match(m.io!.lines[0], { pin: 17, holder: 'led', direction: 'out', value: Number }, `Pi ${i}: its line`)
    }
  }
  for (const i of [1, 3]) t.equal(of(sim.devices[i]!)[0]!.io!.lines.length, 1, `Pi ${i}: no lent lines`)
  for (const i of [0, 4]) {
    t.same(
      of(sim.devices[i]!)[0]!.io!.lines.slice(1),
      [
        { pin: 22, holder: 'local-api', direction: 'out', value: 0 },
        { pin: 23, holder: 'local-api', direction: 'in', value: 1 },
      ],
      `Pi ${i}: a relay off and a door closed, in the first seconds`,
    )
  }
  for (const i of [2, 5])
    t.ok(
      of(sim.devices[i]!).every(m => !('io' in m)),
      `Jetson ${i}: no io (no LED configured)`,
    )
})

t.test('stop() ends even when the broker answers nothing (a hung broker)', async t => {
  const broker = await startBroker()
  t.teardown(() => broker.close())
  if (broker.kind !== 'mosquitto') return t.comment('SKIPPED: freezing a broker needs mosquitto (the embedded one runs in this process)')
  const sim = startSim({ devices: 3, brokerUrl: broker.url, fleet: 'hung', validators: [], mqtt: { protocolVersion: 5 }, periodS: 60, telemetryPeriodS: 60, rampPerS: 1000 })
  await sim.ready
  await until(() => sim.devices.every(d => d.connected), 30_000, 'three devices connected')
  // connections open, nothing acknowledged: the offline status a stop publishes never gets its PUBACK
  broker.freeze()
  const stats = await sim.stop()
  broker.thaw()
  t.equal(stats.devices, 3, 'stop() returned (after the grace), the devices cut off')
})

t.test('cairn sim CLI: runs for --duration and prints a final summary', async t => {
  const broker = await startBroker()
  t.teardown(() => broker.close())
  const dir = tmp('cairn-sim-cli-')
  const summary = join(dir, 'summary.json')
  const r = spawnSync(
    process.execPath,
    [CLI, 'sim', '--devices', '3', '--broker', broker.url, '--fleet', 'test', '--period', '1', '--duration', '2.5', '--status-every', '1', '--misbehave', 'fork:@1:1', '--summary-file', summary],
    { encoding: 'utf8', timeout: 20_000 },
  )
  t.equal(r.status, 0, r.stderr)
  const lines = r.stdout
    .trim()
    .split('\n')
    .map(l => JSON.parse(l) as Record<string, unknown>)
  t.equal(lines[0]!.event, 'sim.started')
  t.ok(
    lines.some(l => l.event === 'sim.status'),
    'status lines',
  )
  const last = lines[lines.length - 1]! as { event: string; reason: string; totals: { heartbeats: number; acked: number; forks: number } }
  t.equal(last.event, 'sim.summary')
  t.equal(last.reason, 'duration')
  t.ok(last.totals.acked >= 3, 'heartbeats on the period timer alone')
  t.equal(last.totals.acked, last.totals.heartbeats)
  t.ok(last.totals.forks >= 1)
  t.match(r.stderr, /no --validator-key/)

  // Out of file descriptors: a clear message naming the fix, exit 1, no hang.
  const script = `ulimit -n 60; exec "$0" "$@"`
  const e = spawnSync('bash', ['-c', script, process.execPath, CLI, 'sim', '--devices', '200', '--broker', broker.url, '--fleet', 'test', '--ramp', '1000', '--duration', '10'], {
    encoding: 'utf8',
    timeout: 20_000,
  })
  t.equal(e.status, 1, e.stderr)
  t.match(e.stderr, /limit here is 60/, 'warned before starting')
  t.match(e.stderr, /out of file descriptors \(EMFILE\).*ulimit -n/)
  t.match(e.stdout, /"reason":"fatal"/)
})
