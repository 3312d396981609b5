// The fleet service's embedded store: one SQLite file (WAL) that needs nothing
// installed, shared by every `fleet serve` process on one machine (BEGIN IMMEDIATE
// serialises their writes; presence is a compare-and-set on the device's order key, so
// no process can set a device back). The SQL is kept portable (row values, ON CONFLICT,
// no SQLite-only functions in queries) so the PostgreSQL store can follow it.

import { join } from 'node:path'
import type Database from 'better-sqlite3'
import { openSqlite, type Db } from '../../protocol/sqlite.js'

type Statement = Database.Statement<unknown[]>
import { ALERTS, type AlertKind, type AlertRules } from './alerts.js'
import {
  METRICS,
  type CommandRecord,
  type CommandReply,
  type CommandRow,
  type AccountRecord,
  type AttestationRecord,
  type ReceiptRecord,
  type RefusalKind,
  type DeviceQuery,
  type Role,
  type SessionRecord,
  type DeviceRow,
  type DeviceIo,
  type EventRecord,
  type EventRow,
  type FleetStore,
  type Metric,
  type MetricValues,
  type Resolution,
  type Retention,
  type SeriesPoint,
  type StatusRecord,
  type TelemetryRecord,
  type Transition,
  type PageCursor,
  type IngestItem,
  type OtaPhase,
  type OutcomeBucket,
  type ReleaseKind,
  type ReleaseState,
  type ReleaseListingRecord,
  PHASE_OF,
  UPDATING,
} from './fleet-store.js'
import { CairnError } from '../../protocol/errors.js'

const cols = (prefix = '') => METRICS.map(m => `${prefix}${m}`).join(', ')
const colDefs = METRICS.map(m => `${m} REAL`).join(', ')
const INSERT_RAW = `INSERT INTO telemetry_raw (device, ts, id, ${cols()}) VALUES (?, ?, ?, ${METRICS.map(() => '?').join(', ')}) ON CONFLICT DO NOTHING`
const UPDATE_LATEST = `UPDATE devices SET telemetry_ts = ?, ${METRICS.map(m => `${m} = ?`).join(', ')}, outbox_queued = ?, outbox_bytes = ?, outbox_oldest = ?, io = ?, last_seen = MAX(last_seen, ?) WHERE id = ? AND (telemetry_ts IS NULL OR telemetry_ts < ?)`

/** A device row's update phase from its newest agent updater event (not the OS
 * updater's: `target: "os"`), as kept; its version only where it is text. */
const FILL_OTA = `UPDATE devices SET (ota_phase, ota_version, ota_ts) = (
     SELECT CASE e.kind ${Object.entries(PHASE_OF)
       .map(([kind, phase]) => `WHEN '${kind}' THEN '${phase}'`)
       .join(' ')} END,
       CASE WHEN json_type(e.data, '$.version') = 'text' THEN substr(json_extract(e.data, '$.version'), 1, 64) END, e.ts
     FROM events e WHERE e.device = devices.id AND e.kind IN (${Object.keys(PHASE_OF)
       .map(k => `'${k}'`)
       .join(', ')}) AND json_extract(e.data, '$.target') IS NOT 'os'
     ORDER BY e.ts DESC, e.id DESC LIMIT 1)`
/** The phases in which an update has ended, and what the outcome tables call them. */
const ENDED: ReadonlySet<OtaPhase> = new Set(['committed', 'rolled-back', 'failed'])
const OUTCOME_FIELD: Partial<Record<OtaPhase, 'committed' | 'rolledBack' | 'failed'>> = { committed: 'committed', 'rolled-back': 'rolledBack', failed: 'failed' }

type ReleaseRow = { kind: ReleaseKind; version: string; channel: string; ts: number; rollout: number; targets: number; arch: string | null; boards: string | null }
const releaseKey = (r: { kind: string; version: string; channel: string }) => `${r.kind}\n${r.version}\n${r.channel}`
/** The metrics the raw table had when schema step 8 rebuilt it. */
const STEP8_METRICS = ['load1', 'cpuPercent', 'memPercent', 'diskPercent', 'tempC', 'rxBps', 'txBps', 'throttled', 'underVoltage', 'fanRpm', 'powerW', 'gpuPercent'] as const

/** The most releases the rollouts page lists (newest first sight first). */
const MAX_RELEASES = 1000
/** Each release's newest row. */
const LATEST_RELEASES = `SELECT r.kind, r.version, r.channel, r.ts, r.rollout, r.targets, r.arch, r.boards FROM release_log r
   JOIN (SELECT kind, version, channel, MAX(ts) AS ts FROM release_log GROUP BY kind, version, channel) l
     ON l.kind = r.kind AND l.version = r.version AND l.channel = r.channel AND l.ts = r.ts`

/** A device row's score: the lowest any pinned validator gave its newest epoch. */
const FILL_SCORE = `UPDATE devices SET (score, score_epoch) = (
     SELECT MIN(a.score), a.epoch FROM attestations a WHERE a.device = devices.id GROUP BY a.epoch ORDER BY a.epoch DESC LIMIT 1)`

