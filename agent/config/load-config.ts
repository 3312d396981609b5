// Loads the agent configuration once at start: defaults < config file (YAML or JSON)
// < remote overrides (signed set-config, kept in the state dir) < environment < flags.
// Validated by one schema; an error names the field and where its value came from.

import { readFileSync } from 'node:fs'
import { extname, join } from 'node:path'
import { Value } from '@sinclair/typebox/value'
import type { TSchema } from '@sinclair/typebox'
import { parse as parseYaml } from 'yaml'
import { CairnError } from '../../protocol/errors.js'
import { ConfigSchema, envName, leafSettings, REMOTE_SETTABLE, type Config } from './config-schema.js'

export const REMOTE_CONFIG_FILE = 'config.remote.json'

/** One source of settings; `sourceOf` names individual values (e.g. "env CAIRN_FLEET"). */
export type Layer = { name: string; values: Record<string, unknown>; sourceOf?: Record<string, string> }

export interface LoadedConfig {
  readonly config: Readonly<Config>
  /** dotted path -> where the value came from (e.g. "flag --broker", "env CAIRN_FLEET") */
  readonly sources: ReadonlyMap<string, string>
  /** The remote layer (set-config) that could not be used at this load, and why: the
   * configuration is what the other layers give. The agent sets the file aside. */
  readonly remoteRejected?: { readonly file: string; readonly reason: string }
}

type Obj = Record<string, unknown>
/** Keys that would reach Object.prototype through a merge; config never uses them. */
export const UNSAFE_KEYS: ReadonlySet<string> = new Set(['__proto__', 'constructor', 'prototype'])
const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v)

function readConfigFile(file: string): Layer {
  let text: string
  try {
    text = readFileSync(file, 'utf8')
  } catch (err) {
    throw new CairnError('INVALID_CONFIG', `config file ${file}: cannot read (${(err as NodeJS.ErrnoException).code ?? err})`)
  }
  let values: unknown
  try {
    values = extname(file) === '.json' ? JSON.parse(text) : parseYaml(text)
  } catch (err) {
    throw new CairnError('INVALID_CONFIG', `config file ${file}: ${(err as Error).message.split('\n')[0]}`)
  }
  if (values == null) values = {}
  if (!isObj(values)) throw new CairnError('INVALID_CONFIG', `config file ${file}: the top level must be a mapping of settings`)
  return { name: `file ${file}`, values }
}

/** Values from CAIRN_* variables, coerced to each setting's type. */
export function envLayer(env: NodeJS.ProcessEnv): Layer {
  const values: Obj = {}
  const sourceOf: Record<string, string> = {}
  const aliases: Record<string, string[]> = { CAIRN_BROKER: ['broker', 'url'], CAIRN_OPERATOR_KEY: ['operatorKeys'] }
  const known = new Map<string, { path: string[]; schema: TSchema }>()
  for (const leaf of leafSettings()) known.set(envName(leaf.path), leaf)
  for (const [name, path] of Object.entries(aliases)) {
    const leaf = leafSettings().find(l => l.path.join('.') === path.join('.'))
    if (leaf) known.set(name, leaf)
  }
  for (const [name, raw] of Object.entries(env)) {
    if (!name.startsWith('CAIRN_') || raw === undefined) continue
    const leaf = known.get(name)
    if (!leaf) continue // other CAIRN_* variables (e.g. CAIRN_CONFIG) are not settings
    setPath(values, leaf.path, coerce(raw, leaf.schema, `env ${name}`))
    sourceOf[leaf.path.join('.')] = `env ${name}`
  }
  return { name: 'env', values, sourceOf }
}

export function coerce(raw: string, schema: TSchema, where: string): unknown {
  const kinds = schema.anyOf ? (schema.anyOf as TSchema[]).map(s => s.type ?? typeof s.const) : [schema.type]
  if (kinds.includes('array'))
    return raw
      .split(',')
      .map(s => s.trim())
      .filter(s => s.length > 0)
  if (kinds.includes('boolean')) {
    if (/^(1|true|yes|on)$/i.test(raw)) return true
    if (/^(0|false|no|off)$/i.test(raw)) return false
    throw new CairnError('INVALID_CONFIG', `${where}: expected true or false, got ${JSON.stringify(raw)}`)
  }
  if (kinds.includes('integer') || kinds.includes('number')) {
    const n = Number(raw)
    if (raw.trim() === '' || !Number.isFinite(n)) throw new CairnError('INVALID_CONFIG', `${where}: expected a number, got ${JSON.stringify(raw)}`)
    return n
  }
  return raw
}

export function setPath(target: Obj, path: readonly string[], value: unknown): void {
  if (path.some(k => UNSAFE_KEYS.has(k))) throw new CairnError('INVALID_CONFIG', `${path.join('.')}: not a setting`)
  let node = target
  for (const key of path.slice(0, -1)) {
    if (!isObj(node[key])) node[key] = {}
    node = node[key] as Obj
  }
  node[path[path.length - 1]!] = value
}

/** Reads the remote overrides a signed set-config wrote; a damaged file is reported,
 * not silently ignored. */
