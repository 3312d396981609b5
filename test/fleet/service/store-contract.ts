// The contract every fleet store keeps (fleet/service/fleet-store.ts), run against each
// implementation (sqlite-store.test.ts today; the PostgreSQL store when it comes), as
// MQTT.js runs one abstract store suite against each of its stores.

import type { Test } from 'tap'
import { METRICS, type FleetStore, type MetricValues, type OtaPhase, type ReleaseSummary, type StatusRecord } from '../../../fleet/service/fleet-store.js'
import { ALERTS, DEFAULT_ALERT_RULES, alertsOf } from '../../../fleet/service/alerts.js'

const DEV = (n: number) => `${'a'.repeat(51)}${'abcdefghijklmnopqrstuvwxyz234567'[n]}`
const T0 = Date.UTC(2026, 11, 7, 10, 0, 0)
const MIN = 60_000
const HOUR = 3_600_000

const status = (device: string, o: Partial<StatusRecord> & { id: string; state: 'online' | 'offline'; key: StatusRecord['key'] }): StatusRecord => ({
  device,
  receivedAt: T0,
  board: 'rpi5',
  model: 'Raspberry Pi 5 Model B Rev 1.0',
  version: '1.0.0',
  problems: [],
  ...o,
})

const values = (v: Partial<Record<(typeof METRICS)[number], number>>): MetricValues => Object.fromEntries(METRICS.map(m => [m, v[m] ?? null])) as MetricValues

