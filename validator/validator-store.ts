// The validator's SQLite store, shared by every process of one validator (same state
// dir, WAL mode, short IMMEDIATE transactions). Mosquitto hands shared-subscription
// messages out round-robin, not by device, so a device's chain must be judged where
// all processes see it: here. Processes on several machines would need a server
// database instead (docs/validator.md).

import { join } from 'node:path'
import { CairnError } from '../protocol/errors.js'
import type { ScoreParams } from '../protocol/proof-format.js'
import { openSqlite, type Db } from '../protocol/sqlite.js'

export type VDb = Db
const VALIDATOR_DB_FILE = 'validator.db'
/** Page cache per connection (KiB). */
const CACHE_KIB = 65_536

const MIGRATIONS: readonly string[] = [
  `CREATE TABLE meta (k TEXT PRIMARY KEY, v TEXT NOT NULL) WITHOUT ROWID;
   CREATE TABLE beacons (slot INTEGER PRIMARY KEY, hash TEXT NOT NULL, published INTEGER NOT NULL, payload BLOB NOT NULL);
   CREATE TABLE heartbeats (
     device TEXT NOT NULL, hash TEXT NOT NULL, seq INTEGER NOT NULL, recv INTEGER NOT NULL,
     payload BLOB NOT NULL, PRIMARY KEY (device, hash)
   ) WITHOUT ROWID;
   CREATE INDEX heartbeats_seq ON heartbeats (device, seq);
   CREATE INDEX heartbeats_recv ON heartbeats (device, recv);
   CREATE TABLE devices (
     device TEXT PRIMARY KEY, first_seen INTEGER NOT NULL, last_seen INTEGER NOT NULL,
     head_seq INTEGER NOT NULL, owner TEXT, fetch_at INTEGER NOT NULL DEFAULT 0,
     flagged_epoch INTEGER NOT NULL DEFAULT -1
   ) WITHOUT ROWID;
   CREATE TABLE challenges (
     id TEXT PRIMARY KEY, device TEXT NOT NULL, sent INTEGER NOT NULL, deadline INTEGER NOT NULL,
     payload BLOB NOT NULL, response BLOB, recv INTEGER
   ) WITHOUT ROWID;
   CREATE INDEX challenges_sent ON challenges (device, sent);
   CREATE TABLE attestations (device TEXT NOT NULL, epoch INTEGER NOT NULL, score INTEGER NOT NULL, payload BLOB NOT NULL, PRIMARY KEY (device, epoch)) WITHOUT ROWID;
   CREATE TABLE evidence (id TEXT PRIMARY KEY, device TEXT NOT NULL, kind TEXT NOT NULL, created INTEGER NOT NULL, payload BLOB NOT NULL) WITHOUT ROWID;
   CREATE INDEX evidence_device ON evidence (device, created);
   CREATE TABLE lease (name TEXT PRIMARY KEY, holder TEXT NOT NULL, until INTEGER NOT NULL) WITHOUT ROWID;
   CREATE TABLE instances (name TEXT PRIMARY KEY, token TEXT NOT NULL, seen INTEGER NOT NULL) WITHOUT ROWID;`,
  // Pruning deletes by receive time across all devices.
  `CREATE INDEX heartbeats_recv_all ON heartbeats (recv);`,
  // One b-tree fewer per heartbeat: keyed by (device, seq, hash), the table itself
  // answers the chain's lookups (a seq's heartbeats, a copy of one, the one below),
  // which the (device, seq) index did beside a (device, hash) key. A heartbeat's hash
  // fixes its seq, so the key is as unique as before.
  `CREATE TABLE heartbeats_v3 (
     device TEXT NOT NULL, seq INTEGER NOT NULL, hash TEXT NOT NULL, recv INTEGER NOT NULL,
     payload BLOB NOT NULL, PRIMARY KEY (device, seq, hash)
   ) WITHOUT ROWID;
   INSERT INTO heartbeats_v3 (device, seq, hash, recv, payload) SELECT device, seq, hash, recv, payload FROM heartbeats;
   DROP TABLE heartbeats;
   ALTER TABLE heartbeats_v3 RENAME TO heartbeats;
   CREATE INDEX heartbeats_recv ON heartbeats (device, recv);
   CREATE INDEX heartbeats_recv_all ON heartbeats (recv);`,
]

