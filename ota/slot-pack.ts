// Packs an agent release target: the tar of one slot tree, exactly what the device
// unpacks into a slot (ota/slots.ts) and the launcher starts:
//   cairn.mjs                       the esbuild bundle (npm run build)
//   VERSION                         its version, checked against the signed metadata
//   node_modules/better-sqlite3/    package.json, lib/, build/Release/better_sqlite3.node
//   node_modules/bindings/, node_modules/file-uri-to-path/   what finds the addon
//   infer-worker.mjs, tfjs-backend-wasm*.wasm, shapes.cairnmodel, demo-samples/
//                                   the inference worker and its files, from beside the
//                                   bundle, as its bundle-assets.json lists them
// The addon must match the device's architecture and Node ABI: pass `nodeModules`
// pointing at a tree built for it (image-build/stages/addon.sh cross-compiles one).
// Before packing it checks what the device would find only after downloading: that the
// bundle is a Cairn bundle of the version given (it runs `cairn.mjs --version` as the
// device's staging does) and that bundle-assets.json beside it is that build's list of
// files that exist.

import { execFileSync } from 'node:child_process'
import { copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync, statSync, symlinkSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { gzip, packTar, treeEntries, type TarEntry } from '../protocol/tar.js'
import { BUNDLE_FILE, VERSION_FILE } from './slots.js'

/** Written by the build beside cairn.mjs. */
const BUNDLE_ASSETS_FILE = 'bundle-assets.json'

export interface PackOptions {
  /** The bundle (dist/cairn.mjs). */
  bundle: string
  version: string
  /** A node_modules directory holding better-sqlite3 (with its built addon), bindings
   * and file-uri-to-path. Default: the repository's. */
  nodeModules?: string
  /** Further files for the slot root, by name. */
  extra?: Record<string, Buffer | string>
  gzip?: boolean
}

const RUNTIME_PACKAGES = ['better-sqlite3', 'bindings', 'file-uri-to-path'] as const

function slotEntries(o: PackOptions): TarEntry[] {
  const nm = o.nodeModules ?? new URL('../node_modules', import.meta.url).pathname
  const entries: TarEntry[] = [
    { path: BUNDLE_FILE, type: 'file', mode: 0o755, data: readBundle(o.bundle) },
    { path: VERSION_FILE, type: 'file', mode: 0o644, data: Buffer.from(o.version + '\n') },
  ]
  // Without these a release would run, but every inference task would fail to start.
  const assets = bundleAssets(dirname(o.bundle), o.version)
  if (!assets.includes('infer-worker.mjs')) throw new Error(`${dirname(o.bundle)} has no infer-worker.mjs beside the bundle: build with npm run build`)
  if (assets.some(a => a.startsWith('demo-samples/'))) entries.push({ path: 'demo-samples', type: 'dir', mode: 0o755 })
  for (const a of assets) entries.push({ path: a, type: 'file', mode: 0o644, data: readFileSync(join(dirname(o.bundle), a)) })
  for (const [name, data] of Object.entries(o.extra ?? {})) entries.push({ path: name, type: 'file', mode: 0o644, data: Buffer.from(data) })
  entries.push({ path: 'node_modules', type: 'dir', mode: 0o755 })
  for (const pkg of RUNTIME_PACKAGES) {
    const dir = join(nm, pkg)
    if (!existsSync(dir)) throw new Error(`${dir} is missing: cannot pack the native addon`)
    entries.push({ path: `node_modules/${pkg}`, type: 'dir', mode: 0o755 })
    const keep = (p: string) =>
      pkg !== 'better-sqlite3' || p === 'package.json' || p === 'LICENSE' || p.startsWith('lib') || p === 'build' || p === 'build/Release' || p === 'build/Release/better_sqlite3.node'
    for (const e of treeEntries(dir)) if (keep(e.path)) entries.push({ ...e, path: `node_modules/${pkg}/${e.path}` })
  }
  if (!entries.some(e => e.path.endsWith('better_sqlite3.node'))) throw new Error('better-sqlite3 has no built addon (build/Release/better_sqlite3.node)')
  checkBundleVersion(o.bundle, nm, o.version)
  return entries
}

function readBundle(file: string): Buffer {
  try {
    return readFileSync(file)
  } catch (err) {
    throw new Error(`--bundle ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, { cause: err })
  }
}

/** The files the bundle needs beside it, as its build listed them (cli/bundle.mjs):
 * the list must be this version's and every file on it must be there. */
function bundleAssets(dir: string, version: string): string[] {
  const file = join(dir, BUNDLE_ASSETS_FILE)
  let parsed: { version?: unknown; assets?: unknown }
  try {
    parsed = JSON.parse(readFileSync(file, 'utf8')) as typeof parsed
  } catch (err) {
    throw new Error(`${file}: ${(err as Error).message}: build with npm run build`, { cause: err })
  }
  const list = parsed.assets
  if (!Array.isArray(list) || !list.every(a => typeof a === 'string' && a !== '' && !a.startsWith('/') && !a.split('/').includes('..'))) throw new Error(`${file}: not a list of relative file names`)
  if (parsed.version !== version) throw new Error(`${file} is from the build of ${JSON.stringify(parsed.version)}, not ${version}: build with CAIRN_VERSION=${version} npm run build`)
  const missing = (list as string[]).filter(a => !isFile(join(dir, a)))
  if (missing.length > 0)
    throw new Error(
      `${file} lists files that are not beside the bundle: ${missing.slice(0, 5).join(', ')}${missing.length > 5 ? ` and ${missing.length - 5} more` : ''}: build again with npm run build`,
    )
  return list as string[]
}

function isFile(path: string): boolean {
  try {
    return statSync(path).isFile()
  } catch {
    return false
  }
}

/** Runs `cairn.mjs --version` as the device's staging will (ota/slots.ts), in a
 * scratch tree with the node_modules being packed: a file that is not a Cairn bundle,
 * or the bundle of another version, is refused here rather than on every device. The
 * addon is not loaded by --version, so a tree built for another architecture is fine. */
function checkBundleVersion(bundle: string, nodeModules: string, version: string): void {
  const dir = mkdtempSync(join(tmpdir(), 'cairn-pack-'))
  try {
    copyFileSync(bundle, join(dir, BUNDLE_FILE))
    symlinkSync(resolve(nodeModules), join(dir, 'node_modules'), 'dir')
    let out: string
    try {
      out = execFileSync(process.execPath, [join(dir, BUNDLE_FILE), '--version'], { cwd: dir, encoding: 'utf8', timeout: 60_000, stdio: ['ignore', 'pipe', 'pipe'] })
    } catch (err) {
      const e = err as { stderr?: string; status?: number | null; message: string }
      // Node prints the source line, a caret and a stack around the error: take the error.
      const lines = (e.stderr ?? '').split('\n').map(l => l.trim())
      const why = lines.find(l => /^\w*Error\b/.test(l)) ?? (e.status != null ? `exit ${e.status}` : e.message)
      throw new Error(`${bundle} is not a Cairn bundle: \`node ${BUNDLE_FILE} --version\` failed (${why.slice(0, 200)})`, { cause: err })
    }
    const said = out.trim()
    if (said !== version) throw new Error(`${bundle} is the bundle of ${JSON.stringify(said.slice(0, 64))}, not ${version}: build with CAIRN_VERSION=${version} npm run build`)
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}

/** The release target's bytes (tar, or tar.gz with `gzip`). */
export function packSlot(o: PackOptions): Buffer {
  const tar = packTar(slotEntries(o))
  return o.gzip ? gzip(tar) : tar
}