export function storeContract(t: Test, make: () => Promise<FleetStore>): void {
  const open = async (t: Test) => {
    const store = await make()
    t.teardown(() => store.close())
    return store
  }

  t.test('presence: ordered by (since, conn, offline after online, ts), not by arrival', async t => {
    const s = await open(t)
    const d = DEV(0)
    // connection 1 of the agent started at T0: its online, then its Will (made at connect,
    // so its ts is older than the online's) arriving first at another process
    const online1 = status(d, { id: 'on-1', state: 'online', key: [T0, T0 + 10, 0, T0 + 20] })
    const will1 = status(d, { id: 'will-1', state: 'offline', reason: 'connection-lost', key: [T0, T0 + 10, 1, T0 + 10] })
    t.equal(await s.applyStatus(will1), true, 'a new device, offline')
    t.equal(await s.applyStatus(online1), false, "the connection's online status came late: the Will stands")
    t.match(await s.getDevice(d), { state: 'offline', reason: 'connection-lost' })
    t.equal(await s.applyStatus(will1), false, 'the same message again changes nothing')
    const online2 = status(d, { id: 'on-2', state: 'online', key: [T0, T0 + 5000, 0, T0 + 5010], version: '1.0.1' })
    t.equal(await s.applyStatus(online2), true, 'the next connection is online')
    t.match(await s.getDevice(d), { state: 'online', reason: null, version: '1.0.1', stateSince: T0 + 5010 })
    // a republished online status (problems changed) keeps the state's start
    await s.applyStatus(status(d, { id: 'on-2b', state: 'online', key: [T0, T0 + 5000, 0, T0 + 6000], problems: ['REMOTE_CONFIG_REJECTED'] }))
    t.match(await s.getDevice(d), { state: 'online', stateSince: T0 + 5010, problems: ['REMOTE_CONFIG_REJECTED'] })
    // a restarted agent (a later since) after a clean shutdown
    await s.applyStatus(status(d, { id: 'off-3', state: 'offline', reason: 'shutdown', key: [T0, T0 + 5000, 1, T0 + 9000] }))
    await s.applyStatus(status(d, { id: 'on-4', state: 'online', key: [T0 + 10_000, T0 + 10_050, 0, T0 + 10_060] }))
    t.same(
      (await s.transitions(d, 0, T0 + HOUR, 100)).map(x => [x.state, x.reason]),
      [
        ['online', null],
        ['offline', 'connection-lost'],
        ['online', null],
        ['offline', 'shutdown'],
        ['online', null],
      ],
      "the history in the device's order, the late online included",
    )
    t.same(await s.counts(), { devices: 1, online: 1, offline: 0, updating: 0 })
  })

  t.test("a device's update phase and score from what was kept before its first status; the OS updater's events apart", async t => {
    const s = await open(t)
    const d = DEV(12)
    await s.addEvent({ device: d, id: 'x-e1', ts: T0, kind: 'ota.rolled-back', data: '{"version":"2.0.0","reason":"crash-loop"}', ota: { phase: 'rolled-back', version: '2.0.0', target: 'agent' } })
    await s.addEvent({ device: d, id: 'x-e2', ts: T0 + 1, kind: 'ota.committed', data: '{"version":"7.0.0","target":"os"}', ota: { phase: 'committed', version: '7.0.0', target: 'os' } })
    await s.addAttestation({ validator: 'v'.repeat(52), device: d, epoch: 3, score: 600_000, fraud: false, receivedAt: T0, payload: '{}' })
    t.equal(await s.getDevice(d), undefined, 'no row yet: another process took its status')
    await s.applyStatus(status(d, { id: 'x-on', state: 'online', key: [T0, T0, 0, T0] }))
    t.match(await s.getDevice(d), { ota: { phase: 'rolled-back', version: '2.0.0', at: T0 }, score: { ppm: 600_000, epoch: 3 } }, "its row has them, and not the OS updater's commit")
  })

  t.test('ingest: several messages in one transaction, each as alone; all or none', async t => {
    const s = await open(t)
    const d = DEV(9)
    const will = status(d, { id: 'b-will', state: 'offline', reason: 'connection-lost', key: [T0, T0 + 10, 1, T0 + 10] })
    const online = status(d, { id: 'b-on', state: 'online', key: [T0, T0 + 10, 0, T0 + 20] })
    const sample = (id: string, ts: number, tempC: number) => ({ kind: 'telemetry' as const, record: { device: d, id, ts, receivedAt: T0, values: values({ tempC }) } })
    const changed = await s.ingest([
      { kind: 'status', record: will },
      { kind: 'status', record: online },
      sample('b-t1', T0 + 30, 50),
      sample('b-t1', T0 + 30, 50),
      sample('b-t0', T0 + 25, 70),
      { kind: 'event', record: { device: d, id: 'b-e1', ts: T0 + 40, kind: 'k', data: '{}' } },
      { kind: 'status', record: will },
    ])
    t.same(changed, [true, false, false, false, false, false, false], 'the Will made the device (a change), its late online and the Will again did not')
    t.match(await s.getDevice(d), { state: 'offline', reason: 'connection-lost', latest: { tempC: 50 } }, 'as one message at a time: the Will stands, the newest sample shows')
    t.equal((await s.series(d, 'raw', T0, T0 + MIN, 100)).length, 2, 'a sample twice in one batch is kept once')
    t.equal((await s.events({ device: d, from: T0, to: T0 + MIN, limit: 10 })).length, 1)
    // a batch whose last message cannot be stored: none of it is
    const bad = { kind: 'event' as const, record: { device: d, id: 'b-e3', ts: T0 + 50, kind: 'k', data: null as unknown as string } }
    await t.rejects(s.ingest([{ kind: 'event', record: { device: d, id: 'b-e2', ts: T0 + 45, kind: 'k', data: '{}' } }, bad]), 'a write that fails fails the batch')
    t.equal((await s.events({ device: d, from: T0, to: T0 + MIN, limit: 10 })).length, 1, 'and nothing of it was kept')
  })

  t.test("ingest: a device's samples in one batch go on its row as one at a time would: the newest by its time, not the last to arrive", async t => {
    const s = await open(t)
    const d = DEV(10)
    const fresh = DEV(11)
    await s.applyStatus(status(d, { id: 'n-on', state: 'online', key: [T0, T0, 0, T0], receivedAt: T0 }))
    // every metric its own value: each goes to its own column, in the row and the series
    const all = (base: number): MetricValues => Object.fromEntries(METRICS.map((m, i) => [m, base + i])) as MetricValues
    const sample = (device: string, id: string, ts: number, receivedAt: number, v: MetricValues) => ({ kind: 'telemetry' as const, record: { device, id, ts, receivedAt, values: v } })
    await s.ingest([
      sample(d, 'n-1', T0 + 20, T0 + 100, all(100)),
      sample(d, 'n-2', T0 + 10, T0 + 200, all(200)),
      sample(d, 'n-3', T0 + 30, T0 + 300, all(300)),
      sample(d, 'n-4', T0 + 25, T0 + 400, all(400)),
      sample(fresh, 'f-1', T0 + 5, T0 + 500, all(500)),
      { kind: 'status', record: status(fresh, { id: 'f-on', state: 'online', key: [T0, T0, 0, T0], receivedAt: T0 + 600 }) },
      sample(fresh, 'f-2', T0 + 1, T0 + 700, all(700)),
    ])
    t.match(await s.getDevice(d), { telemetryTs: T0 + 30, latest: all(300), lastSeen: T0 + 300 }, 'the newest sample (n-3); last seen when the last newer one came, not the late ones')
    t.same(
      (await s.series(d, 'raw', T0, T0 + MIN, 10)).map(p => p.values),
      [all(200), all(100), all(400), all(300)],
      'all four kept, in their time order, every value in its column',
    )
    t.match(await s.getDevice(fresh), { telemetryTs: T0 + 1, latest: all(700), lastSeen: T0 + 700 }, 'a sample before its first status had no row to go on; the one after it did')
  })

  t.test('telemetry: the newest sample on the device, raw series, rollups and retention on a stepped clock', async t => {
    const s = await open(t)
    const d = DEV(1)
    await s.applyStatus(status(d, { id: 'on', state: 'online', key: [T0, T0, 0, T0] }))
    // two hours of samples every 10 s: tempC climbs 1 degree a minute
    for (let ts = T0; ts < T0 + 2 * HOUR; ts += 10_000) await s.addTelemetry({ device: d, id: `t${ts}`, ts, receivedAt: ts, values: values({ tempC: 40 + Math.floor((ts - T0) / MIN), load1: 1 }) })
    await s.addTelemetry({ device: d, id: `t${T0}`, ts: T0, receivedAt: T0, values: values({ tempC: 99 }) })
    await s.addTelemetry({ device: d, id: 'late', ts: T0 + 5, receivedAt: T0 + 3 * HOUR, values: values({ tempC: 0 }) })
    const dev = await s.getDevice(d)
    t.equal(dev?.telemetryTs, T0 + 2 * HOUR - 10_000, 'the newest sample, not the last to arrive')
    t.equal(dev?.latest?.tempC, 40 + 119)
    const raw = await s.series(d, 'raw', T0, T0 + MIN - 1, 100)
    t.same(
      raw.map(p => p.values.tempC),
      [40, 0, 40, 40, 40, 40, 40],
      'raw: a redelivered id counted once, the late sample in its place',
    )
    const rolled = await s.maintain(T0 + 2 * HOUR + 30_000, { rawMs: 48 * HOUR, minuteMs: 30 * 24 * HOUR, hourMs: 365 * 24 * HOUR })
    t.equal(rolled.minutes, 120, 'every closed minute rolled up once')
    t.equal(rolled.hours, 2, 'and both hours')
    const minutes = await s.series(d, '1m', T0, T0 + 2 * HOUR, 1000)
    t.equal(minutes.length, 120)
    t.equal(minutes[0]!.values.tempC, (40 * 6 + 0) / 7, 'a minute: the average of its samples')
    t.equal(minutes[5]!.values.tempC, 45)
    const hours = await s.series(d, '1h', T0, T0 + 2 * HOUR, 10)
    t.equal(hours.length, 2)
    t.ok(Math.abs(hours[1]!.values.tempC! - (40 + 60 + 29.5)) < 1e-9, 'an hour: the sample-weighted average of its minutes')
    t.equal(hours[0]!.values.powerW, null, 'a metric the board has not: null, not 0')
    const again = await s.maintain(T0 + 2 * HOUR + 40_000, { rawMs: 48 * HOUR, minuteMs: 30 * 24 * HOUR, hourMs: 365 * 24 * HOUR })
    t.same([again.minutes, again.hours], [0, 0], 'nothing rolled up twice')
    const later = await s.maintain(T0 + 3 * HOUR, { rawMs: HOUR, minuteMs: 30 * 24 * HOUR, hourMs: 365 * 24 * HOUR })
    t.ok(later.deleted > 0, 'raw samples past retention are deleted')
    const buckets = await s.series(d, '1m', T0, T0 + 2 * HOUR, 1000, 30 * MIN)
    t.same(
      buckets.map(p => p.ts),
      [T0, T0 + 30 * MIN, T0 + 60 * MIN, T0 + 90 * MIN],
      'bucketed: two hours of minutes in four half-hour points, at the buckets’ starts',
    )
    t.same(await s.series(d, 'raw', T0, T0 + HOUR, 10), [], 'the first hour of raw samples is gone')
    t.equal((await s.series(d, '1m', T0, T0 + HOUR - 1, 1000)).length, 60, 'its minutes stay')
  })

  t.test('telemetry: the GPIO lines, status LED and outbox backlog of the newest sample on the device', async t => {
    const s = await open(t)
    const d = DEV(2)
    await s.applyStatus(status(d, { id: 'on', state: 'online', key: [T0, T0, 0, T0] }))
    t.match(await s.getDevice(d), { io: null, outbox: null }, 'nothing reported yet')
    const io = {
      led: { pin: 17, shown: 'online', source: 'agent' },
      lines: [
        { pin: 17, holder: 'led', direction: 'out', value: 1 },
        { pin: 22, holder: 'local-api', direction: 'in' },
      ],
    }
    await s.addTelemetry({ device: d, id: 'a', ts: T0 + 2, receivedAt: T0, values: values({}), io: JSON.stringify(io), outbox: { queued: 2, bytes: 600, oldestTs: T0 } })
    await s.addTelemetry({ device: d, id: 'b', ts: T0 + 1, receivedAt: T0, values: values({}), io: JSON.stringify({ lines: [] }), outbox: { queued: 9, bytes: 9, oldestTs: null } })
    t.match(await s.getDevice(d), { io, outbox: { queued: 2, bytes: 600, oldestTs: T0 } }, 'from the newest sample, not the last to arrive')
    await s.addTelemetry({ device: d, id: 'c', ts: T0 + 3, receivedAt: T0, values: values({}) })
    t.match(await s.getDevice(d), { io: null, outbox: null }, 'a newer sample without them: none now')
    // several in one batch: the newest by the device's time, whatever their order
    const tel = (id: string, ts: number, queued: number) => ({
      kind: 'telemetry' as const,
      record: {
        device: d,
        id,
        ts,
        receivedAt: T0,
        values: values({}),
        io: JSON.stringify({ lines: [{ pin: queued, holder: 'local-api', direction: 'out', value: 1 }] }),
        outbox: { queued, bytes: 1, oldestTs: null },
      },
    })
    await s.ingest([tel('d', T0 + 10, 10), tel('e', T0 + 12, 12), tel('f', T0 + 11, 11)])
    t.match(await s.getDevice(d), { telemetryTs: T0 + 12, outbox: { queued: 12 }, io: { lines: [{ pin: 12 }] } }, 'a batch: the newest sample of it stands')
  })

  t.test('devices: search, filter, sort, page; labels', async t => {
    const s = await open(t)
    for (let i = 0; i < 12; i++) {
      const d = DEV(i)
      await s.applyStatus(
        status(d, { id: `on${i}`, state: i % 3 === 0 ? 'offline' : 'online', key: [T0, T0, i % 3 === 0 ? 1 : 0, T0], board: i < 4 ? 'jetson-orin' : 'rpi5', version: i < 6 ? '1.0.0' : '1.1.0' }),
      )
      await s.addTelemetry({ device: d, id: `t${i}`, ts: T0 + i, receivedAt: T0, values: values({ tempC: 30 + i }) })
    }
    t.same(await s.counts(), { devices: 12, online: 8, offline: 4, updating: 0 })
    const page1 = await s.listDevices({ sort: 'tempC', order: 'desc', offset: 0, limit: 5 })
    t.equal(page1.total, 12)
    t.same(
      page1.items.map(d => d.latest?.tempC),
      [41, 40, 39, 38, 37],
    )
    const page3 = await s.listDevices({ sort: 'tempC', order: 'desc', offset: 10, limit: 5 })
    t.same(
      page3.items.map(d => d.latest?.tempC),
      [31, 30],
      'the last page',
    )
    t.equal((await s.listDevices({ state: 'offline', sort: 'id', order: 'asc', offset: 0, limit: 50 })).total, 4)
    t.equal((await s.listDevices({ board: 'jetson-orin', version: '1.0.0', sort: 'id', order: 'asc', offset: 0, limit: 50 })).total, 4)
    t.equal((await s.listDevices({ search: 'orin', sort: 'id', order: 'asc', offset: 0, limit: 50 })).total, 4, 'search reaches the board')
    t.equal((await s.listDevices({ search: '%', sort: 'id', order: 'asc', offset: 0, limit: 50 })).total, 0, 'LIKE wildcards in a search are literal')
    t.equal(await s.setLabels(DEV(2), { site: 'berlin', rack: 'r1' }), true)
    t.equal(await s.setLabels('z'.repeat(52), { site: 'x' }), false, 'an unknown device: false')
    t.same((await s.getDevice(DEV(2)))?.labels, { rack: 'r1', site: 'berlin' })
    t.same(
      (await s.listDevices({ label: 'site=berlin', sort: 'id', order: 'asc', offset: 0, limit: 50 })).items.map(d => d.id),
      [DEV(2)],
    )
    t.equal((await s.listDevices({ label: 'rack', sort: 'id', order: 'asc', offset: 0, limit: 50 })).total, 1, 'a label key alone')
    t.equal((await s.listDevices({ label: 'site=paris', sort: 'id', order: 'asc', offset: 0, limit: 50 })).total, 0)
  })

  t.test('alerts: filtered and counted in the store, as alertsOf names them on a row', async t => {
    const s = await open(t)
    const rules = DEFAULT_ALERT_RULES
    const now = T0 + HOUR
    const ota = (phase: OtaPhase, kind: string, ts: number) => async (d: string) =>
      s.addEvent({ device: d, id: `o${ts}${d.slice(-1)}`, ts, kind, data: '{"version":"2.0.0"}', ota: { phase, version: '2.0.0', target: 'agent' } })
    const attestBy = (v: string, epoch: number, score: number) => async (d: string) =>
      void (await s.addAttestation({ validator: v.repeat(52), device: d, epoch, score, fraud: false, receivedAt: T0, payload: '{}' }))
    const attest = (epoch: number, score: number) => attestBy('v', epoch, score)
    // a telemetry sample at `ts` reporting this backlog
    const backlog =
      (queued: number, oldestTs: number | null, ts = T0 - 1000, tag = '') =>
      async (d: string) =>
        s.addTelemetry({ device: d, id: `b${tag}${d.slice(-4)}`, ts, receivedAt: T0, values: values({}), outbox: { queued, bytes: queued * 300, oldestTs } })
    // [state, since, telemetry, problems, the alerts expected, updater events and attestations]
    type Then = (d: string) => Promise<unknown>
    const cases: Array<[string, 'online' | 'offline', number, Partial<Record<(typeof METRICS)[number], number>> | null, string[], string[], Then[]?]> = [
      ['well', 'online', T0, { tempC: 50, diskPercent: 40, throttled: 0, underVoltage: 0 }, [], []],
      ['offline long', 'offline', T0, null, [], ['offline']],
      ['offline a moment (a reboot)', 'offline', now - 60_000, null, [], []],
      ['hot and throttled', 'online', T0, { tempC: 85, throttled: 1 }, [], ['throttled', 'hot']],
      ['short of power', 'online', T0, { underVoltage: 1, diskPercent: 95 }, [], ['under-voltage', 'disk']],
      ['hot but offline: no longer hot', 'offline', now - 60_000, { tempC: 90 }, [], []],
      ['a problem', 'online', T0, null, ['DISK_FULL'], ['problem']],
      ['an update rolled back', 'online', T0, null, [], ['update-failed'], [ota('rolled-back', 'ota.rolled-back', T0)]],
      ['rolled back, then a later one committed', 'online', T0, null, [], [], [ota('committed', 'ota.committed', T0 + 2), ota('rolled-back', 'ota.rolled-back', T0 + 1)]],
      ['an update under way', 'online', T0, null, [], [], [ota('downloading', 'ota.download', T0)]],
      ['a low uptime score', 'online', T0, null, [], ['low-score'], [attest(5, 850_000)]],
      ['a good score, an older low one', 'online', T0, null, [], [], [attest(5, 990_000), attest(4, 500_000)]],
      ['two validators, one epoch: the lower stands', 'online', T0, null, [], ['low-score'], [attest(6, 990_000), attestBy('w', 6, 700_000)]],
      ['an outbox backlog: many queued', 'online', T0, null, [], ['outbox-backlog'], [backlog(rules.outboxQueued, null)]],
      ['an outbox backlog: one waiting long', 'online', T0, null, [], ['outbox-backlog'], [backlog(3, T0 - 1000 - rules.outboxAgeMs)]],
      ['a small, young backlog', 'online', T0, null, [], [], [backlog(rules.outboxQueued - 1, T0 - 1000 - rules.outboxAgeMs + 1)]],
      ['a backlog, then a newer sample without one', 'online', T0, null, [], [], [backlog(5000, null, T0 - 2000), backlog(0, null, T0 - 1000, 'a')]],
      ['a backlog but offline', 'offline', now - 60_000, null, [], [], [backlog(5000, null)]],
    ]
    for (const [i, [, state, since, v, problems]] of cases.entries()) {
      const d = DEV(i)
      await s.applyStatus(status(d, { id: `on${i}`, state: 'online', key: [T0 - HOUR, T0 - HOUR, 0, T0 - HOUR], problems }))
      if (v) await s.addTelemetry({ device: d, id: `t${i}`, ts: T0 - 1000, receivedAt: T0, values: values(v) })
      if (state === 'offline') await s.applyStatus(status(d, { id: `off${i}`, state: 'offline', reason: 'connection-lost', key: [T0 - HOUR, T0 - HOUR, 1, since], problems }))
      for (const then of cases[i]![6] ?? []) await then(d)
    }
    t.match((await s.getDevice(DEV(8)))!, { ota: { phase: 'committed', version: '2.0.0', at: T0 + 2 } }, 'the newest updater event stands, whatever the order it came in')
    t.match((await s.getDevice(DEV(11)))!, { score: { ppm: 990_000, epoch: 5 } }, 'the newest epoch stands, whatever the order it came in')
    t.equal((await s.getDevice(DEV(0)))!.ota, null, 'no updater event: no update shown')
    t.equal((await s.counts()).updating, 1, 'one device updating (downloading)')
    for (const [i, [what, , , , , expected]] of cases.entries()) {
      const row = (await s.getDevice(DEV(i)))!
      t.same(alertsOf(row, rules, now), expected, `${what}: ${expected.join(', ') || 'no alert'}`)
    }
    const counts = await s.alertCounts(rules, now)
    for (const kind of ALERTS) {
      const want = cases.filter(c => c[5].includes(kind)).map((_, i) => i)
      const ids = (await s.listDevices({ alert: { kind, rules, now }, sort: 'id', order: 'asc', offset: 0, limit: 50 })).items.map(d => d.id)
      t.same(
        ids,
        cases.flatMap((c, i) => (c[5].includes(kind) ? [DEV(i)] : [])),
        `alert ${kind}: the same devices in SQL`,
      )
      t.equal(counts[kind], want.length, `alert ${kind}: counted`)
    }
    const any = cases.flatMap((c, i) => (c[5].length > 0 ? [DEV(i)] : []))
    t.same(
      (await s.listDevices({ alert: { kind: 'any', rules, now }, sort: 'id', order: 'asc', offset: 0, limit: 50 })).items.map(d => d.id),
      any,
      'any alert',
    )
    t.equal(counts.any, any.length)
  })

  t.test('events: de-duplicated by id, newest first, bounded', async t => {
    const s = await open(t)
    const d = DEV(3)
    for (let i = 0; i < 5; i++) await s.addEvent({ device: d, id: `e${i}`, ts: T0 + i, kind: 'ota.staged', data: JSON.stringify({ i, text: '<script>alert(1)</script>' }) })
    await s.addEvent({ device: d, id: 'e1', ts: T0 + 1, kind: 'ota.staged', data: '{"i":1}' })
    const evs = await s.events({ device: d, from: T0, to: T0 + MIN, limit: 3 })
    t.same(
      evs.map(e => e.id),
      ['e4', 'e3', 'e2'],
    )
    t.same(evs[0]!.data, { i: 4, text: '<script>alert(1)</script>' }, 'data comes back as it was stored: escaping is the renderer’s job')
    t.equal((await s.events({ from: T0, to: T0 + MIN, limit: 100 })).length, 5)
  })
  t.test('commands: logged once, the first verified reply kept, refusals counted, newest first, kept a year', async t => {
    const s = await open(t)
    const cmd = (id: string, device: string, sentAt: number) => ({ id, device, name: 'ping', operator: 'o'.repeat(52), by: 'loopback', sentAt, exp: sentAt + MIN, envelope: `{"id":"${id}"}` })
    t.equal(await s.addCommand(cmd('c0000001', DEV(1), T0)), true)
    t.equal(await s.addCommand(cmd('c0000001', DEV(1), T0 + 5)), false, 'the same id again: refused (a replay)')
    await s.addCommand(cmd('c0000002', DEV(1), T0 + 10))
    await s.addCommand(cmd('c0000003', DEV(2), T0 + 20))
    t.same(await s.commandTarget('c0000002'), { device: DEV(1), operator: 'o'.repeat(52) })
    t.equal(await s.commandTarget('nosuchone'), undefined)
    t.match(await s.getCommand('c0000001', T0 + 1), { state: 'sent', repliedAt: null, result: null, refused: 0, refusedWhy: null, envelope: '{"id":"c0000001"}', replyEnvelope: null })
    t.match(await s.getCommand('c0000001', T0 + MIN), { state: 'expired' }, 'no reply by its expiry: expired')
    await s.refuseReply('c0000001', 'BAD_SIGNATURE: signature does not verify')
    t.equal(await s.setReply('c0000001', { at: T0 + 2, status: 'ok', result: '{"pong":true}', envelope: 'R1' }), true)
    t.equal(await s.setReply('c0000001', { at: T0 + 3, status: 'error', result: '{"code":"X"}', envelope: 'R2' }), false, 'a second reply does not replace the first')
    t.match(await s.getCommand('c0000001', T0 + MIN), { state: 'ok', repliedAt: T0 + 2, result: { pong: true }, refused: 1, refusedWhy: /^BAD_SIGNATURE/, replyEnvelope: 'R1' })
    t.same(
      (await s.commands({ limit: 10, now: T0 })).map(c => c.id),
      ['c0000003', 'c0000002', 'c0000001'],
    )
    t.same(
      (await s.commands({ device: DEV(1), limit: 10, now: T0 })).map(c => c.id),
      ['c0000002', 'c0000001'],
    )
    t.same(
      (await s.commands({ before: { at: T0 + 10 }, limit: 10, now: T0 })).map(c => c.id),
      ['c0000001'],
      'before a time',
    )
    await s.maintain(T0 + 366 * 24 * HOUR, { rawMs: HOUR, minuteMs: HOUR, hourMs: 365 * 24 * HOUR })
    t.same(await s.commands({ limit: 10, now: T0 }), [], 'dropped with the hourly telemetry, after a year')
  })
  t.test('pages of commands, receipts and events: rows of one millisecond neither skipped nor repeated', async t => {
    const s = await open(t)
    const d = DEV(7)
    // five of each in the same millisecond, one older
    const ids = ['c000000a', 'c000000b', 'c000000c', 'c000000d', 'c000000e']
    for (const id of ids) {
      await s.addCommand({ id, device: d, name: 'ping', operator: 'o'.repeat(52), by: 'loopback', sentAt: T0 + 5, exp: T0 + MIN, envelope: '{}' })
      await s.addReceipt({ device: d, id, task: 't', type: 'cache', outcome: 'done', dispatcher: 'd'.repeat(52), finished: T0 + 5, receivedAt: T0, payload: '{}' })
      await s.addEvent({ device: d, id, ts: T0 + 5, kind: 'k', data: '{}' })
      await s.addEvent({ device: DEV(8), id, ts: T0 + 5, kind: 'k', data: '{}' })
    }
    await s.addCommand({ id: 'c0000009', device: d, name: 'ping', operator: 'o'.repeat(52), by: 'loopback', sentAt: T0, exp: T0 + MIN, envelope: '{}' })
    await s.addReceipt({ device: d, id: 'c0000009', task: 't', type: 'cache', outcome: 'done', dispatcher: 'd'.repeat(52), finished: T0, receivedAt: T0, payload: '{}' })
    await s.addEvent({ device: d, id: 'c0000009', ts: T0, kind: 'k', data: '{}' })
    const newestFirst = ['c000000e', 'c000000d', 'c000000c', 'c000000b', 'c000000a', 'c0000009']
    /** every page of two, each from the last row of the one before */
    const walk = async <R>(page: (before: { at: number; keys: string[] } | undefined) => Promise<R[]>, cursor: (r: R) => { at: number; keys: string[] }) => {
      const all: R[] = []
      let before: { at: number; keys: string[] } | undefined
      for (let i = 0; i < 10; i++) {
        const rows = await page(before)
        all.push(...rows)
        if (rows.length < 2) break
        before = cursor(rows[rows.length - 1]!)
      }
      return all
    }
    t.same(
      (
        await walk(
          b => s.commands({ device: d, ...(b ? { before: b } : {}), limit: 2, now: T0 }),
          c => ({ at: c.sentAt, keys: [c.id] }),
        )
      ).map(c => c.id),
      newestFirst,
      'commands: every one once, in order',
    )
    t.same(
      (
        await walk(
          b => s.receipts({ device: d, ...(b ? { before: b } : {}), limit: 2 }),
          r => ({ at: r.finished, keys: [r.id] }),
        )
      ).map(r => r.id),
      newestFirst,
      'receipts: every one once, in order',
    )
    t.same(
      (
        await walk(
          b => s.events({ device: d, from: T0, to: T0 + MIN, ...(b ? { before: b } : {}), limit: 2 }),
          e => ({ at: e.ts, keys: [e.id] }),
        )
      ).map(e => e.id),
      newestFirst,
      "a device's events: every one once, in order",
    )
    const fleet = await walk(
      b => s.events({ from: T0, to: T0 + MIN, ...(b ? { before: b } : {}), limit: 2 }),
      e => ({ at: e.ts, keys: [e.device, e.id] }),
    )
    t.equal(fleet.length, 11, "the fleet's events: all 11 across two devices of one millisecond")
    t.equal(new Set(fleet.map(e => `${e.device}/${e.id}`)).size, 11, 'none twice')
    t.same(
      fleet.map(e => e.ts),
      [...fleet.map(e => e.ts)].sort((a, b) => b - a),
      'newest first',
    )
  })
  t.test('refusals: counted per device and kind, the same message (by hash) once; receipts and attestations once by id', async t => {
    const s = await open(t)
    const d = DEV(4)
    await s.addRefusal(d, 'attestation', 'UNTRUSTED_KEY: a', T0, 'h1')
    await s.addRefusal(d, 'attestation', 'UNTRUSTED_KEY: a', T0 + 1, 'h1')
    t.match(await s.refusals(d), [{ kind: 'attestation', count: 1, lastAt: T0 }], 'the same message again (a retained one redelivered, a second process) counts once')
    await s.addRefusal(d, 'attestation', 'BAD_SIGNATURE: b', T0 + 2, 'h2')
    await s.addRefusal(d, 'receipt', 'BAD_SIGNATURE: c', T0 + 3, 'h3')
    t.match(await s.refusals(d), [
      { kind: 'attestation', count: 2, lastReason: 'BAD_SIGNATURE: b' },
      { kind: 'receipt', count: 1 },
    ])
    t.equal(await s.refusedTotal('attestation'), 2)
    const r = { device: d, id: 'r0000001', task: 'task-1', type: 'cache', outcome: 'done' as const, dispatcher: 'd'.repeat(52), finished: T0, receivedAt: T0, payload: '{"x":1}' }
    t.equal(await s.addReceipt(r), true)
    t.equal(await s.addReceipt(r), false, 'a receipt kept once')
    t.match(await s.receipts({ device: d, limit: 10 }), [{ id: 'r0000001', payload: { x: 1 } }])
    const a = { validator: 'v'.repeat(52), device: d, epoch: 7, score: 990_000, fraud: false, receivedAt: T0, payload: '{"y":2}' }
    t.equal(await s.addAttestation(a), true)
    t.equal(await s.addAttestation({ ...a, score: 1 }), false, "a validator's attestation of an epoch kept once (the first)")
    t.match(await s.attestations({ device: d, limit: 10 }), [{ epoch: 7, score: 990_000, payload: { y: 2 } }])
    t.match(await s.validatorStats(), [{ validator: 'v'.repeat(52), devices: 1, attestations: 1, lastEpoch: 7, meanScore: 990_000 }])
  })

  t.test('accounts: added once, changed field by field (a role change keeps a password set meanwhile), a new password ends sessions', async t => {
    const s = await open(t)
    t.equal(await s.putAccount({ name: 'otto', role: 'viewer', passwordHash: 'H1', created: T0 }), 'added')
    await s.addSession({ idHash: 'S1', account: 'otto', csrf: 'x'.repeat(32), created: T0, expires: T0 + HOUR })
    // two admins at once: one sets a password, the other (who read the account before) a role
    t.equal(await s.updateAccount('otto', { passwordHash: 'H2' }), true)
    t.equal(await s.getSession('S1', T0), undefined, 'the new password ended the session')
    t.equal(await s.updateAccount('otto', { role: 'operator' }), true)
    t.match(await s.getAccount('otto'), { role: 'operator', passwordHash: 'H2', created: T0 }, 'the role changed, the new password stayed')
    await s.addSession({ idHash: 'S2', account: 'otto', csrf: 'y'.repeat(32), created: T0, expires: T0 + HOUR })
    t.equal(await s.updateAccount('otto', { role: 'admin' }), true)
    t.match(await s.getSession('S2', T0), { account: 'otto', role: 'admin' }, 'a role change keeps the sessions, with the new role')
    t.equal(await s.updateAccount('nobody', { role: 'admin' }), false, 'no such account: false')
    t.equal(await s.updateAccount('nobody', { passwordHash: 'H3' }), false)
    t.equal(await s.accountCount(), 1, 'and none made')
    t.equal(await s.removeAccount('otto'), true)
    t.equal(await s.getSession('S2', T0), undefined, 'removed with its sessions')
  })

  t.test("rollouts: each device's newest updater event (not paused/pinned), devices by version", async t => {
    const s = await open(t)
    await s.applyStatus(status(DEV(5), { id: 's5', state: 'online', key: [T0, T0, 0, T0], version: '1.0.0' }))
    await s.applyStatus(status(DEV(6), { id: 's6', state: 'online', key: [T0, T0, 0, T0], version: '2.0.0' }))
    await s.addEvent({ device: DEV(5), id: 'o1', ts: T0, kind: 'ota.available', data: '{"version":"2.0.0"}' })
    await s.addEvent({ device: DEV(5), id: 'o2', ts: T0 + 1, kind: 'ota.rolled-back', data: '{"version":"2.0.0","reason":"crash-loop"}' })
    await s.addEvent({ device: DEV(5), id: 'o3', ts: T0 + 2, kind: 'ota.paused', data: '{"paused":true}' })
    await s.addEvent({ device: DEV(6), id: 'o4', ts: T0 + 3, kind: 'ota.committed', data: '{"version":"2.0.0"}' })
    await s.addEvent({ device: DEV(6), id: 'o5', ts: T0 + 4, kind: 'agent.started', data: '{}' })
    t.match(await s.otaLatest(10), [
      { device: DEV(6), kind: 'ota.committed' },
      { device: DEV(5), kind: 'ota.rolled-back', data: { reason: 'crash-loop' } },
    ])
    t.equal((await s.otaLatest(1)).length, 1, 'bounded')
    t.match(await s.versionCounts(), [
      { version: '1.0.0', devices: 1, online: 1 },
      { version: '2.0.0', devices: 1, online: 1 },
    ])
    t.same(await s.osVersionCounts(), [], 'no device on Cairn OS')
    await s.applyStatus(status(DEV(7), { id: 's7', state: 'online', key: [T0, T0, 0, T0], version: '1.0.0', osVersion: '7.1.0', osSlot: 'a' }))
    await s.applyStatus(status(DEV(7), { id: 's7o', state: 'offline', reason: 'shutdown', key: [T0, T0, 1, T0 + 1], version: '1.0.0', osVersion: '7.1.0', osSlot: 'a' }))
    t.same(await s.osVersionCounts(), [{ version: '7.1.0', devices: 1, online: 0 }], 'by Cairn OS release')
  })

  t.test('releases: each change of the published list kept once, withdrawn ones too; older metadata left out', async t => {
    const s = await open(t)
    const rel = (version: string, rollout: number, more: Partial<ReleaseSummary> = {}): ReleaseSummary => ({
      kind: 'agent',
      version,
      channel: 'stable',
      rollout,
      targets: 2,
      arch: ['x64', 'arm64'],
      boards: null,
      ...more,
    })
    const os = rel('7.0.0', 100, { kind: 'os', targets: 1, arch: null })
    const SRC = 'https://r.example/cairn'
    const rec = async (now: number, version: number, releases: ReleaseSummary[], source = SRC) => (await s.recordReleases(now, { source, version, releases })).added
    t.equal(await rec(T0, 1, [rel('1.4.0', 10), os]), 2, 'two new releases')
    t.equal(await rec(T0 + 1, 1, [rel('1.4.0', 10, { arch: ['arm64', 'x64'] }), os]), 0, 'the same listing again (in any order of arches): nothing new')
    t.equal(await rec(T0 + HOUR, 2, [rel('1.4.0', 50), os]), 1, 'a raised rollout')
    t.equal(await rec(T0 + HOUR, 2, [rel('1.4.0', 50), os]), 0, 'another process, the same instant')
    t.same(await s.recordReleases(T0 + HOUR + 5, { source: SRC, version: 1, releases: [rel('1.4.0', 10), os] }), { added: 0, stale: true }, "a slower process's older listing: stale, nothing changed")
    t.equal(await rec(T0 + 2 * HOUR, 3, [rel('1.4.0', 50), rel('1.5.0', 0, { channel: 'beta' })]), 2, 'the OS release withdrawn, a beta added')
    t.equal(await rec(T0 + 3 * HOUR, 4, [rel('1.4.0', 50), rel('1.5.0', 0, { channel: 'beta' })]), 0, 'withdrawn once')
    await t.rejects(s.recordReleases(T0 + 4 * HOUR, { source: SRC, version: 5, releases: [rel('1.4.0', 60), rel('1.4.0', 70)] }), { code: 'BAD_REQUEST' }, 'one release listed twice is a caller error')
    t.equal((await s.releases(10)).find(r => r.version === '1.4.0')?.rollout, 50, 'and nothing of it was kept')
    t.equal(await rec(T0 + 4 * HOUR, 1, [rel('1.4.0', 50), rel('1.5.0', 0, { channel: 'beta' })], 'https://other.example'), 0, 'versions are per repository')
    const all = await s.releases(10)
    t.match(
      all.map(r => [r.kind, r.version, r.channel, r.rollout, r.targets, r.firstSeen, r.changed]),
      [
        ['agent', '1.5.0', 'beta', 0, 2, T0 + 2 * HOUR, T0 + 2 * HOUR],
        ['os', '7.0.0', 'stable', 0, 0, T0, T0 + 2 * HOUR],
        ['agent', '1.4.0', 'stable', 50, 2, T0, T0 + HOUR],
      ],
      'newest first sight first; the withdrawn one has no targets',
    )
    t.same(all[2]!.arch, ['arm64', 'x64'])
    t.equal(all[1]!.boards, null)
    t.same(all[2]!.history, [
      { ts: T0, rollout: 10, targets: 2 },
      { ts: T0 + HOUR, rollout: 50, targets: 2 },
    ])
    t.same((await s.releases(1))[2]!.history, [{ ts: T0 + HOUR, rollout: 50, targets: 2 }], 'the newest changes, bounded; where it stands is the newest')
    t.equal((await s.releases(1))[2]!.firstSeen, T0, 'its first sight whatever the bound')
  })

  t.test('releases: the updates that ended, by release and updater, over time', async t => {
    const s = await open(t)
    const ev = (d: number, id: string, ts: number, phase: OtaPhase, version: string, target: 'agent' | 'os' = 'agent') =>
      s.addEvent({ device: DEV(d), id, ts, kind: `ota.${phase}`, data: JSON.stringify({ version, ...(target === 'os' ? { target } : {}) }), ota: { phase, version, target } })
    await ev(1, 'a', T0 + 1, 'committed', '2.0.0')
    await ev(1, 'a', T0 + 1, 'committed', '2.0.0') // a redelivery
    await ev(2, 'b', T0 + 2, 'rolled-back', '2.0.0')
    await ev(2, 'c', T0 + HOUR + 5, 'committed', '2.0.0')
    await ev(3, 'd', T0 + HOUR + 6, 'failed', '2.0.0')
    await ev(4, 'e', T0 + HOUR + 7, 'committed', '2.0.0', 'os')
    await ev(4, 'f', T0 + HOUR + 8, 'downloading', '2.0.0')
    await ev(5, 'g', T0 + 2 * HOUR, 'committed', '2.0.0')
    await ev(2, 'h', T0 + 2 * HOUR, 'rolled-back', '2.0.0')
    await ev(6, 'i', T0 + 2 * HOUR, 'failed', '6.6.6-junk')
    t.same(
      await s.outcomes({ kind: 'agent', version: '2.0.0', from: T0, to: T0 + 2 * HOUR, bucketMs: HOUR }),
      [
        { ts: T0, committed: 1, rolledBack: 1, failed: 0 },
        { ts: T0 + HOUR, committed: 1, rolledBack: 0, failed: 1 },
      ],
      'per hour, the end of the range excluded, the OS updater and unfinished updates apart',
    )
    t.same(await s.outcomes({ kind: 'os', version: '2.0.0', from: T0, to: T0 + 3 * HOUR, bucketMs: HOUR }), [{ ts: T0 + HOUR, committed: 1, rolledBack: 0, failed: 0 }])
    t.same(await s.outcomes({ kind: 'agent', version: '9.9.9', from: T0, to: T0 + 3 * HOUR, bucketMs: HOUR }), [])
    t.same(await s.outcomeTotals(), [], 'no release published: nothing counted (devices name any version they like)')
    await s.recordReleases(T0, {
      source: 'r',
      version: 1,
      releases: ['agent', 'os'].map(kind => ({ kind: kind as 'agent' | 'os', version: '2.0.0', channel: 'stable', rollout: 10, targets: 1, arch: null, boards: null })),
    })
    const sorted = async (q?: { before: number }) => (await s.outcomeTotals(q)).sort((a, b) => (a.kind < b.kind ? -1 : 1))
    t.same(
      await sorted(),
      [
        { kind: 'agent', version: '2.0.0', committed: 3, rolledBack: 2, failed: 1 },
        { kind: 'os', version: '2.0.0', committed: 1, rolledBack: 0, failed: 0 },
      ],
      'updates of the published releases, as the chart counts them (a device that rolled back twice, twice)',
    )
    t.same(await sorted({ before: T0 + HOUR }), [{ kind: 'agent', version: '2.0.0', committed: 1, rolledBack: 1, failed: 0 }], 'those before a time (where a chart starts)')
    const dropped = await s.maintain(T0 + 2 * HOUR + 366 * 24 * HOUR, { rawMs: 48 * HOUR, minuteMs: 30 * 24 * HOUR, hourMs: 365 * 24 * HOUR })
    t.ok(dropped.deleted >= 8, 'kept as long as the events')
    t.same(await s.outcomeTotals(), [])
  })
}
