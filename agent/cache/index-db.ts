// The cache's index: one SQLite file beside the objects (<stateDir>/cache/index.db),
// apart from the agent's state.db so that a lost or corrupt index costs only itself:
// it is rebuilt from the object files (whose names are their hashes), losing only pins
// and access times. Leases are not stored: they belong to the running process and
// would be stale after any crash.

import { join } from 'node:path'
import { openSqlite, type Db } from '../../protocol/sqlite.js'

export type IndexDb = Db
const INDEX_FILE = 'index.db'

const MIGRATIONS: readonly string[] = [
  `CREATE TABLE objects (
     sha256 TEXT PRIMARY KEY,
     bytes INTEGER NOT NULL,
     added INTEGER NOT NULL,
     last_access INTEGER NOT NULL,
     pinned INTEGER NOT NULL DEFAULT 0
   ) WITHOUT ROWID;
   CREATE INDEX objects_lru ON objects (pinned, last_access);`,
]

export interface IndexRow {
  sha256: string
  bytes: number
  added: number
  last_access: number
  pinned: number
}

export function openIndexDb(dir: string): IndexDb {
  return openSqlite(join(dir, INDEX_FILE), {
    migrations: MIGRATIONS,
    // One process manages a store: a CLI `gc` beside a running agent could delete an
    // object the agent has leased, so the second one fails fast instead.
    exclusive: { inUseHint: 'is an agent running with this state dir?' },
    busyTimeoutMs: 0,
    synchronous: 'NORMAL',
    newerSchema: 'open',
  })
}

export function indexStatements(db: IndexDb) {
  return {
    get: db.prepare<[string], IndexRow>('SELECT * FROM objects WHERE sha256 = ?'),
    all: db.prepare<[], IndexRow>('SELECT * FROM objects ORDER BY last_access, sha256'),
    // Eviction order: least recently used first; the name breaks ties so it is stable.
    lru: db.prepare<[], Pick<IndexRow, 'sha256' | 'bytes'>>('SELECT sha256, bytes FROM objects WHERE pinned = 0 ORDER BY last_access, sha256'),
    put: db.prepare<[string, number, number, number]>(
      'INSERT INTO objects (sha256, bytes, added, last_access) VALUES (?, ?, ?, ?) ON CONFLICT (sha256) DO UPDATE SET bytes = excluded.bytes, last_access = excluded.last_access',
    ),
    touch: db.prepare<[number, string]>('UPDATE objects SET last_access = MAX(last_access, ?) WHERE sha256 = ?'),
    pin: db.prepare<[number, string]>('UPDATE objects SET pinned = ? WHERE sha256 = ?'),
    del: db.prepare<[string]>('DELETE FROM objects WHERE sha256 = ?'),
    total: db.prepare<[], { n: number; b: number; p: number }>('SELECT COUNT(*) AS n, COALESCE(SUM(bytes), 0) AS b, COALESCE(SUM(CASE WHEN pinned THEN bytes ELSE 0 END), 0) AS p FROM objects'),
  }
}
