// The model package: deterministic packing, verified and atomic unpacking, refusal of
// wrong bytes and hostile archives, and the shipped demo model's hash.
import t from 'tap'
import { existsSync, readdirSync, readFileSync, rmSync, truncateSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { DEMO_MODEL_SHA256, demoModelPath } from '../../../agent/infer/demo-model.js'
import { MAX_PACKAGE_BYTES, packModel, unpackModel, writeModelDir, type ModelMeta } from '../../../agent/infer/model-package.js'
import { sha256Hex } from '../../../protocol/hash.js'
import { packTar } from '../../../protocol/tar.js'

/** Rewrites the first header of a ustar archive: another entry type and/or name, with
 * its checksum fixed, as a hostile packer would write it. */
function patchFirstHeader(tar: Buffer, opts: { type?: string; name?: string; linkname?: string }): Buffer {
  const out = Buffer.from(tar)
  if (opts.name !== undefined) out.fill(0, 0, 100).write(opts.name, 0, 100, 'utf8')
  if (opts.type !== undefined) out.write(opts.type, 156, 1, 'ascii')
  if (opts.linkname !== undefined) out.write(opts.linkname, 157, 100, 'utf8')
  out.write('        ', 148, 8, 'ascii')
  let sum = 0
  for (const b of out.subarray(0, 512)) sum += b
  out.write(sum.toString(8).padStart(6, '0') + '\0 ', 148, 8, 'ascii')
  return out
}

const meta: ModelMeta = { name: 't', input: { kind: 'tensor' }, output: { kind: 'tensor' } }
const modelJson = { format: 'layers-model' as const, modelTopology: { class_name: 'Sequential' }, weightsManifest: [{ paths: ['w.bin'], weights: [] }] }

t.test('pack is deterministic; unpack verifies, then reuses', async t => {
  const dir = t.testdir()
  writeModelDir(join(dir, 'src'), { meta, modelJson, shards: { 'w.bin': new Uint8Array([1, 2, 3]) } })
  const a = packModel(join(dir, 'src'))
  const b = packModel(join(dir, 'src'))
  t.equal(a.sha256, b.sha256)
  t.equal(a.sha256, sha256Hex(a.bytes))
  const file = join(dir, 'pkg')
  writeFileSync(file, a.bytes)
  const out = unpackModel(file, a.sha256, join(dir, 'models'))
  t.equal(out, join(dir, 'models', a.sha256))
  t.same([...readFileSync(join(out, 'w.bin'))], [1, 2, 3])
  t.same(readdirSync(join(dir, 'models')), [a.sha256], 'no temp dir left behind')
  // Already unpacked: the file is not read again (here: it no longer exists).
  rmSync(file)
  t.equal(unpackModel(file, a.sha256, join(dir, 'models')), out)
})

t.test('wrong bytes for the hash: CONTENT_MISMATCH, nothing unpacked', async t => {
  const dir = t.testdir({ pkg: 'these are not the bytes you asked for' })
  const want = 'b'.repeat(64)
  t.throws(() => unpackModel(join(dir, 'pkg'), want, join(dir, 'models')), { code: 'CONTENT_MISMATCH', message: /not loaded/ })
  t.notOk(existsSync(join(dir, 'models', want)))
})

t.test('bad packages are MODEL_INVALID', async t => {
  const cases: Array<[string, Buffer, RegExp]> = [
    ['not a tar', Buffer.alloc(1024, 9), /not a valid tar/],
    ['no metadata', packTar([{ path: 'model.json', type: 'file', mode: 0o644, data: Buffer.from(JSON.stringify(modelJson)) }]), /needs cairn-model.json/],
    [
      'bad metadata',
      packTar([
        { path: 'cairn-model.json', type: 'file', mode: 0o644, data: Buffer.from('{"name":"x","input":{"kind":"image"},"output":{"kind":"tensor"}}') },
        { path: 'model.json', type: 'file', mode: 0o644, data: Buffer.from(JSON.stringify(modelJson)) },
      ]),
      /image model needs height, width and channels/,
    ],
    [
      'shard outside the package',
      packTar([
        { path: 'cairn-model.json', type: 'file', mode: 0o644, data: Buffer.from(JSON.stringify(meta)) },
        { path: 'model.json', type: 'file', mode: 0o644, data: Buffer.from(JSON.stringify({ ...modelJson, weightsManifest: [{ paths: ['../../etc/passwd'], weights: [] }] })) },
      ]),
      /unsafe shard path/,
    ],
    [
      'missing shard',
      packTar([
        { path: 'cairn-model.json', type: 'file', mode: 0o644, data: Buffer.from(JSON.stringify(meta)) },
        { path: 'model.json', type: 'file', mode: 0o644, data: Buffer.from(JSON.stringify(modelJson)) },
      ]),
      /names shard w.bin, which is not in the package/,
    ],
  ]
  const good = () =>
    packTar([
      { path: 'w.bin', type: 'file', mode: 0o644, data: Buffer.from([1, 2, 3]) },
      { path: 'cairn-model.json', type: 'file', mode: 0o644, data: Buffer.from(JSON.stringify(meta)) },
      { path: 'model.json', type: 'file', mode: 0o644, data: Buffer.from(JSON.stringify(modelJson)) },
    ])
  cases.push(
    ['a symlink entry', patchFirstHeader(good(), { type: '2', linkname: '/etc/passwd' }), /not a valid tar: unsupported entry type "2"/],
    ['a hard link entry', patchFirstHeader(good(), { type: '1', linkname: 'model.json' }), /not a valid tar: unsupported entry type "1"/],
    ['a path with ..', patchFirstHeader(good(), { name: '../../w.bin' }), /not a valid tar: unsafe path/],
    ['an absolute path', patchFirstHeader(good(), { name: '/tmp/w.bin' }), /not a valid tar: unsafe path/],
  )
  for (const [name, bytes, message] of cases) {
    const dir = t.testdir({ pkg: bytes })
    const sha = sha256Hex(bytes)
    t.throws(() => unpackModel(join(dir, 'pkg'), sha, join(dir, 'models')), { code: 'MODEL_INVALID', message }, name)
    t.notOk(existsSync(join(dir, 'models', sha)), `${name}: nothing unpacked`)
    t.same(existsSync(join(dir, 'models')) ? readdirSync(join(dir, 'models')) : [], [], `${name}: no temp dir left`)
  }
})

t.test('a package over the size limit is refused before it is read', async t => {
  const dir = t.testdir()
  const file = join(dir, 'pkg')
  writeFileSync(file, '')
  truncateSync(file, MAX_PACKAGE_BYTES + 1) // sparse: no disk used
  t.throws(() => unpackModel(file, 'f'.repeat(64), join(dir, 'models')), { code: 'MODEL_INVALID', message: /more than/ })
})

t.test('the shipped demo model is the one DEMO_MODEL_SHA256 names', async t => {
  const path = demoModelPath()
  if (path === undefined) return t.fail('agent/infer/demo/shapes.cairnmodel is missing: run agent/infer/demo/train.ts')
  const bytes = readFileSync(path)
  t.equal(sha256Hex(bytes), DEMO_MODEL_SHA256)
  t.ok(bytes.length < 300 * 1024, `small enough to commit: ${bytes.length} bytes`)
})
