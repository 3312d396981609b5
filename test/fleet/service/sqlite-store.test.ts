// The fleet store contract against the embedded SQLite store, and what only it has: one
// file shared by two connections (two `fleet serve` processes on one machine).

import t from 'tap'
import { statSync } from 'node:fs'
import { join } from 'node:path'
import Database from 'better-sqlite3'
import { SqliteFleetStore } from '../../../fleet/service/sqlite-store.js'
import { METRICS, type MetricValues } from '../../../fleet/service/fleet-store.js'
import { DEFAULT_ALERT_RULES } from '../../../fleet/service/alerts.js'
import { tmp } from '../../helpers/agent.js'
import { storeContract } from './store-contract.js'

storeContract(t, async () => new SqliteFleetStore(tmp('cairn-fleet-')))

t.test('two connections on one file: presence stays ordered whichever writes first; the file is 0600', async t => {
  const dir = tmp('cairn-fleet-')
  const a = new SqliteFleetStore(dir)
  const b = new SqliteFleetStore(dir)
  t.teardown(async () => {
    await a.close()
    await b.close()
  })
  const d = 'b'.repeat(52)
  const base = { device: d, receivedAt: 1, board: 'rpi4', model: 'Raspberry Pi 4 Model B Rev 1.4', version: '1.0.0', problems: [] }
  // the Will lands on b before the online status of the same connection lands on a
  await b.applyStatus({ ...base, id: 'will', state: 'offline', reason: 'connection-lost', key: [10, 20, 1, 20] })
  await a.applyStatus({ ...base, id: 'online', state: 'online', key: [10, 20, 0, 25] })
  t.match(await a.getDevice(d), { state: 'offline' }, 'offline, as the device last said')
  t.match(await b.getDevice(d), { state: 'offline' })
  t.equal(statSync(join(dir, 'fleet.db')).mode & 0o777, 0o600)
})

t.test("the schema steps that put each device's update phase and uptime score on its row, and count ended updates by release: from two versions back, filled from what was kept", async t => {
  const dir = tmp('cairn-fleet-')
  const d = 'c'.repeat(52)
  const s = new SqliteFleetStore(dir)
  const base = { device: d, receivedAt: 1, board: 'rpi4', model: 'Raspberry Pi 4 Model B Rev 1.4', version: '1.0.0', problems: [] }
  await s.applyStatus({ ...base, id: 'online', state: 'online', key: [10, 20, 0, 25] })
  await s.addEvent({ device: d, id: 'e0000001', ts: 100, kind: 'ota.download', data: '{"version":"2.0.0"}' })
  await s.addEvent({ device: d, id: 'e0000002', ts: 200, kind: 'ota.rolled-back', data: '{"version":"2.0.0","reason":"crash-loop"}' })
  await s.addEvent({ device: d, id: 'e0000003', ts: 300, kind: 'ota.paused', data: '{"paused":true}' })
  await s.addEvent({ device: d, id: 'e0000004', ts: 400, kind: 'ota.committed', data: '{"version":"7.1.0","target":"os"}' })
  await s.addEvent({ device: d, id: 'e0000005', ts: 500, kind: 'ota.failed', data: '{"version":3,"target":"os"}' })
  await s.addAttestation({ validator: 'v'.repeat(52), device: d, epoch: 7, score: 800_000, fraud: false, receivedAt: 1, payload: '{}' })
  await s.addAttestation({ validator: 'v'.repeat(52), device: d, epoch: 6, score: 990_000, fraud: false, receivedAt: 1, payload: '{}' })
  await s.close()
  // the file as the version before the step of update phase and score (5) left it: no
  // such columns, and none of the later steps' tables and columns (the raw-table step
  // takes the file as it finds it)
  const db = new Database(join(dir, 'fleet.db'))
  db.exec('DROP TABLE release_log; DROP TABLE ota_outcomes')
  for (const c of ['outbox_queued', 'outbox_bytes', 'outbox_oldest', 'io']) db.exec(`ALTER TABLE devices DROP COLUMN ${c}`)
  for (const c of ['ota_phase', 'ota_version', 'ota_ts', 'score', 'score_epoch']) db.exec(`ALTER TABLE devices DROP COLUMN ${c}`)
  db.pragma('user_version = 5')
  db.close()
  const again = new SqliteFleetStore(dir)
  t.teardown(() => again.close())
  t.match(await again.getDevice(d), { ota: { phase: 'rolled-back', version: '2.0.0', at: 200 }, score: { ppm: 800_000, epoch: 7 } }, 'its newest updater event (not a pause) and its newest epoch')
  t.match(await again.alertCounts(DEFAULT_ALERT_RULES, 1000), { 'update-failed': 1, 'low-score': 1 })
  // counted for the releases a repository publishes
  const published = ['agent', 'os'].map(kind => ({ kind: kind as 'agent' | 'os', version: kind === 'agent' ? '2.0.0' : '7.1.0', channel: 'stable', rollout: 10, targets: 1, arch: null, boards: null }))
  await again.recordReleases(1000, { source: 'r', version: 1, releases: published })
  t.same(
    (await again.outcomeTotals()).sort((a, b) => (a.kind < b.kind ? -1 : 1)),
    [
      { kind: 'agent', version: '2.0.0', committed: 0, rolledBack: 1, failed: 0 },
      { kind: 'os', version: '7.1.0', committed: 1, rolledBack: 0, failed: 0 },
    ],
    'ended updates by updater and release (one without a version as text left out)',
  )
  t.equal((await again.releases(10)).length, 2)
  t.equal((await again.getDevice(d))!.outbox, null, 'no outbox backlog reported yet')
})

