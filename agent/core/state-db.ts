// The agent's one SQLite file (WAL): outbox, replay store, operator trust changes,
// the heartbeat log, the OTA updaters' state, the task queue.
// Opened with an exclusive lock so two agents can never share a state dir.

import { join } from 'node:path'
import { openSqlite, type Db } from '../../protocol/sqlite.js'

export type { Db }
const STATE_DB_FILE = 'state.db'

const MIGRATIONS: readonly string[] = [
  `CREATE TABLE outbox (
     seq INTEGER PRIMARY KEY,
     id TEXT NOT NULL,
     cls INTEGER NOT NULL,
     topic TEXT NOT NULL,
     payload BLOB NOT NULL,
     props TEXT,
     retain INTEGER NOT NULL DEFAULT 0,
     created INTEGER NOT NULL,
     expires INTEGER
   );
   CREATE INDEX outbox_cls_seq ON outbox (cls, seq);
   CREATE TABLE seen_commands (id TEXT PRIMARY KEY, exp INTEGER NOT NULL) WITHOUT ROWID;
   CREATE INDEX seen_commands_exp ON seen_commands (exp);
   CREATE TABLE operator_keys (
     key_id TEXT PRIMARY KEY,
     state TEXT NOT NULL CHECK (state IN ('trusted', 'revoked')),
     changed_at INTEGER NOT NULL,
     changed_by TEXT NOT NULL
   ) WITHOUT ROWID;`,
  // Uptime proofs: the device's own signed heartbeat log (the chain head is its last
  // row) and the newest genuine beacon of each trusted validator.
  `CREATE TABLE heartbeats (
     seq INTEGER PRIMARY KEY,
     hash TEXT NOT NULL,
     created INTEGER NOT NULL,
     payload BLOB NOT NULL
   );
   CREATE TABLE beacons (
     validator TEXT PRIMARY KEY,
     slot INTEGER NOT NULL,
     hash TEXT NOT NULL,
     received INTEGER NOT NULL
   ) WITHOUT ROWID;`,
  // OTA: the updater's persisted state machine (ota/update-plan.ts), one row.
  `CREATE TABLE ota_state (
     id INTEGER PRIMARY KEY CHECK (id = 1),
     record TEXT NOT NULL,
     updated INTEGER NOT NULL
   );`,
  // Tasks (agent/task/queue.ts): one row per task id, ever (until retention), so a
  // task never runs twice; the receipt is kept to answer duplicates.
  `CREATE TABLE tasks (
     id TEXT PRIMARY KEY,
     seq INTEGER NOT NULL,
     type TEXT NOT NULL,
     state TEXT NOT NULL CHECK (state IN ('queued', 'running', 'done', 'failed', 'cancelled', 'rejected')),
     priority INTEGER NOT NULL,
     deadline INTEGER NOT NULL,
     dispatcher TEXT NOT NULL,
     local INTEGER NOT NULL DEFAULT 0,
     request_id TEXT NOT NULL,
     request_hash TEXT NOT NULL,
     params TEXT NOT NULL,
     reply_topic TEXT,
     correlation TEXT,
     received INTEGER NOT NULL,
     started INTEGER,
     finished INTEGER,
     attempts INTEGER NOT NULL DEFAULT 0,
     error_code TEXT,
     error_message TEXT,
     receipt BLOB
   ) WITHOUT ROWID;
   CREATE INDEX tasks_state ON tasks (state, priority, seq);
   CREATE INDEX tasks_finished ON tasks (finished);`,
  // Cache serve receipts (agent/cache/serve-receipts.ts): the open period's counters,
  // here beside the outbox so closing a period and queueing its receipt is one transaction.
  `CREATE TABLE cache_served (
     sha256 TEXT PRIMARY KEY,
     bytes INTEGER NOT NULL,
     requests INTEGER NOT NULL,
     ranges INTEGER NOT NULL
   ) WITHOUT ROWID;
   CREATE TABLE cache_served_period (
     id INTEGER PRIMARY KEY CHECK (id = 1),
     seq INTEGER NOT NULL,
     start INTEGER NOT NULL,
     not_modified INTEGER NOT NULL,
     unsatisfiable INTEGER NOT NULL
   );`,
  // OTA for the OS itself (Cairn OS, A/B partitions): the second updater's record, in
  // a table of its own so agents from before it still read ota_state as they wrote it.
  `CREATE TABLE ota_os_state (
     id INTEGER PRIMARY KEY CHECK (id = 1),
     record TEXT NOT NULL,
     updated INTEGER NOT NULL
   );`,
]

export function openStateDb(stateDir: string, opts: { file?: string } = {}): Db {
  return openSqlite(join(stateDir, opts.file ?? STATE_DB_FILE), {
    migrations: MIGRATIONS,
    // A second agent on the same state dir fails fast instead of interleaving with this one.
    exclusive: { inUseHint: 'is another agent running with this state dir?' },
    busyTimeoutMs: 0,
    // FULL: a committed must-keep record survives power loss. Telemetry is batched
    // (outbox.lazyWriteMs), so the fsyncs this costs are few.
    synchronous: 'FULL',
    journalSizeLimit: 4 * 1024 * 1024,
    // After an OTA rollback (ota/) the older agent must run on the file the newer one
    // migrated. That is why migrations are append-only and additive (new tables and
    // nullable columns only): older code never sees a change to what it reads.
    newerSchema: 'open',
  })
}