const MIGRATIONS = [
  `CREATE TABLE devices (
     id TEXT PRIMARY KEY,
     first_seen INTEGER NOT NULL,
     last_seen INTEGER NOT NULL,
     state TEXT NOT NULL,
     state_since INTEGER NOT NULL,
     reason TEXT,
     k_since INTEGER NOT NULL, k_conn INTEGER NOT NULL, k_phase INTEGER NOT NULL, k_ts INTEGER NOT NULL,
     board TEXT NOT NULL, model TEXT NOT NULL, version TEXT NOT NULL,
     slot TEXT, os_version TEXT, os_slot TEXT,
     problems TEXT NOT NULL DEFAULT '[]',
     labels TEXT NOT NULL DEFAULT '{}',
     telemetry_ts INTEGER,
     ${colDefs}
   );
   CREATE INDEX devices_state ON devices (state, id);
   CREATE INDEX devices_last_seen ON devices (last_seen);
   CREATE TABLE presence (
     device TEXT NOT NULL,
     id TEXT NOT NULL,
     state TEXT NOT NULL,
     reason TEXT,
     k_since INTEGER NOT NULL, k_conn INTEGER NOT NULL, k_phase INTEGER NOT NULL, k_ts INTEGER NOT NULL,
     PRIMARY KEY (device, id)
   );
   CREATE INDEX presence_order ON presence (device, k_since, k_conn, k_phase, k_ts);
   CREATE TABLE telemetry_raw (device TEXT NOT NULL, ts INTEGER NOT NULL, id TEXT NOT NULL, ${colDefs}, PRIMARY KEY (device, ts, id));
   CREATE INDEX telemetry_raw_ts ON telemetry_raw (ts);
   CREATE TABLE telemetry_1m (device TEXT NOT NULL, ts INTEGER NOT NULL, n INTEGER NOT NULL, ${colDefs}, PRIMARY KEY (device, ts));
   CREATE TABLE telemetry_1h (device TEXT NOT NULL, ts INTEGER NOT NULL, n INTEGER NOT NULL, ${colDefs}, PRIMARY KEY (device, ts));
   CREATE TABLE events (device TEXT NOT NULL, id TEXT NOT NULL, ts INTEGER NOT NULL, kind TEXT NOT NULL, data TEXT NOT NULL, PRIMARY KEY (device, id));
   CREATE INDEX events_ts ON events (ts);
   CREATE TABLE meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);`,
  // the command audit log (kept as long as the hourly telemetry)
  `CREATE TABLE commands (
     id TEXT PRIMARY KEY,
     device TEXT NOT NULL,
     name TEXT NOT NULL,
     operator TEXT NOT NULL,
     sent_by TEXT NOT NULL,
     sent_at INTEGER NOT NULL,
     exp INTEGER NOT NULL,
     envelope TEXT NOT NULL,
     replied_at INTEGER,
     status TEXT,
     result TEXT,
     reply_envelope TEXT,
     refused INTEGER NOT NULL DEFAULT 0,
     refused_why TEXT
   );
   CREATE INDEX commands_device ON commands (device, sent_at);
   CREATE INDEX commands_sent ON commands (sent_at);`,
  // accounts and their sessions (shared by every process on the store)
  `CREATE TABLE accounts (
     name TEXT PRIMARY KEY,
     role TEXT NOT NULL,
     password_hash TEXT NOT NULL,
     created INTEGER NOT NULL,
     failed INTEGER NOT NULL DEFAULT 0,
     locked_until INTEGER NOT NULL DEFAULT 0
   );
   CREATE TABLE sessions (
     id_hash TEXT PRIMARY KEY,
     account TEXT NOT NULL,
     csrf TEXT NOT NULL,
     created INTEGER NOT NULL,
     expires INTEGER NOT NULL
   );
   CREATE INDEX sessions_account ON sessions (account);
   CREATE INDEX sessions_expires ON sessions (expires);`,
  // verified task receipts and attestations, and counts of what did not verify
  `CREATE TABLE receipts (
     device TEXT NOT NULL, id TEXT NOT NULL, task TEXT NOT NULL, type TEXT NOT NULL, outcome TEXT NOT NULL,
     dispatcher TEXT NOT NULL, finished INTEGER NOT NULL, received_at INTEGER NOT NULL, payload TEXT NOT NULL,
     PRIMARY KEY (device, id)
   );
   CREATE INDEX receipts_finished ON receipts (device, finished);
   CREATE TABLE attestations (
     validator TEXT NOT NULL, device TEXT NOT NULL, epoch INTEGER NOT NULL, score INTEGER NOT NULL, fraud INTEGER NOT NULL,
     received_at INTEGER NOT NULL, payload TEXT NOT NULL,
     PRIMARY KEY (device, epoch, validator)
   );
   CREATE INDEX attestations_received ON attestations (received_at);
   CREATE TABLE refusals (
     device TEXT NOT NULL, kind TEXT NOT NULL, count INTEGER NOT NULL, last_reason TEXT NOT NULL, last_at INTEGER NOT NULL, last_hash TEXT NOT NULL,
     PRIMARY KEY (device, kind)
   );`,
  // each device's newest updater event (the rollouts page)
  `CREATE INDEX events_kind ON events (kind, device, ts);`,
  // where each device's update stands (its newest updater event) and its newest uptime
  // score, on its row so the overview can count and filter by them; filled from what is kept
  `ALTER TABLE devices ADD COLUMN ota_phase TEXT;
   ALTER TABLE devices ADD COLUMN ota_version TEXT;
   ALTER TABLE devices ADD COLUMN ota_ts INTEGER;
   ALTER TABLE devices ADD COLUMN score INTEGER;
   ALTER TABLE devices ADD COLUMN score_epoch INTEGER;
   ${FILL_OTA} WHERE 1;
   ${FILL_SCORE} WHERE 1;`,
  // the release repository as the service saw it over time (every change of a release's
  // rollout or targets), and every update that ended, by release (the rollouts page),
  // filled from the updater events already kept; a device's outbox backlog
  `CREATE TABLE release_log (
     kind TEXT NOT NULL, version TEXT NOT NULL, channel TEXT NOT NULL, ts INTEGER NOT NULL,
     rollout REAL NOT NULL, targets INTEGER NOT NULL, arch TEXT, boards TEXT,
     PRIMARY KEY (kind, version, channel, ts)
   );
   CREATE TABLE ota_outcomes (
     device TEXT NOT NULL, id TEXT NOT NULL, ts INTEGER NOT NULL, target TEXT NOT NULL, version TEXT NOT NULL, phase TEXT NOT NULL,
     PRIMARY KEY (device, id)
   );
   CREATE INDEX ota_outcomes_release ON ota_outcomes (target, version, ts);
   INSERT INTO ota_outcomes (device, id, ts, target, version, phase)
     SELECT device, id, ts, CASE WHEN json_extract(data, '$.target') IS 'os' THEN 'os' ELSE 'agent' END, substr(json_extract(data, '$.version'), 1, 64),
       CASE kind WHEN 'ota.committed' THEN 'committed' WHEN 'ota.rolled-back' THEN 'rolled-back' ELSE 'failed' END
     FROM events WHERE kind IN ('ota.committed', 'ota.rolled-back', 'ota.failed') AND json_type(data, '$.version') = 'text';
   -- and the outbox backlog the newest telemetry reports (the outbox-backlog alert)
   ALTER TABLE devices ADD COLUMN outbox_queued INTEGER;
   ALTER TABLE devices ADD COLUMN outbox_bytes INTEGER;
   ALTER TABLE devices ADD COLUMN outbox_oldest INTEGER;
   -- and its GPIO lines and status LED (JSON text, as it reported them)
   ALTER TABLE devices ADD COLUMN io TEXT;`,
  // raw samples in one b-tree clustered by (device, ts, id), not a table with an index for
  // its key and one on ts: a sample is one b-tree write, not three (the rollups and
  // retention read a time range device by device: withDevices). The table is copied once,
  // in this step's transaction. devices_last_seen served no query (the device table sorts
  // by `last_seen IS NULL, last_seen`, which it cannot give) and was written with every
  // sample and status.
  // The metrics are spelled out: a step is fixed text, whatever METRICS holds later.
  `CREATE TABLE telemetry_raw_v2 (device TEXT NOT NULL, ts INTEGER NOT NULL, id TEXT NOT NULL, ${STEP8_METRICS.map(m => `${m} REAL`).join(', ')}, PRIMARY KEY (device, ts, id)) WITHOUT ROWID;
   INSERT INTO telemetry_raw_v2 (device, ts, id, ${STEP8_METRICS.join(', ')}) SELECT device, ts, id, ${STEP8_METRICS.join(', ')} FROM telemetry_raw;
   DROP TABLE telemetry_raw;
   ALTER TABLE telemetry_raw_v2 RENAME TO telemetry_raw;
   DROP INDEX IF EXISTS devices_last_seen;`,
]

/** The devices that have rows in a telemetry table, one seek each along its (device, ts)
 * key (a loose index scan): no telemetry table has an index on ts alone, so the rollups
 * and retention read a time range device by device instead of the whole table. */
const withDevices = (table: string) => `WITH RECURSIVE keyed (device) AS (
     SELECT MIN(device) FROM ${table}
     UNION ALL
     SELECT (SELECT MIN(t.device) FROM ${table} t WHERE t.device > keyed.device) FROM keyed WHERE keyed.device IS NOT NULL)`

