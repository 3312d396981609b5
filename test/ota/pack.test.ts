// `cairn release pack` on a copy of the built bundle (dist/, npm run build): what the
// release target holds, and the checks of the bundle it packs before it writes anything:
// a Cairn bundle (it prints its version as the device's staging will ask it to) of the
// version given, with the bundle-assets.json of that build listing files that exist.

import t from 'tap'
import { cpSync, existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { main } from '../../cli/cli.js'
import { readTar } from '../../protocol/tar.js'
import { tmp } from '../helpers/agent.js'
import { DIST_BUNDLE } from '../helpers/ota.js'

const DIST = join(DIST_BUNDLE, '..')

async function cli(args: string[]) {
  let out = ''
  let err = ''
  const code = await main(args, { out: { write: (s: string) => (out += s) }, err: { write: (s: string) => (err += s) }, env: {} })
  return { code, out, err }
}

/** A copy of dist/ to spoil; its build's version. */
function builtCopy(): { dir: string; version: string } {
  const dir = tmp('cairn-pack-src-')
  cpSync(DIST, dir, { recursive: true })
  return { dir, version: (JSON.parse(readFileSync(join(dir, 'bundle-assets.json'), 'utf8')) as { version: string }).version }
}

const pack = (dir: string, version: string, out: string) => cli(['release', 'pack', '--bundle', join(dir, 'cairn.mjs'), '--version', version, '--out', out])

t.test('the target holds the bundle, VERSION, the inference worker and its files, and the native addon', async t => {
  if (!existsSync(DIST_BUNDLE)) throw new Error('dist/cairn.mjs not built: npm run build')
  const { dir, version } = builtCopy()
  const out = join(tmp(), 'target.tar')
  const res = await pack(dir, version, out)
  t.equal(res.code, 0, res.err)
  t.match(res.out, /wrote .*target\.tar/)
  const paths = readTar(readFileSync(out)).map(e => e.path)
  for (const want of [
    'cairn.mjs',
    'VERSION',
    'infer-worker.mjs',
    'tfjs-backend-wasm.wasm',
    'tfjs-backend-wasm-simd.wasm',
    'shapes.cairnmodel',
    'demo-samples/circle.png',
    'node_modules/better-sqlite3/build/Release/better_sqlite3.node',
    'node_modules/bindings/package.json',
    'node_modules/file-uri-to-path/package.json',
  ])
    t.ok(paths.includes(want), want)
  t.equal(
    readTar(readFileSync(out))
      .find(e => e.path === 'VERSION')
      ?.data?.toString(),
    `${version}\n`,
  )
  // docs/ota.md, "What a release target is", names every file and directory at the
  // top of the slot and every package under node_modules.
  const doc = readFileSync(new URL('../../docs/ota.md', import.meta.url), 'utf8')
  const block = /### What a release target is[\s\S]*?```\n([\s\S]*?)```/.exec(doc)?.[1] ?? ''
  const files = readTar(readFileSync(out))
    .filter(e => e.type === 'file')
    .map(e => e.path)
  const named = new Set(files.map(p => (p.startsWith('node_modules/') ? p.split('/').slice(0, 2).join('/') + '/' : p.includes('/') ? p.split('/')[0] + '/' : p)))
  for (const name of named) t.match(block, new RegExp(`(^|\\s|, )${name.replaceAll('.', '\\.')}(\\s|,|$)`, 'm'), `docs/ota.md lists ${name}`)
})

t.test('refused before anything is written: another version, not a bundle, assets of another build or missing', async t => {
  const out = join(tmp(), 'target.tar')
  const refused = async (dir: string, version: string, why: RegExp, what: string) => {
    const res = await pack(dir, version, out)
    t.equal(res.code, 2, `${what}: a usage error`)
    t.match(res.err, why, what)
    t.notOk(existsSync(out), `${what}: nothing written`)
  }

  const a = builtCopy()
  await refused(a.dir, '9.9.9', new RegExp(`bundle-assets\\.json is from the build of "${a.version.replaceAll('.', '\\.')}", not 9\\.9\\.9`), 'a --version the build is not')
  // The assets list says 9.9.9 (copied from another build); the bundle itself does not.
  writeFileSync(join(a.dir, 'bundle-assets.json'), readFileSync(join(a.dir, 'bundle-assets.json'), 'utf8').replace(`"version": "${a.version}"`, '"version": "9.9.9"'))
  await refused(a.dir, '9.9.9', new RegExp(`is the bundle of "${a.version.replaceAll('.', '\\.')}", not 9\\.9\\.9`), 'a bundle of another version')

  const b = builtCopy()
  writeFileSync(join(b.dir, 'cairn.mjs'), "console.log('hello')\nprocess.exit(3)\n")
  await refused(b.dir, b.version, /is not a Cairn bundle: `node cairn\.mjs --version` failed/, 'not a Cairn bundle')

  const c = builtCopy()
  rmSync(join(c.dir, 'shapes.cairnmodel'))
  rmSync(join(c.dir, 'tfjs-backend-wasm.wasm'))
  await refused(c.dir, c.version, /bundle-assets\.json lists files that are not beside the bundle: shapes\.cairnmodel, tfjs-backend-wasm\.wasm/, 'assets missing')

  const d = builtCopy()
  await refused(d.dir.replace(/$/, '-nowhere'), d.version, /--bundle .*cairn\.mjs: ENOENT/, 'no bundle at all')
})