t.test('the schema step that keeps raw samples in one b-tree: from the version before it, every row kept, rolled up and expired as before', async t => {
  const dir = tmp('cairn-fleet-')
  const d = 'd'.repeat(52)
  const T0 = Date.UTC(2026, 0, 1)
  const HOUR = 3_600_000
  const values = (i: number) => Object.fromEntries(METRICS.map((m, k) => [m, i * 100 + k])) as MetricValues
  const s = new SqliteFleetStore(dir)
  await s.applyStatus({ device: d, id: 'online', state: 'online', key: [T0, T0, 0, T0], receivedAt: T0, board: 'rpi5', model: 'Raspberry Pi 5 Model B Rev 1.0', version: '1.0.0', problems: [] })
  await s.close()
  // the file as the version before this step left it: telemetry_raw a rowid table with its key's index and an
  // index on ts, and devices_last_seen; samples in it (two devices, one without a row)
  const cols = METRICS.join(', ')
  const db = new Database(join(dir, 'fleet.db'))
  db.exec(`DROP TABLE telemetry_raw;
    CREATE TABLE telemetry_raw (device TEXT NOT NULL, ts INTEGER NOT NULL, id TEXT NOT NULL, ${METRICS.map(m => `${m} REAL`).join(', ')}, PRIMARY KEY (device, ts, id));
    CREATE INDEX telemetry_raw_ts ON telemetry_raw (ts);
    CREATE INDEX devices_last_seen ON devices (last_seen);`)
  const insert = db.prepare(`INSERT INTO telemetry_raw (device, ts, id, ${cols}) VALUES (?, ?, ?, ${METRICS.map(() => '?').join(', ')})`)
  for (let i = 0; i < 180; i++) insert.run(d, T0 + i * 10_000, `t${i}`, ...METRICS.map(m => values(i)[m]))
  insert.run('e'.repeat(52), T0, 'x', ...METRICS.map(() => null))
  db.pragma(`user_version = ${(db.pragma('user_version', { simple: true }) as number) - 1}`)
  db.close()

  const again = new SqliteFleetStore(dir)
  t.teardown(() => again.close())
  const raw = await again.series(d, 'raw', T0, T0 + HOUR, 1000)
  t.equal(raw.length, 180, 'every sample kept')
  t.same(raw[7], { ts: T0 + 70_000, values: values(7) }, 'each with all its values')
  t.equal((await again.series('e'.repeat(52), 'raw', T0, T0, 10)).length, 1, "and a device's that has no row")
  const file = new Database(join(dir, 'fleet.db'), { readonly: true })
  const schema = file.prepare("SELECT name, sql FROM sqlite_schema WHERE tbl_name IN ('telemetry_raw', 'devices')").all() as Array<{ name: string; sql: string | null }>
  file.close()
  t.match(schema.find(r => r.name === 'telemetry_raw')?.sql, /WITHOUT ROWID$/, 'telemetry_raw: WITHOUT ROWID')
  t.same(
    schema.map(r => r.name).filter(n => n === 'telemetry_raw_ts' || n === 'devices_last_seen' || n.startsWith('sqlite_autoindex_telemetry_raw')),
    [],
    'no index on ts, none for the key, no devices_last_seen',
  )
  // a redelivered sample is still one; the rollup and retention read the new table
  await again.addTelemetry({ device: d, id: 't0', ts: T0, receivedAt: T0, values: values(0) })
  t.same(await again.maintain(T0 + 40 * 60_000, { rawMs: HOUR, minuteMs: 30 * 24 * HOUR, hourMs: 365 * 24 * HOUR }), { minutes: 31, hours: 0, deleted: 0 })
  const minutes = await again.series(d, '1m', T0, T0 + HOUR, 100)
  t.equal(minutes.length, 30)
  t.equal(minutes[0]!.values.tempC, (values(0).tempC! * 6 + 15 * 100) / 6, 'a minute: the average of its six samples')
  t.equal((await again.maintain(T0 + 90 * 60_000, { rawMs: HOUR, minuteMs: 30 * 24 * HOUR, hourMs: 365 * 24 * HOUR })).deleted, 181, 'the first half hour of both devices, past an hour')
})