const SORT_SQL: Record<DeviceQuery['sort'], string> = {
  id: 'id',
  state: 'state',
  lastSeen: 'last_seen',
  board: 'board',
  version: 'version',
  tempC: 'tempC',
  load1: 'load1',
}

const MINUTE = 60_000
const HOUR = 3_600_000

type Row = Record<string, unknown>

/** A batch's newest new sample of a device, and the latest arrival among the samples that
 * were each the newest when they came (what the device row's last_seen takes). */
interface Newest {
  r: TelemetryRecord
  seen: number
}

/** The rows after a newest-first page's end, in the page's sort columns (its time first,
 * then its keys): a row-value comparison, which SQLite and PostgreSQL both have. */
function olderThan(order: readonly string[], c: PageCursor): { sql: string; args: Array<string | number> } {
  const keys = c.keys ?? []
  if (keys.length === 0) return { sql: `${order[0]} < ?`, args: [c.at] }
  if (keys.length !== order.length - 1) throw new CairnError('BAD_REQUEST', `a page cursor here has ${order.length - 1} key(s) after its time, not ${keys.length}`)
  return { sql: `(${order.join(', ')}) < (${order.map(() => '?').join(', ')})`, args: [c.at, ...keys] }
}

export class SqliteFleetStore implements FleetStore {
  private readonly db: Db

  /** The ingest's statements and transaction, compiled once (every sample comes through them). */
  private readonly insertRaw: Statement
  private readonly updateLatest: Statement
  private readonly ingestTx: Database.Transaction<(items: readonly IngestItem[]) => boolean[]>

  constructor(stateDir: string) {
    this.db = openSqlite(join(stateDir, 'fleet.db'), {
      migrations: MIGRATIONS,
      // a crash loses nothing committed; a power cut may lose the last telemetry, which
      // the devices do not send again: the fleet's record, not a ledger
      synchronous: 'NORMAL',
      busyTimeoutMs: 10_000,
      newerSchema: 'refuse',
    })
    this.insertRaw = this.db.prepare(INSERT_RAW)
    this.updateLatest = this.db.prepare(UPDATE_LATEST)
    this.ingestTx = this.db.transaction((items: readonly IngestItem[]) => this.ingestNow(items))
  }

  async applyStatus(r: StatusRecord): Promise<boolean> {
    return this.db.transaction(() => this.statusNow(r)).immediate()
  }

  async addTelemetry(r: TelemetryRecord): Promise<void> {
    this.ingestTx.immediate([{ kind: 'telemetry', record: r }])
  }

  async addEvent(r: EventRecord): Promise<void> {
    this.db.transaction(() => this.eventNow(r)).immediate()
  }

  async ingest(items: readonly IngestItem[]): Promise<boolean[]> {
    return this.ingestTx.immediate(items)
  }

  /** The items in order, each as alone would be stored; a device's newest sample goes on
   * its row once per batch (the row is written before a status, which may make it). */
  private ingestNow(items: readonly IngestItem[]): boolean[] {
    const changed: boolean[] = []
    const newest = new Map<string, Newest>()
    for (const i of items) {
      if (i.kind === 'telemetry') {
        this.telemetryNow(i.record, newest)
        changed.push(false)
      } else if (i.kind === 'status') {
        this.putNewest(newest)
        changed.push(this.statusNow(i.record))
      } else {
        this.eventNow(i.record)
        changed.push(false)
      }
    }
    this.putNewest(newest)
    return changed
  }

  /** A statement compiled once per text (better-sqlite3 compiles on every prepare). */
  private st(sql: string): Statement {
    let s = this.statements.get(sql)
    if (!s) this.statements.set(sql, (s = this.db.prepare(sql)))
    return s
  }
  private readonly statements = new Map<string, Statement>()

