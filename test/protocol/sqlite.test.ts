// protocol/sqlite.ts: a new file is 0600 (and so is its WAL), migrations run from empty
// and from a previous version, all or nothing; a newer schema is opened or refused as
// the caller says; the pragmas each caller asks for; the exclusive lock and its LOCKED
// error; failures are CairnErrors.
import t from 'tap'
import { chmodSync, existsSync, mkdtempSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { openSqlite, schemaVersion, type OpenSqliteOptions } from '../../protocol/sqlite.js'

const tmp = () => mkdtempSync(join(tmpdir(), 'cairn-sqlite-'))
const mode = (f: string) => statSync(f).mode & 0o777

const V1 = 'CREATE TABLE a (k TEXT PRIMARY KEY, v TEXT NOT NULL) WITHOUT ROWID;'
const V2 = 'CREATE TABLE b (n INTEGER PRIMARY KEY); ALTER TABLE a ADD COLUMN note TEXT;'
const base: OpenSqliteOptions = { migrations: [V1, V2], synchronous: 'NORMAL', busyTimeoutMs: 0, newerSchema: 'open' }
const tables = (db: ReturnType<typeof openSqlite>) => (db.prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name").all() as Array<{ name: string }>).map(r => r.name)

t.test('from empty: every migration, a 0600 file and WAL, the pragmas asked for', async t => {
  const file = join(tmp(), 'x.db')
  const db = openSqlite(file, { ...base, synchronous: 'FULL', journalSizeLimit: 4096, busyTimeoutMs: 250 })
  t.teardown(() => db.close())
  t.equal(schemaVersion(db), 2)
  t.same(tables(db), ['a', 'b'])
  db.prepare("INSERT INTO a (k, v) VALUES ('x', 'y')").run()
  t.equal(mode(file), 0o600, 'the database file is 0600')
  t.ok(existsSync(`${file}-wal`), 'WAL mode')
  t.equal(mode(`${file}-wal`), 0o600, 'and so is its WAL')
  t.equal(db.pragma('journal_mode', { simple: true }), 'wal')
  t.equal(db.pragma('synchronous', { simple: true }), 2, 'FULL')
  t.equal(db.pragma('journal_size_limit', { simple: true }), 4096)
  t.equal(db.pragma('busy_timeout', { simple: true }), 250)
  t.equal(db.pragma('locking_mode', { simple: true }), 'normal', 'not exclusive unless asked')
})

t.test('from a previous version: only the new steps run, the data stays', async t => {
  const file = join(tmp(), 'x.db')
  const old = openSqlite(file, { ...base, migrations: [V1] })
  old.prepare("INSERT INTO a (k, v) VALUES ('kept', '1')").run()
  t.equal(schemaVersion(old), 1)
  old.close()
  const db = openSqlite(file, base)
  t.teardown(() => db.close())
  t.equal(schemaVersion(db), 2)
  t.same(tables(db), ['a', 'b'])
  t.same(db.prepare('SELECT k, v, note FROM a').all(), [{ k: 'kept', v: '1', note: null }])
  t.equal(db.pragma('synchronous', { simple: true }), 1, 'NORMAL')
})

t.test('an existing file keeps its mode', async t => {
  const file = join(tmp(), 'x.db')
  openSqlite(file, base).close()
  chmodSync(file, 0o640)
  openSqlite(file, base).close()
  t.equal(mode(file), 0o640)
})

t.test('a failing step applies nothing: the version and the tables stay as they were', async t => {
  const file = join(tmp(), 'x.db')
  openSqlite(file, { ...base, migrations: [V1] }).close()
  t.throws(() => openSqlite(file, { ...base, migrations: [V1, V2, 'CREATE TABLE a (x);'] }), { name: 'CairnError', code: 'STATE_DIR', message: /already exists/ })
  const db = openSqlite(file, { ...base, migrations: [V1] })
  t.teardown(() => db.close())
  t.equal(schemaVersion(db), 1)
  t.same(tables(db), ['a'], 'step 2 rolled back with step 3')
})

t.test('a newer schema: opened as it is, or refused', async t => {
  const file = join(tmp(), 'x.db')
  openSqlite(file, base).close()
  const older = openSqlite(file, { ...base, migrations: [V1] })
  t.equal(schemaVersion(older), 2, 'opened as it is (an agent after an OTA rollback)')
  older.close()
  t.throws(() => openSqlite(file, { ...base, migrations: [V1], newerSchema: 'refuse' }), { code: 'STATE_DIR', message: /schema version 2 is newer/ })
})

t.test('exclusive: a second opener fails fast with LOCKED; shared: both open', async t => {
  const dir = tmp()
  const file = join(dir, 'x.db')
  const exclusive = { ...base, exclusive: { inUseHint: 'is another agent running with this state dir?' } }
  const first = openSqlite(file, exclusive)
  t.equal(first.pragma('locking_mode', { simple: true }), 'exclusive')
  t.throws(() => openSqlite(file, exclusive), { name: 'CairnError', code: 'LOCKED', message: `${file} is in use: is another agent running with this state dir?` })
  first.close()
  const again = openSqlite(file, exclusive)
  again.close()

  const shared = join(dir, 'shared.db')
  const a = openSqlite(shared, { ...base, busyTimeoutMs: 1000 })
  const b = openSqlite(shared, { ...base, busyTimeoutMs: 1000 })
  a.prepare("INSERT INTO a (k, v) VALUES ('from', 'a')").run()
  t.same(b.prepare('SELECT v FROM a').all(), [{ v: 'a' }], 'two connections share the file')
  a.close()
  b.close()
})

t.test('a file that cannot be opened is a STATE_DIR error', async t => {
  t.throws(() => openSqlite(join(tmp(), 'missing', 'x.db'), base), { name: 'CairnError', code: 'STATE_DIR', message: /cannot open/ })
})
