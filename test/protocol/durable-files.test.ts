// protocol/durable-files.ts: the atomic write (content, mode, replace, exclusive create,
// no temp file left on success or failure, a stale temp file cannot leak its mode) and
// the directory fsync (best effort unless required).
import t from 'tap'
import { chmodSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fsyncDir, fsyncDirSync, writeFileAtomic } from '../../protocol/durable-files.js'

const tmp = () => mkdtempSync(join(tmpdir(), 'cairn-durable-'))
const mode = (f: string) => statSync(f).mode & 0o777

t.test('writes the content with the mode asked for, replacing the old file, leaving no temp file', async t => {
  const dir = tmp()
  const f = join(dir, 'state.json')
  writeFileAtomic(f, '{"a":1}\n')
  t.equal(readFileSync(f, 'utf8'), '{"a":1}\n')
  t.equal(mode(f), 0o644, 'default 0644')
  writeFileAtomic(f, new Uint8Array([0x7b, 0x7d]), { mode: 0o600 })
  t.equal(readFileSync(f, 'utf8'), '{}', 'bytes too, over the old file')
  t.equal(mode(f), 0o600, 'the new file has the new mode')
  const big = Buffer.alloc(8 << 20, 7)
  writeFileAtomic(f, big)
  t.ok(readFileSync(f).equals(big), 'all of a large write')
  t.same(readdirSync(dir), ['state.json'])
})

t.test('exclusive: an existing file is never replaced', async t => {
  const dir = tmp()
  const f = join(dir, 'device.key')
  writeFileAtomic(f, 'first', { mode: 0o600, exclusive: true })
  t.throws(() => writeFileAtomic(f, 'second', { mode: 0o600, exclusive: true }), { name: 'CairnError', code: 'BAD_REQUEST', message: /already exists/ })
  t.equal(readFileSync(f, 'utf8'), 'first')
  t.same(readdirSync(dir), ['device.key'], 'the refused temp file is removed')
})

t.test('a temp file left by a crash cannot make the new file readable by others', async t => {
  const dir = tmp()
  const stale = join(dir, `.k.${process.pid}.tmp`)
  writeFileSync(stale, 'old')
  chmodSync(stale, 0o666)
  writeFileAtomic(join(dir, 'k'), 'secret', { mode: 0o600 })
  t.equal(mode(join(dir, 'k')), 0o600)
  t.same(readdirSync(dir), ['k'])
})

t.test('a write that cannot happen throws, leaving the old state and no temp file', async t => {
  const dir = tmp()
  t.throws(() => writeFileAtomic(join(dir, 'missing', 'f'), 'x'), /ENOENT/)
  // A directory in the way: the temp file is written, then the rename fails.
  mkdirSync(join(dir, 'd'))
  writeFileSync(join(dir, 'd', 'inside'), 'kept')
  t.throws(() => writeFileAtomic(join(dir, 'd'), 'x'), /EISDIR|ENOTEMPTY|EEXIST/)
  t.equal(readFileSync(join(dir, 'd', 'inside'), 'utf8'), 'kept')
  t.same(readdirSync(dir), ['d'], 'the temp file is removed')
})

t.test('directory fsync: best effort by default, an error when required', async t => {
  const dir = tmp()
  fsyncDirSync(dir)
  fsyncDirSync(dir, { required: true })
  await fsyncDir(dir, { required: true })
  const gone = join(dir, 'gone')
  t.doesNotThrow(() => fsyncDirSync(gone), 'a missing directory is skipped…')
  await t.resolves(fsyncDir(gone))
  t.throws(() => fsyncDirSync(gone, { required: true }), /ENOENT/, '…unless the sync is required')
  await t.rejects(fsyncDir(gone, { required: true }), /ENOENT/)
})