  private statusNow(r: StatusRecord): boolean {
    const [since, conn, phase, ts] = r.key
    const logged = this.st('INSERT INTO presence (device, id, state, reason, k_since, k_conn, k_phase, k_ts) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING').run(
      r.device,
      r.id,
      r.state,
      r.reason ?? null,
      since,
      conn,
      phase,
      ts,
    )
    if (logged.changes === 0) return false // seen before
    const before = this.st('SELECT state FROM devices WHERE id = ?').get(r.device) as { state: string } | undefined
    const fields = [r.board, r.model, r.version, r.slot ?? null, r.osVersion ?? null, r.osSlot ?? null, JSON.stringify(r.problems)]
    if (!before) {
      this.st(
        `INSERT INTO devices (id, first_seen, last_seen, state, state_since, reason, k_since, k_conn, k_phase, k_ts, board, model, version, slot, os_version, os_slot, problems)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      ).run(r.device, r.receivedAt, r.receivedAt, r.state, ts, r.reason ?? null, since, conn, phase, ts, ...fields)
      // events and attestations of it kept before its first status (another process of
      // the share group took that status; a state dir started afresh)
      this.st(`${FILL_OTA} WHERE id = ?`).run(r.device)
      this.st(`${FILL_SCORE} WHERE id = ?`).run(r.device)
      return true
    }
    this.st('UPDATE devices SET last_seen = MAX(last_seen, ?) WHERE id = ?').run(r.receivedAt, r.device)
    const applied = this.st(
      `UPDATE devices SET state = ?, state_since = CASE WHEN state = ? THEN state_since ELSE ? END, reason = ?,
         k_since = ?, k_conn = ?, k_phase = ?, k_ts = ?, board = ?, model = ?, version = ?, slot = ?, os_version = ?, os_slot = ?, problems = ?
       WHERE id = ? AND (k_since, k_conn, k_phase, k_ts) < (?, ?, ?, ?)`,
    ).run(r.state, r.state, ts, r.reason ?? null, since, conn, phase, ts, ...fields, r.device, since, conn, phase, ts)
    return applied.changes > 0 && before.state !== r.state
  }

  /** Stores a sample; one that is new and newer than the batch's others of its device is
   * noted for its device row. The values are bound in METRICS order, as INSERT_RAW and
   * UPDATE_LATEST name them: spelled out, not spread from an array made for each sample
   * (the store contract's sample with a value of its own in every metric checks the order). */
  private telemetryNow(r: TelemetryRecord, newest: Map<string, Newest>): void {
    const v = r.values
    const added = this.insertRaw.run(r.device, r.ts, r.id, v.load1, v.cpuPercent, v.memPercent, v.diskPercent, v.tempC, v.rxBps, v.txBps, v.throttled, v.underVoltage, v.fanRpm, v.powerW, v.gpuPercent)
    if (added.changes === 0) return // seen before
    const n = newest.get(r.device)
    if (!n) newest.set(r.device, { r, seen: r.receivedAt })
    else if (r.ts > n.r.ts) {
      // as the samples one at a time would: each newer one moved last_seen up
      n.r = r
      n.seen = Math.max(n.seen, r.receivedAt)
    }
  }

  /** The device row shows its newest sample (a late one does not replace it). */
  private putNewest(newest: Map<string, Newest>): void {
    for (const { r, seen } of newest.values()) {
      const v = r.values
      const o = r.outbox
      this.updateLatest.run(
        r.ts,
        v.load1,
        v.cpuPercent,
        v.memPercent,
        v.diskPercent,
        v.tempC,
        v.rxBps,
        v.txBps,
        v.throttled,
        v.underVoltage,
        v.fanRpm,
        v.powerW,
        v.gpuPercent,
        o?.queued ?? null,
        o?.bytes ?? null,
        o?.oldestTs ?? null,
        r.io ?? null,
        seen,
        r.device,
        r.ts,
      )
    }
    newest.clear()
  }

  private eventNow(r: EventRecord): void {
    const kept = this.st('INSERT INTO events (device, id, ts, kind, data) VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING').run(r.device, r.id, r.ts, r.kind, r.data).changes > 0
    if (!kept || !r.ota) return
    // an update that ended: counted per release over time (the rollouts page)
    if (r.ota.version !== null && ENDED.has(r.ota.phase))
      this.st('INSERT INTO ota_outcomes (device, id, ts, target, version, phase) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING').run(r.device, r.id, r.ts, r.ota.target, r.ota.version, r.ota.phase)
    // the agent updater's event newer than the one on the row says where its update stands now
    if (r.ota.target === 'agent')
      this.st('UPDATE devices SET ota_phase = ?, ota_version = ?, ota_ts = ? WHERE id = ? AND (ota_ts IS NULL OR ota_ts <= ?)').run(r.ota.phase, r.ota.version, r.ts, r.device, r.ts)
  }

  async listDevices(q: DeviceQuery): Promise<{ total: number; items: DeviceRow[] }> {
    const where: string[] = []
    const args: unknown[] = []
    if (q.search) {
      // LIKE with the user's text escaped: % and _ are literal
      const like = `%${q.search.replace(/[\\%_]/g, c => `\\${c}`)}%`
      where.push("(id LIKE ? ESCAPE '\\' OR board LIKE ? ESCAPE '\\' OR model LIKE ? ESCAPE '\\' OR version LIKE ? ESCAPE '\\' OR labels LIKE ? ESCAPE '\\')")
      args.push(like, like, like, like, like)
    }
    for (const [column, value] of [
      ['state', q.state],
      ['board', q.board],
      ['version', q.version],
    ] as const) {
      if (value === undefined) continue
      where.push(`${column} = ?`)
      args.push(value)
    }
    if (q.alert) {
      const [sql, a] = q.alert.kind === 'any' ? anyAlert(q.alert.rules, q.alert.now) : alertCondition(q.alert.kind, q.alert.rules, q.alert.now)
      where.push(`(${sql})`)
      args.push(...a)
    }
    const clause = where.length > 0 ? `WHERE ${where.join(' AND ')}` : ''
    // labels are JSON text: filtered here, after the indexed conditions (bounded by the fleet's size)
    const label = q.label !== undefined ? parseLabelFilter(q.label) : undefined
    const order = `ORDER BY ${SORT_SQL[q.sort]} IS NULL, ${SORT_SQL[q.sort]} ${q.order === 'desc' ? 'DESC' : 'ASC'}, id ASC`
    if (!label) {
      const total = (this.db.prepare(`SELECT COUNT(*) AS n FROM devices ${clause}`).get(...args) as { n: number }).n
      const rows = this.db.prepare(`SELECT * FROM devices ${clause} ${order} LIMIT ? OFFSET ?`).all(...args, q.limit, q.offset) as Row[]
      return { total, items: rows.map(toDevice) }
    }
    const all = (this.db.prepare(`SELECT * FROM devices ${clause} ${order}`).all(...args) as Row[]).map(toDevice).filter(d => label(d.labels))
    return { total: all.length, items: all.slice(q.offset, q.offset + q.limit) }
  }

  async getDevice(id: string): Promise<DeviceRow | undefined> {
    const row = this.db.prepare('SELECT * FROM devices WHERE id = ?').get(id) as Row | undefined
    return row ? toDevice(row) : undefined
  }

  async transitions(id: string, from: number, to: number, limit: number): Promise<Transition[]> {
    const rows = this.db.prepare('SELECT state, reason, k_ts AS at FROM presence WHERE device = ? AND k_ts >= ? AND k_ts <= ? ORDER BY k_since, k_conn, k_phase, k_ts').all(id, from, to) as Array<{
      state: 'online' | 'offline'
      reason: string | null
      at: number
    }>
    // consecutive messages of one state are one period (a republished online status, a redelivery)
    const out: Transition[] = []
    for (const r of rows) if (out.at(-1)?.state !== r.state) out.push({ state: r.state, reason: r.reason, at: r.at })
    return out.slice(-limit)
  }

  async series(id: string, resolution: Resolution, from: number, to: number, limit: number, bucketMs?: number): Promise<SeriesPoint[]> {
    const table = resolution === 'raw' ? 'telemetry_raw' : resolution === '1m' ? 'telemetry_1m' : 'telemetry_1h'
    const b = bucketMs !== undefined ? Math.max(1, Math.floor(bucketMs)) : undefined
    const rows = (
      b === undefined
        ? this.db.prepare(`SELECT ts, ${cols()} FROM ${table} WHERE device = ? AND ts >= ? AND ts <= ? ORDER BY ts DESC LIMIT ?`).all(id, from, to, limit)
        : // integer division on an INTEGER column: the same in PostgreSQL
          this.db
            .prepare(
              `SELECT (ts / ${b}) * ${b} AS ts, ${METRICS.map(m => `AVG(${m}) AS ${m}`).join(', ')} FROM ${table} WHERE device = ? AND ts >= ? AND ts <= ? GROUP BY ts / ${b} ORDER BY 1 DESC LIMIT ?`,
            )
            .all(id, from, to, limit)
    ) as Row[]
    return rows.reverse().map(r => ({ ts: r.ts as number, values: metricValues(r) }))
  }

  async events(q: { device?: string; from: number; to: number; before?: PageCursor; limit: number }): Promise<EventRow[]> {
    const order = q.device !== undefined ? ['ts', 'id'] : ['ts', 'device', 'id']
    const page = q.before ? olderThan(order, q.before) : undefined
    const where = [...(q.device !== undefined ? ['device = ?'] : []), 'ts >= ?', 'ts <= ?', ...(page ? [page.sql] : [])]
    const args = [...(q.device !== undefined ? [q.device] : []), q.from, q.to, ...(page?.args ?? [])]
    const rows = this.db.prepare(`SELECT * FROM events WHERE ${where.join(' AND ')} ORDER BY ${order.map(c => `${c} DESC`).join(', ')} LIMIT ?`).all(...args, q.limit) as Array<{
      device: string
      id: string
      ts: number
      kind: string
      data: string
    }>
    return rows.map(r => ({ device: r.device, id: r.id, ts: r.ts, kind: r.kind, data: JSON.parse(r.data) as unknown }))
  }

  async setLabels(id: string, labels: Readonly<Record<string, string>>): Promise<boolean> {
    return this.db.prepare('UPDATE devices SET labels = ? WHERE id = ?').run(JSON.stringify(sortedLabels(labels)), id).changes > 0
  }

  async addCommand(r: CommandRecord): Promise<boolean> {
    return (
      this.db
        .prepare('INSERT INTO commands (id, device, name, operator, sent_by, sent_at, exp, envelope) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING')
        .run(r.id, r.device, r.name, r.operator, r.by, r.sentAt, r.exp, r.envelope).changes > 0
    )
  }

  async commandTarget(id: string): Promise<{ device: string; operator: string } | undefined> {
    return this.db.prepare('SELECT device, operator FROM commands WHERE id = ?').get(id) as { device: string; operator: string } | undefined
  }

  async setReply(id: string, r: CommandReply): Promise<boolean> {
    return (
      this.db.prepare('UPDATE commands SET replied_at = ?, status = ?, result = ?, reply_envelope = ? WHERE id = ? AND replied_at IS NULL').run(r.at, r.status, r.result, r.envelope, id).changes > 0
    )
  }

  async refuseReply(id: string, why: string): Promise<void> {
    this.db.prepare('UPDATE commands SET refused = refused + 1, refused_why = ? WHERE id = ?').run(why.slice(0, 500), id)
  }

  async commands(q: { device?: string; before?: PageCursor; limit: number; now: number }): Promise<CommandRow[]> {
    const page = q.before ? olderThan(['sent_at', 'id'], q.before) : undefined
    const where = [...(q.device !== undefined ? ['device = ?'] : []), ...(page ? [page.sql] : [])]
    const args = [...(q.device !== undefined ? [q.device] : []), ...(page?.args ?? [])]
    const rows = this.db.prepare(`SELECT * FROM commands ${where.length ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY sent_at DESC, id DESC LIMIT ?`).all(...args, q.limit) as Row[]
    return rows.map(r => toCommand(r, q.now))
  }

  async getCommand(id: string, now: number): Promise<(CommandRow & { envelope: string; replyEnvelope: string | null }) | undefined> {
    const r = this.db.prepare('SELECT * FROM commands WHERE id = ?').get(id) as Row | undefined
    return r && { ...toCommand(r, now), envelope: r.envelope as string, replyEnvelope: (r.reply_envelope as string | null) ?? null }
  }

  async otaLatest(limit: number): Promise<Array<{ device: string; kind: string; ts: number; data: unknown }>> {
    // a range on kind, not LIKE: the events_kind index serves it (LIKE would scan a year of events)
    const ota = "e.kind >= 'ota.' AND e.kind < 'ota/' AND e.kind NOT IN ('ota.paused', 'ota.pinned')"
    const rows = this.db
      .prepare(
        `SELECT e.device, e.kind, e.ts, e.data FROM events e
         JOIN (SELECT e.device, MAX(e.ts) AS ts FROM events e WHERE ${ota} GROUP BY e.device) l ON l.device = e.device AND l.ts = e.ts
         WHERE ${ota} ORDER BY e.ts DESC, e.device LIMIT ?`,
      )
      .all(limit) as Array<{ device: string; kind: string; ts: number; data: string }>
    // two events of one device in the same ms: the first listed stands for it
    const seen = new Set<string>()
    return rows.filter(r => !seen.has(r.device) && seen.add(r.device)).map(r => ({ device: r.device, kind: r.kind, ts: r.ts, data: JSON.parse(r.data) as unknown }))
  }

  async versionCounts(): Promise<Array<{ version: string; devices: number; online: number }>> {
    return this.db
      .prepare("SELECT version, COUNT(*) AS devices, SUM(CASE WHEN state = 'online' THEN 1 ELSE 0 END) AS online FROM devices GROUP BY version ORDER BY devices DESC, version")
      .all() as Array<{ version: string; devices: number; online: number }>
  }

  async osVersionCounts(): Promise<Array<{ version: string; devices: number; online: number }>> {
    return this.db
      .prepare(
        "SELECT os_version AS version, COUNT(*) AS devices, SUM(CASE WHEN state = 'online' THEN 1 ELSE 0 END) AS online FROM devices WHERE os_version IS NOT NULL GROUP BY os_version ORDER BY devices DESC, os_version",
      )
      .all() as Array<{ version: string; devices: number; online: number }>
  }

  async recordReleases(now: number, listing: ReleaseListingRecord): Promise<{ added: number; stale: boolean }> {
    const list = (v: readonly string[] | null) => (v === null ? null : JSON.stringify([...v].sort()))
    return this.db
      .transaction(() => {
        // a listing from older metadata than one recorded already (another process's slow
        // poll, a wiped metadata dir) is not the repository's state: left out
        const key = `releases:${listing.source}`
        const seen = this.st('SELECT v FROM meta WHERE k = ?').get(key) as { v: string } | undefined
        if (seen && Number(seen.v) > listing.version) return { added: 0, stale: true }
        this.st('INSERT INTO meta (k, v) VALUES (?, ?) ON CONFLICT (k) DO UPDATE SET v = excluded.v').run(key, String(listing.version))
        const latest = new Map<string, ReleaseRow>()
        for (const r of this.st(LATEST_RELEASES).all() as ReleaseRow[]) latest.set(releaseKey(r), r)
        const insert = this.st('INSERT INTO release_log (kind, version, channel, ts, rollout, targets, arch, boards) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING')
        let added = 0
        const listed = new Set<string>()
        for (const r of listing.releases) {
          const k = releaseKey(r)
          if (listed.has(k)) throw new CairnError('BAD_REQUEST', `release ${k.replaceAll('\n', ' ')} listed twice: merge its targets first`)
          listed.add(k)
          const was = latest.get(k)
          const arch = list(r.arch)
          const boards = list(r.boards)
          if (was && was.rollout === r.rollout && was.targets === r.targets && was.arch === arch && was.boards === boards) continue
          added += insert.run(r.kind, r.version, r.channel, now, r.rollout, r.targets, arch, boards).changes
        }
        for (const [k, was] of latest) if (!listed.has(k) && was.targets > 0) added += insert.run(was.kind, was.version, was.channel, now, 0, 0, was.arch, was.boards).changes
        return { added, stale: false }
      })
      .immediate()
  }

  async releases(historyLimit: number): Promise<ReleaseState[]> {
    // each release's first sight, and its newest changes (the newest is where it stands)
    const firsts = this.st(`SELECT kind, version, channel, MIN(ts) AS first FROM release_log GROUP BY kind, version, channel ORDER BY first DESC, version DESC LIMIT ${MAX_RELEASES}`).all() as Array<{
      kind: ReleaseKind
      version: string
      channel: string
      first: number
    }>
    const rows = this.st(
      `SELECT kind, version, channel, ts, rollout, targets, arch, boards FROM (
         SELECT r.*, ROW_NUMBER() OVER (PARTITION BY kind, version, channel ORDER BY ts DESC) AS n FROM release_log r
         WHERE (kind, version, channel) IN (SELECT kind, version, channel FROM release_log GROUP BY kind, version, channel ORDER BY MIN(ts) DESC, version DESC LIMIT ${MAX_RELEASES})
       ) x WHERE n <= ? ORDER BY ts`,
    ).all(Math.max(1, historyLimit)) as ReleaseRow[]
    const byKey = new Map<string, ReleaseRow[]>()
    for (const r of rows) {
      const k = releaseKey(r)
      const e = byKey.get(k)
      if (e) e.push(r)
      else byKey.set(k, [r])
    }
    const parse = (v: string | null) => (v === null ? null : (JSON.parse(v) as string[]))
    return firsts.map(f => {
      const all = byKey.get(releaseKey(f))!
      const now = all[all.length - 1]!
      return {
        kind: now.kind,
        version: now.version,
        channel: now.channel,
        rollout: now.rollout,
        targets: now.targets,
        arch: parse(now.arch),
        boards: parse(now.boards),
        firstSeen: f.first,
        changed: now.ts,
        history: all.map(r => ({ ts: r.ts, rollout: r.rollout, targets: r.targets })),
      }
    })
  }

  async outcomeTotals(q: { before?: number } = {}): Promise<Array<{ kind: ReleaseKind; version: string; committed: number; rolledBack: number; failed: number }>> {
    // the releases the repository published (bounded), not whatever versions devices name
    const rows = this.st(
      `SELECT target, version, phase, COUNT(*) AS n FROM ota_outcomes
       WHERE (target, version) IN (SELECT DISTINCT kind, version FROM release_log) AND ts < ?
       GROUP BY target, version, phase`,
    ).all(q.before ?? Number.MAX_SAFE_INTEGER) as Array<{ target: ReleaseKind; version: string; phase: OtaPhase; n: number }>
    const out = new Map<string, { kind: ReleaseKind; version: string; committed: number; rolledBack: number; failed: number }>()
    for (const r of rows) {
      const k = `${r.target}\n${r.version}`
      let e = out.get(k)
      if (!e) out.set(k, (e = { kind: r.target, version: r.version, committed: 0, rolledBack: 0, failed: 0 }))
      e[OUTCOME_FIELD[r.phase]!] += r.n
    }
    return [...out.values()]
  }

  async outcomes(q: { kind: ReleaseKind; version: string; from: number; to: number; bucketMs: number }): Promise<OutcomeBucket[]> {
    if (!Number.isSafeInteger(q.bucketMs) || q.bucketMs < 1) throw new CairnError('BAD_REQUEST', `bucketMs must be a positive whole number, not ${q.bucketMs}`)
    const b = q.bucketMs
    const rows = this.db
      .prepare(
        `SELECT (ts / ${b}) * ${b} AS bucket, phase, COUNT(*) AS n FROM ota_outcomes
         WHERE target = ? AND version = ? AND ts >= ? AND ts < ? GROUP BY bucket, phase ORDER BY bucket`,
      )
      .all(q.kind, q.version, q.from, q.to) as Array<{ bucket: number; phase: OtaPhase; n: number }>
    const out: Array<{ ts: number; committed: number; rolledBack: number; failed: number }> = []
    for (const r of rows) {
      let e = out[out.length - 1]
      if (!e || e.ts !== r.bucket) out.push((e = { ts: r.bucket, committed: 0, rolledBack: 0, failed: 0 }))
      e[OUTCOME_FIELD[r.phase]!] += r.n
    }
    return out
  }

  async addReceipt(r: ReceiptRecord): Promise<boolean> {
    return (
      this.db
        .prepare('INSERT INTO receipts (device, id, task, type, outcome, dispatcher, finished, received_at, payload) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING')
        .run(r.device, r.id, r.task, r.type, r.outcome, r.dispatcher, r.finished, r.receivedAt, r.payload).changes > 0
    )
  }

  async receipts(q: { device: string; before?: PageCursor; limit: number }): Promise<Array<Omit<ReceiptRecord, 'payload'> & { payload: unknown }>> {
    const page = q.before ? olderThan(['finished', 'id'], q.before) : undefined
    const rows = this.db
      .prepare(`SELECT * FROM receipts WHERE device = ? ${page ? `AND ${page.sql}` : ''} ORDER BY finished DESC, id DESC LIMIT ?`)
      .all(q.device, ...(page?.args ?? []), q.limit) as Row[]
    return rows.map(r => ({
      device: r.device as string,
      id: r.id as string,
      task: r.task as string,
      type: r.type as string,
      outcome: r.outcome as 'done' | 'failed' | 'cancelled',
      dispatcher: r.dispatcher as string,
      finished: r.finished as number,
      receivedAt: r.received_at as number,
      payload: JSON.parse(r.payload as string) as unknown,
    }))
  }

  async addAttestation(a: AttestationRecord): Promise<boolean> {
    return this.db
      .transaction(() => {
        const kept =
          this.st('INSERT INTO attestations (validator, device, epoch, score, fraud, received_at, payload) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING').run(
            a.validator,
            a.device,
            a.epoch,
            a.score,
            a.fraud ? 1 : 0,
            a.receivedAt,
            a.payload,
          ).changes > 0
        // the device's score: the lowest any pinned validator gave its newest epoch
        if (kept)
          this.st('UPDATE devices SET score = CASE WHEN score_epoch = ? THEN MIN(score, ?) ELSE ? END, score_epoch = ? WHERE id = ? AND (score_epoch IS NULL OR score_epoch <= ?)').run(
            a.epoch,
            a.score,
            a.score,
            a.epoch,
            a.device,
            a.epoch,
          )
        return kept
      })
      .immediate()
  }

  async attestations(q: { device: string; limit: number }): Promise<Array<Omit<AttestationRecord, 'payload'> & { payload: unknown }>> {
    const rows = this.db.prepare('SELECT * FROM attestations WHERE device = ? ORDER BY epoch DESC, validator LIMIT ?').all(q.device, q.limit) as Row[]
    return rows.map(r => ({
      validator: r.validator as string,
      device: r.device as string,
      epoch: r.epoch as number,
      score: r.score as number,
      fraud: r.fraud === 1,
      receivedAt: r.received_at as number,
      payload: JSON.parse(r.payload as string) as unknown,
    }))
  }

  async validatorStats(): Promise<Array<{ validator: string; devices: number; attestations: number; lastEpoch: number; lastAt: number; meanScore: number }>> {
    const rows = this.db
      .prepare(
        `SELECT validator, COUNT(DISTINCT device) AS devices, COUNT(*) AS attestations, MAX(epoch) AS last_epoch, MAX(received_at) AS last_at, AVG(score) AS mean_score
         FROM attestations GROUP BY validator ORDER BY validator`,
      )
      .all() as Row[]
    return rows.map(r => ({
      validator: r.validator as string,
      devices: r.devices as number,
      attestations: r.attestations as number,
      lastEpoch: r.last_epoch as number,
      lastAt: r.last_at as number,
      meanScore: Math.round(r.mean_score as number),
    }))
  }

  async refusedTotal(kind: RefusalKind): Promise<number> {
    return ((this.db.prepare('SELECT SUM(count) AS n FROM refusals WHERE kind = ?').get(kind) as { n: number | null }).n ?? 0) as number
  }

  async addRefusal(device: string, kind: RefusalKind, reason: string, at: number, hash: string): Promise<void> {
    this.db
      .prepare(
        `INSERT INTO refusals (device, kind, count, last_reason, last_at, last_hash) VALUES (?, ?, 1, ?, ?, ?)
         ON CONFLICT (device, kind) DO UPDATE SET count = refusals.count + 1, last_reason = excluded.last_reason, last_at = excluded.last_at, last_hash = excluded.last_hash
         WHERE refusals.last_hash <> excluded.last_hash`,
      )
      .run(device, kind, reason.slice(0, 500), at, hash)
  }

  async refusals(device: string): Promise<Array<{ kind: RefusalKind; count: number; lastReason: string; lastAt: number }>> {
    const rows = this.db.prepare('SELECT kind, count, last_reason, last_at FROM refusals WHERE device = ? ORDER BY kind').all(device) as Row[]
    return rows.map(r => ({ kind: r.kind as RefusalKind, count: r.count as number, lastReason: r.last_reason as string, lastAt: r.last_at as number }))
  }

  async putAccount(a: { name: string; role: Role; passwordHash: string; created: number }): Promise<'added' | 'updated'> {
    return this.db
      .transaction(() => {
        const before = this.db.prepare('SELECT password_hash FROM accounts WHERE name = ?').get(a.name) as { password_hash: string } | undefined
        if (!before) {
          this.db.prepare('INSERT INTO accounts (name, role, password_hash, created) VALUES (?, ?, ?, ?)').run(a.name, a.role, a.passwordHash, a.created)
          return 'added' as const
        }
        this.db.prepare('UPDATE accounts SET role = ?, password_hash = ?, failed = 0, locked_until = 0 WHERE name = ?').run(a.role, a.passwordHash, a.name)
        if (before.password_hash !== a.passwordHash) this.db.prepare('DELETE FROM sessions WHERE account = ?').run(a.name)
        return 'updated' as const
      })
      .immediate()
  }

  async addAccount(a: { name: string; role: Role; passwordHash: string; created: number }): Promise<boolean> {
    return this.db.prepare('INSERT INTO accounts (name, role, password_hash, created) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING').run(a.name, a.role, a.passwordHash, a.created).changes > 0
  }

  async updateAccount(name: string, change: { role?: Role; passwordHash?: string }): Promise<boolean> {
    return this.db
      .transaction(() => {
        if (change.role !== undefined && this.db.prepare('UPDATE accounts SET role = ? WHERE name = ?').run(change.role, name).changes === 0) return false
        if (change.passwordHash !== undefined) {
          if (this.db.prepare('UPDATE accounts SET password_hash = ?, failed = 0, locked_until = 0 WHERE name = ?').run(change.passwordHash, name).changes === 0) return false
          this.db.prepare('DELETE FROM sessions WHERE account = ?').run(name)
        }
        return this.db.prepare('SELECT 1 FROM accounts WHERE name = ?').get(name) !== undefined
      })
      .immediate()
  }

  async getAccount(name: string): Promise<AccountRecord | undefined> {
    const r = this.db.prepare('SELECT * FROM accounts WHERE name = ?').get(name) as Row | undefined
    return (
      r && {
        name: r.name as string,
        role: r.role as Role,
        passwordHash: r.password_hash as string,
        created: r.created as number,
        failed: r.failed as number,
        lockedUntil: r.locked_until as number,
      }
    )
  }

  async listAccounts(): Promise<Array<{ name: string; role: Role; created: number }>> {
    return this.db.prepare('SELECT name, role, created FROM accounts ORDER BY name').all() as Array<{ name: string; role: Role; created: number }>
  }

  async removeAccount(name: string): Promise<boolean> {
    return this.db
      .transaction(() => {
        this.db.prepare('DELETE FROM sessions WHERE account = ?').run(name)
        return this.db.prepare('DELETE FROM accounts WHERE name = ?').run(name).changes > 0
      })
      .immediate()
  }

  async accountCount(): Promise<number> {
    return (this.db.prepare('SELECT COUNT(*) AS n FROM accounts').get() as { n: number }).n
  }

  async loginFailed(name: string, lockUntil: (failed: number) => number): Promise<number> {
    return this.db
      .transaction(() => {
        const r = this.db.prepare('UPDATE accounts SET failed = failed + 1 WHERE name = ? RETURNING failed').get(name) as { failed: number } | undefined
        if (!r) return 0
        this.db.prepare('UPDATE accounts SET locked_until = ? WHERE name = ?').run(lockUntil(r.failed), name)
        return r.failed
      })
      .immediate()
  }

  async addSession(s: SessionRecord): Promise<void> {
    this.db.transaction(() => {
      this.db.prepare('UPDATE accounts SET failed = 0, locked_until = 0 WHERE name = ?').run(s.account)
      this.db.prepare('INSERT INTO sessions (id_hash, account, csrf, created, expires) VALUES (?, ?, ?, ?, ?)').run(s.idHash, s.account, s.csrf, s.created, s.expires)
    })()
  }

  async getSession(idHash: string, now: number): Promise<(SessionRecord & { role: Role }) | undefined> {
    const r = this.db
      .prepare('SELECT s.id_hash, s.account, s.csrf, s.created, s.expires, a.role FROM sessions s JOIN accounts a ON a.name = s.account WHERE s.id_hash = ? AND s.expires > ?')
      .get(idHash, now) as Row | undefined
    return r && { idHash: r.id_hash as string, account: r.account as string, csrf: r.csrf as string, created: r.created as number, expires: r.expires as number, role: r.role as Role }
  }

  async deleteSession(idHash: string): Promise<void> {
    this.db.prepare('DELETE FROM sessions WHERE id_hash = ?').run(idHash)
  }

  async counts(): Promise<{ devices: number; online: number; offline: number; updating: number }> {
    const rows = this.db.prepare('SELECT state, COUNT(*) AS n FROM devices GROUP BY state').all() as Array<{ state: string; n: number }>
    const of = (s: string) => rows.find(r => r.state === s)?.n ?? 0
    const updating = (this.db.prepare(`SELECT COUNT(*) AS n FROM devices WHERE ota_phase IN (${UPDATING.map(() => '?').join(', ')})`).get(...UPDATING) as { n: number }).n
    return { devices: of('online') + of('offline'), online: of('online'), offline: of('offline'), updating }
  }

  async alertCounts(rules: AlertRules, now: number): Promise<Record<AlertKind | 'any', number>> {
    const parts = [...ALERTS.map(k => alertCondition(k, rules, now)), anyAlert(rules, now)]
    const row = this.db.prepare(`SELECT ${parts.map(([sql], i) => `SUM(CASE WHEN ${sql} THEN 1 ELSE 0 END) AS a${i}`).join(', ')} FROM devices`).get(...parts.flatMap(([, a]) => a)) as Record<
      string,
      number | null
    >
    return Object.fromEntries([...ALERTS, 'any'].map((k, i) => [k, row[`a${i}`] ?? 0])) as Record<AlertKind | 'any', number>
  }

  async maintain(now: number, retention: Retention): Promise<{ minutes: number; hours: number; deleted: number }> {
    return this.db
      .transaction(() => {
        const meta = (k: string) => Number((this.db.prepare('SELECT v FROM meta WHERE k = ?').get(k) as { v: string } | undefined)?.v ?? 0)
        const setMeta = (k: string, v: number) => this.db.prepare('INSERT INTO meta (k, v) VALUES (?, ?) ON CONFLICT (k) DO UPDATE SET v = excluded.v').run(k, String(v))
        // Closed buckets only; a sample that arrives after its minute was rolled up stays
        // in the raw series (the rollup is not redone).
        const minuteEnd = Math.floor(now / MINUTE) * MINUTE
        const minuteStart = Math.max(meta('rolled_1m'), minuteEnd - retention.rawMs)
        const avg = METRICS.map(m => `AVG(${m})`).join(', ')
        // each device's range along its key (withDevices); an empty range (the hourly
        // rollup's, most minutes) is not read at all
        const minutes =
          minuteStart < minuteEnd
            ? this.db
                .prepare(
                  `${withDevices('telemetry_raw')}
                   INSERT INTO telemetry_1m (device, ts, n, ${cols()})
                   SELECT t.device, (ts / ${MINUTE}) * ${MINUTE} AS bucket, COUNT(*), ${avg} FROM keyed JOIN telemetry_raw t ON t.device = keyed.device
                   WHERE ts >= ? AND ts < ? GROUP BY t.device, bucket
                   ON CONFLICT DO NOTHING`,
                )
                .run(minuteStart, minuteEnd).changes
            : 0
        setMeta('rolled_1m', minuteEnd)
        const hourEnd = Math.floor(now / HOUR) * HOUR
        const hourStart = Math.max(meta('rolled_1h'), hourEnd - retention.minuteMs)
        const weighted = METRICS.map(m => `SUM(${m} * n) / SUM(CASE WHEN ${m} IS NULL THEN 0 ELSE n END)`).join(', ')
        const hours =
          hourStart < hourEnd
            ? this.db
                .prepare(
                  `${withDevices('telemetry_1m')}
                   INSERT INTO telemetry_1h (device, ts, n, ${cols()})
                   SELECT t.device, (ts / ${HOUR}) * ${HOUR} AS bucket, SUM(n), ${weighted} FROM keyed JOIN telemetry_1m t ON t.device = keyed.device
                   WHERE ts >= ? AND ts < ? GROUP BY t.device, bucket
                   ON CONFLICT DO NOTHING`,
                )
                .run(hourStart, hourEnd).changes
            : 0
        setMeta('rolled_1h', hourEnd)
        let deleted = 0
        for (const [table, keep] of [
          ['telemetry_raw', retention.rawMs],
          ['telemetry_1m', retention.minuteMs],
          ['telemetry_1h', retention.hourMs],
        ] as const)
          deleted += this.db.prepare(`${withDevices(table)} DELETE FROM ${table} WHERE device IN (SELECT device FROM keyed) AND ts < ?`).run(now - keep).changes
        deleted += this.db.prepare('DELETE FROM events WHERE ts < ?').run(now - retention.hourMs).changes
        deleted += this.db.prepare('DELETE FROM ota_outcomes WHERE ts < ?').run(now - retention.hourMs).changes
        deleted += this.db.prepare('DELETE FROM commands WHERE sent_at < ?').run(now - retention.hourMs).changes
        this.db.prepare('DELETE FROM sessions WHERE expires <= ?').run(now)
        deleted += this.db.prepare('DELETE FROM receipts WHERE received_at < ?').run(now - retention.hourMs).changes
        deleted += this.db.prepare('DELETE FROM attestations WHERE received_at < ?').run(now - retention.hourMs).changes
        return { minutes, hours, deleted }
      })
      .immediate()
  }

  async close(): Promise<void> {
    this.db.close()
  }
}

/** An alert as a condition on a devices row (alerts.ts says what each means; alertsOf is its twin for one row). */
function alertCondition(kind: AlertKind, r: AlertRules, now: number): [string, unknown[]] {
  switch (kind) {
    case 'offline':
      return ["state = 'offline' AND state_since < ?", [now - r.offlineMs]]
    case 'under-voltage':
      return ["state = 'online' AND underVoltage > 0", []]
    case 'throttled':
      return ["state = 'online' AND throttled > 0", []]
    case 'hot':
      return ["state = 'online' AND tempC >= ?", [r.hotC]]
    case 'disk':
      return ['diskPercent >= ?', [r.diskPercent]]
    case 'problem':
      return ["problems <> '[]'", []]
    case 'outbox-backlog':
      return ["state = 'online' AND (outbox_queued >= ? OR outbox_oldest <= telemetry_ts - ?)", [r.outboxQueued, r.outboxAgeMs]]
    case 'update-failed':
      return ["ota_phase IN ('failed', 'rolled-back')", []]
    case 'low-score':
      return ['score < ?', [r.scoreBelow]]
  }
}

function anyAlert(r: AlertRules, now: number): [string, unknown[]] {
  const parts = ALERTS.map(k => alertCondition(k, r, now))
  return [parts.map(([sql]) => `(${sql})`).join(' OR '), parts.flatMap(([, a]) => a)]
}

function metricValues(r: Row): MetricValues {
  return Object.fromEntries(METRICS.map(m => [m, (r[m] as number | null) ?? null])) as Record<Metric, number | null>
}

function toDevice(r: Row): DeviceRow {
  return {
    id: r.id as string,
    firstSeen: r.first_seen as number,
    lastSeen: r.last_seen as number,
    state: r.state as 'online' | 'offline',
    stateSince: r.state_since as number,
    reason: (r.reason as string | null) ?? null,
    board: r.board as string,
    model: r.model as string,
    version: r.version as string,
    slot: (r.slot as string | null) ?? null,
    osVersion: (r.os_version as string | null) ?? null,
    osSlot: (r.os_slot as string | null) ?? null,
    problems: JSON.parse(r.problems as string) as string[],
    labels: JSON.parse(r.labels as string) as Record<string, string>,
    telemetryTs: (r.telemetry_ts as number | null) ?? null,
    latest: r.telemetry_ts === null || r.telemetry_ts === undefined ? null : metricValues(r),
    io: r.io == null ? null : (JSON.parse(r.io as string) as DeviceIo),
    outbox: r.outbox_queued == null ? null : { queued: r.outbox_queued as number, bytes: (r.outbox_bytes as number | null) ?? 0, oldestTs: (r.outbox_oldest as number | null) ?? null },
    ota: r.ota_phase == null ? null : { phase: r.ota_phase as OtaPhase, version: (r.ota_version as string | null) ?? null, at: r.ota_ts as number },
    score: r.score == null ? null : { ppm: r.score as number, epoch: r.score_epoch as number },
  }
}

function toCommand(r: Row, now: number): CommandRow {
  const status = r.status as 'ok' | 'error' | null
  return {
    id: r.id as string,
    device: r.device as string,
    name: r.name as string,
    operator: r.operator as string,
    by: r.sent_by as string,
    sentAt: r.sent_at as number,
    exp: r.exp as number,
    state: status ?? ((r.exp as number) <= now ? 'expired' : 'sent'),
    repliedAt: (r.replied_at as number | null) ?? null,
    result: r.result === null || r.result === undefined ? null : (JSON.parse(r.result as string) as unknown),
    refused: r.refused as number,
    refusedWhy: (r.refused_why as string | null) ?? null,
  }
}

function sortedLabels(labels: Readonly<Record<string, string>>): Record<string, string> {
  return Object.fromEntries(Object.entries(labels).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)))
}

function parseLabelFilter(f: string): (labels: Readonly<Record<string, string>>) => boolean {
  const eq = f.indexOf('=')
  if (eq < 0) return labels => Object.hasOwn(labels, f)
  const key = f.slice(0, eq)
  const value = f.slice(eq + 1)
  return labels => labels[key] === value
}
