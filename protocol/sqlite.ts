// Opening a Cairn SQLite file (the agent's state.db, the cache index, the validator's
// store): created 0600 (it holds operator trust, task receipts, evidence), WAL, the
// caller's durability and locking, then the schema brought up to date by numbered,
// append-only migrations under PRAGMA user_version. Every failure is a CairnError.

import Database from 'better-sqlite3'
import { closeSync, constants, openSync } from 'node:fs'
import { CairnError } from './errors.js'

export type Db = Database.Database

export interface OpenSqliteOptions {
  /** Schema steps, append-only: step i takes user_version i to i + 1. Each runs inside a
   * transaction, so none may change the journal mode or VACUUM. */
  migrations: readonly string[]
  /** FULL: a commit survives power loss. NORMAL (in WAL): a process crash loses nothing
   * committed, a power cut may lose the last transactions. */
  synchronous: 'FULL' | 'NORMAL'
  /** How long to wait for another connection's lock; 0 fails at once. */
  busyTimeoutMs: number
  /** locking_mode = EXCLUSIVE: one process owns the file; a second fails fast with LOCKED,
   * whose message ends with `inUseHint` ("is another agent running with this state dir?"). */
  exclusive?: { inUseHint: string }
  /** Bytes of WAL kept after a checkpoint; SQLite's default keeps all of it. */
  journalSizeLimit?: number
  /** A file whose schema is newer than `migrations`: 'open' it as it is (an older agent
   * after an OTA rollback must run on the file the newer one migrated, so migrations only
   * ever add), or 'refuse' it (STATE_DIR). */
  newerSchema: 'open' | 'refuse'
}

export function openSqlite(file: string, opts: OpenSqliteOptions): Db {
  let db: Db
  try {
    createPrivate(file)
    db = new Database(file, { timeout: opts.busyTimeoutMs })
  } catch (err) {
    throw new CairnError('STATE_DIR', `${file}: cannot open (${(err as Error).message})`, { cause: err })
  }
  try {
    // EXCLUSIVE locking in WAL mode also does without the shared-memory file.
    if (opts.exclusive) db.pragma('locking_mode = EXCLUSIVE')
    db.pragma('journal_mode = WAL')
    db.pragma(`synchronous = ${opts.synchronous}`)
    if (opts.journalSizeLimit !== undefined) db.pragma(`journal_size_limit = ${opts.journalSizeLimit}`)
    migrate(db, file, opts)
  } catch (err) {
    db.close()
    throw openError(err, file, opts)
  }
  return db
}

/** The current schema version of an open file. */
export function schemaVersion(db: Db): number {
  return db.pragma('user_version', { simple: true }) as number
}

function migrate(db: Db, file: string, opts: OpenSqliteOptions): void {
  const target = opts.migrations.length
  const check = (version: number): boolean => {
    if (version <= target) return version < target
    if (opts.newerSchema === 'refuse') throw new CairnError('STATE_DIR', `${file}: schema version ${version} is newer than this program understands`)
    return false
  }
  // Versions only grow, so a file already at (or past) the target needs no write lock.
  if (!check(schemaVersion(db))) return
  // IMMEDIATE, and the version read again inside: processes sharing a file (the
  // validator's) may race to migrate it, and only one may apply each step.
  db.transaction(() => {
    const version = schemaVersion(db)
    if (!check(version)) return
    for (let v = version; v < target; v++) db.exec(opts.migrations[v]!)
    db.pragma(`user_version = ${target}`)
  }).immediate()
}

/** Makes the file 0600 if it is new; SQLite gives its -wal file the same mode. An
 * existing file keeps whatever mode it has. */
function createPrivate(file: string): void {
  try {
    closeSync(openSync(file, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, 0o600))
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err
  }
}

function openError(err: unknown, file: string, opts: OpenSqliteOptions): CairnError {
  if (err instanceof CairnError) return err
  const code = (err as { code?: string }).code ?? ''
  if (opts.exclusive && (code === 'SQLITE_BUSY' || code === 'SQLITE_LOCKED')) {
    return new CairnError('LOCKED', `${file} is in use: ${opts.exclusive.inUseHint}`, { cause: err })
  }
  if (code.startsWith('SQLITE_READONLY') || code === 'SQLITE_CANTOPEN') {
    return new CairnError('STATE_DIR', `${file}: state dir is read-only or not writable (${code})`, { cause: err })
  }
  if (code === 'SQLITE_FULL') return new CairnError('STATE_DIR', `${file}: disk full`, { cause: err })
  return new CairnError('STATE_DIR', `${file}: ${(err as Error).message}`, { cause: err })
}
