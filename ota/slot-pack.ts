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

import { existsSync, readFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
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
    { path: BUNDLE_FILE, type: 'file', mode: 0o755, data: readFileSync(o.bundle) },
    { path: VERSION_FILE, type: 'file', mode: 0o644, data: Buffer.from(o.version + '\n') },
  ]
  // Without these a release would run, but every inference task would fail to start.
  const assets = bundleAssets(dirname(o.bundle))
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
  return entries
}

/** The files the bundle needs beside it, as the build listed them (cli/bundle.mjs). */
function bundleAssets(dir: string): string[] {
  const file = join(dir, BUNDLE_ASSETS_FILE)
  let list: unknown
  try {
    list = (JSON.parse(readFileSync(file, 'utf8')) as { assets?: unknown }).assets
  } catch (err) {
    throw new Error(`${file}: ${(err as Error).message}: build with npm run build`, { cause: err })
  }
  if (!Array.isArray(list) || !list.every(a => typeof a === 'string' && a !== '' && !a.startsWith('/') && !a.split('/').includes('..'))) throw new Error(`${file}: not a list of relative file names`)
  return list as string[]
}

/** The release target's bytes (tar, or tar.gz with `gzip`). */
export function packSlot(o: PackOptions): Buffer {
  const tar = packTar(slotEntries(o))
  return o.gzip ? gzip(tar) : tar
}
