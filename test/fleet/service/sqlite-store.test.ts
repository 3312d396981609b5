// The fleet store contract against the embedded SQLite store, and what only it has: one
// file shared by two connections (two `fleet serve` processes on one machine).

import t from 'tap'
import { statSync } from 'node:fs'
import { join } from 'node:path'
import Database from 'better-sqlite3'
import { SqliteFleetStore } from '../../../fleet/service/sqlite-store.js'
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
  // the file as the version two steps back left it: no such columns, no such tables
  const db = new Database(join(dir, 'fleet.db'))
  const version = db.pragma('user_version', { simple: true }) as number
  db.exec('DROP TABLE release_log; DROP TABLE ota_outcomes')
  for (const c of ['outbox_queued', 'outbox_bytes', 'outbox_oldest', 'io']) db.exec(`ALTER TABLE devices DROP COLUMN ${c}`)
  for (const c of ['ota_phase', 'ota_version', 'ota_ts', 'score', 'score_epoch']) db.exec(`ALTER TABLE devices DROP COLUMN ${c}`)
  db.pragma(`user_version = ${version - 2}`)
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
