// The model package: deterministic packing, verified and atomic unpacking, refusal of
// wrong bytes and hostile archives, and the shipped demo model's hash.
import t from 'tap'
import { existsSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { DEMO_MODEL_SHA256, demoModelPath } from '../../agent/infer/demo-model.js'
import { packModel, sha256Hex, unpackModel, writeModelDir, type ModelMeta } from '../../agent/infer/model-package.js'
import { packTar } from '../../ota/tar.js'

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
  for (const [name, bytes, message] of cases) {
    const dir = t.testdir({ pkg: bytes })
    const sha = sha256Hex(bytes)
    t.throws(() => unpackModel(join(dir, 'pkg'), sha, join(dir, 'models')), { code: 'MODEL_INVALID', message }, name)
    t.notOk(existsSync(join(dir, 'models', sha)), `${name}: nothing unpacked`)
  }
})

t.test('the shipped demo model is the one DEMO_MODEL_SHA256 names', async t => {
  const path = demoModelPath()
  if (path === undefined) return t.fail('agent/infer/demo/shapes.cairnmodel is missing: run agent/infer/demo/train.ts')
  const bytes = readFileSync(path)
  t.equal(sha256Hex(bytes), DEMO_MODEL_SHA256)
  t.ok(bytes.length < 300 * 1024, `small enough to commit: ${bytes.length} bytes`)
})