export function remoteLayer(stateDir: string, override?: Record<string, unknown>): Layer {
  const file = join(stateDir, REMOTE_CONFIG_FILE)
  if (override) return { name: `remote set-config (${file})`, values: structuredClone(override) }
  let text: string
  try {
    text = readFileSync(file, 'utf8')
  } catch {
    return { name: 'remote set-config', values: {} }
  }
  try {
    const values = JSON.parse(text) as unknown
    if (!isObj(values)) throw new Error('not an object')
    for (const k of Object.keys(values)) if (!(REMOTE_SETTABLE as readonly string[]).includes(k)) delete values[k]
    return { name: `remote set-config (${file})`, values }
  } catch (err) {
    throw new CairnError('INVALID_CONFIG', `${file}: damaged, not JSON of settings (${(err as Error).message})`)
  }
}

function merge(target: Obj, values: Obj, prefix: string, layer: Layer, sources: Map<string, string>): void {
  for (const [k, v] of Object.entries(values)) {
    const path = prefix ? `${prefix}.${k}` : k
    if (UNSAFE_KEYS.has(k)) throw new CairnError('INVALID_CONFIG', `${path}: not a setting (from ${layer.sourceOf?.[path] ?? layer.name})`)
    if (isObj(v)) {
      if (!isObj(target[k])) target[k] = {}
      merge(target[k] as Obj, v, path, layer, sources)
    } else {
      target[k] = Array.isArray(v) ? [...v] : v
      sources.set(path, layer.sourceOf?.[path] ?? layer.name)
    }
  }
}

/** Merges layers in order (later wins), fills defaults, validates, freezes. */
export function resolveConfig(layers: readonly Layer[]): LoadedConfig {
  const merged: Obj = {}
  const sources = new Map<string, string>()
  for (const layer of layers) merge(merged, layer.values, '', layer, sources)
  const withDefaults = Value.Default(ConfigSchema, merged) as Obj
  const errors = [...Value.Errors(ConfigSchema, withDefaults)]
  if (errors.length > 0) {
    const lines = errors.slice(0, 5).map(e => {
      const path = e.path.replace(/^\//, '').replace(/\//g, '.') || '(top level)'
      if (e.value === undefined) return `  ${path}: required; set it in the config file or with ${envName(path.split('.'))}`
      return `  ${path}: ${e.message}${describeValue(e.value)} (${sourceOf(path, sources)})`
    })
    throw new CairnError('INVALID_CONFIG', `invalid configuration:\n${[...new Set(lines)].join('\n')}`)
  }
  return { config: deepFreeze(withDefaults as Config), sources }
}

function describeValue(v: unknown): string {
  if (v === undefined) return ''
  const text = JSON.stringify(v)
  return `, got ${text && text.length > 60 ? text.slice(0, 60) + '…' : text}`
}

function sourceOf(path: string, sources: ReadonlyMap<string, string>): string {
  for (let p = path; p; p = p.includes('.') ? p.slice(0, p.lastIndexOf('.')) : '') {
    const s = sources.get(p)
    if (s) return `from ${s}`
    if (!p.includes('.')) break
  }
  // An unknown key has no source of its own: name every layer that set something.
  const layers = [...new Set(sources.values())]
  return layers.length ? `set in ${layers.join(', ')}` : 'required, not set anywhere'
}

function deepFreeze<T>(value: T): T {
  if (typeof value === 'object' && value !== null) {
    for (const v of Object.values(value)) deepFreeze(v)
    Object.freeze(value)
  }
  return value
}

export interface LoadOptions {
  configFile?: string | undefined
  env: NodeJS.ProcessEnv
  flags: Layer
}

/** Loads all layers; `remoteOverride` stands in for the remote file (to validate a
 * set-config before it is written).
 *
 * The remote layer may never keep a device from starting: a set-config is checked with
 * its values on top of every other layer as well (a value a flag shadows today is still
 * checked, since the flag may be gone at the next start), and at load a remote file
 * that is damaged, or that makes the configuration invalid where the other layers alone
 * do not, is left out and reported in `remoteRejected`. */
export function loadConfig(opts: LoadOptions, remoteOverride?: Record<string, unknown>): LoadedConfig {
  const file = opts.configFile ?? opts.env.CAIRN_CONFIG
  const base: Layer[] = [{ name: 'defaults', values: {} }]
  if (file) base.push(readConfigFile(file))
  const env = envLayer(opts.env)
  // The state dir decides where remote overrides live, so resolve it first.
  const pre = [...base, env, opts.flags]
  const stateDir = pre.reduce<unknown>((acc, l) => (typeof l.values.stateDir === 'string' ? l.values.stateDir : acc), '/var/lib/cairn') as string
  if (remoteOverride) {
    const remote = remoteLayer(stateDir, remoteOverride)
    resolveConfig([...pre, remote])
    return resolveConfig([...base, remote, env, opts.flags])
  }
  let remote: Layer
  try {
    remote = remoteLayer(stateDir)
    return resolveConfig([...base, remote, env, opts.flags])
  } catch (err) {
    const withoutRemote = resolveConfig(pre)
    return { ...withoutRemote, remoteRejected: { file: join(stateDir, REMOTE_CONFIG_FILE), reason: (err as Error).message } }
  }
}