export function openValidatorDb(stateDir: string): VDb {
  const db = openSqlite(join(stateDir, VALIDATOR_DB_FILE), {
    migrations: MIGRATIONS,
    // Shared by every process of the validator: they wait for each other's short
    // transactions instead of holding the file.
    busyTimeoutMs: 5000,
    // NORMAL in WAL: a process crash loses nothing committed; a power cut may lose the
    // last transactions, which devices still hold in their heartbeat logs.
    synchronous: 'NORMAL',
    newerSchema: 'refuse',
  })
  // Every heartbeat reads and writes leaf pages of its device (its chain, its row) all
  // over the file: SQLite's default 2 MB page cache re-reads them from the OS each time.
  db.pragma(`cache_size = -${CACHE_KIB}`)
  return db
}

/** The scoring parameters are fixed for the life of a store: changing the slot length
 * under existing epochs would make old attestations impossible to recompute. */
export function pinParams(db: VDb, params: ScoreParams, validatorId: string, fleet: string): void {
  db.transaction(() => {
    const row = db.prepare("SELECT v FROM meta WHERE k = 'params'").get() as { v: string } | undefined
    const who = db.prepare("SELECT v FROM meta WHERE k = 'validator'").get() as { v: string } | undefined
    if (who && who.v !== validatorId) throw new CairnError('INVALID_CONFIG', `this state dir belongs to validator ${who.v}, not ${validatorId}`)
    if (row && row.v !== JSON.stringify(params)) {
      throw new CairnError('INVALID_CONFIG', `scoring parameters differ from the ones this store was made with (${row.v}); use a new state dir to change them`)
    }
    if (!row) db.prepare("INSERT INTO meta (k, v) VALUES ('params', ?)").run(JSON.stringify(params))
    if (!who) db.prepare("INSERT INTO meta (k, v) VALUES ('validator', ?)").run(validatorId)
    const f = db.prepare("SELECT v FROM meta WHERE k = 'fleet'").get() as { v: string } | undefined
    if (f && f.v !== fleet) throw new CairnError('INVALID_CONFIG', `this state dir belongs to fleet ${f.v}, not ${fleet}`)
    if (!f) db.prepare("INSERT INTO meta (k, v) VALUES ('fleet', ?)").run(fleet)
  }).immediate()
}

export function storedParams(db: VDb): ScoreParams | undefined {
  const row = db.prepare("SELECT v FROM meta WHERE k = 'params'").get() as { v: string } | undefined
  return row ? (JSON.parse(row.v) as ScoreParams) : undefined
}

export function getMeta(db: VDb, k: string): string | undefined {
  return (db.prepare('SELECT v FROM meta WHERE k = ?').get(k) as { v: string } | undefined)?.v
}

export function setMeta(db: VDb, k: string, v: string): void {
  db.prepare('INSERT INTO meta (k, v) VALUES (?, ?) ON CONFLICT (k) DO UPDATE SET v = excluded.v').run(k, v)
}

/** Takes or renews a named lease; true while this holder has it. */
export function holdLease(db: VDb, name: string, holder: string, now: number, ttlMs: number): boolean {
  return db
    .transaction(() => {
      const row = db.prepare('SELECT holder, until FROM lease WHERE name = ?').get(name) as { holder: string; until: number } | undefined
      if (row && row.holder !== holder && row.until > now) return false
      db.prepare('INSERT INTO lease (name, holder, until) VALUES (?, ?, ?) ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, until = excluded.until').run(name, holder, now + ttlMs)
      return true
    })
    .immediate()
}

export function releaseLease(db: VDb, name: string, holder: string): void {
  db.prepare('DELETE FROM lease WHERE name = ? AND holder = ?').run(name, holder)
}

/** Registers a process instance name; refuses a name another live process holds. */
export function claimInstance(db: VDb, name: string, token: string, now: number, staleMs: number): void {
  db.transaction(() => {
    const row = db.prepare('SELECT token, seen FROM instances WHERE name = ?').get(name) as { token: string; seen: number } | undefined
    if (row && row.token !== token && now - row.seen < staleMs) {
      throw new CairnError('LOCKED', `validator instance "${name}" is already running on this store; give each process its own --instance`)
    }
    db.prepare('INSERT INTO instances (name, token, seen) VALUES (?, ?, ?) ON CONFLICT (name) DO UPDATE SET token = excluded.token, seen = excluded.seen').run(name, token, now)
  }).immediate()
}

export function releaseInstance(db: VDb, name: string, token: string): void {
  db.prepare('DELETE FROM instances WHERE name = ? AND token = ?').run(name, token)
}
