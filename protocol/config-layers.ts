// Layered settings for every long-running Cairn program (the agent, the fleet service):
// defaults < a YAML or JSON file < environment < flags, merged, filled with the schema's
// defaults, validated by one TypeBox schema, frozen. An error names the setting and the
// layer its value came from ("from flag --listen", "from env CAIRN_FLEET"). Each program
// brings its own schema and variable names; the agent adds its signed remote layer
// (agent/config/load-config.ts). No library merges layers and names a bad value's
// source this way; the parsing (yaml) and the validation (TypeBox) are libraries.

import { readFileSync } from 'node:fs'
import { extname } from 'node:path'
import { Value } from '@sinclair/typebox/value'
import type { TObject, TSchema } from '@sinclair/typebox'
import { parse as parseYaml } from 'yaml'
import { CairnError } from './errors.js'

/** One source of settings; `sourceOf` names individual values (e.g. "env CAIRN_FLEET"). */
export type Layer = { name: string; values: Record<string, unknown>; sourceOf?: Record<string, string> }

export interface Resolved<T> {
  readonly config: Readonly<T>
  /** dotted path -> where the value came from (e.g. "flag --broker", "env CAIRN_FLEET") */
  readonly sources: ReadonlyMap<string, string>
}

type Obj = Record<string, unknown>
/** Keys that would reach Object.prototype through a merge; no setting uses them. */
export const UNSAFE_KEYS: ReadonlySet<string> = new Set(['__proto__', 'constructor', 'prototype'])
const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v)

/** Every leaf setting of a schema with its path, for variable names, flags and docs. */
export function leafSettings(schema: TSchema, prefix: string[] = []): Array<{ path: string[]; schema: TSchema }> {
  const out: Array<{ path: string[]; schema: TSchema }> = []
  const props = (schema as { properties?: Record<string, TSchema> }).properties
  if (schema.type === 'object' && props) {
    for (const [k, v] of Object.entries(props)) out.push(...leafSettings(v, [...prefix, k]))
  } else {
    out.push({ path: prefix, schema })
  }
  return out
}

/** The variable names of one program: envNamer('CAIRN_')(['telemetry', 'periodS']) is
 * CAIRN_TELEMETRY_PERIOD_S. */
export function envNamer(prefix: string): (path: readonly string[]) => string {
  return path => prefix + path.map(p => p.replace(/([a-z0-9])([A-Z])/g, '$1_$2').toUpperCase()).join('_')
}

export function readConfigFile(file: string): Layer {
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

export interface EnvSpec {
  schema: TSchema
  envName: (path: readonly string[]) => string
  /** Extra variable names for a setting, e.g. CAIRN_BROKER for broker.url. */
  aliases?: Readonly<Record<string, readonly string[]>>
}

/** Values from the program's variables, coerced to each setting's type; other variables
 * with the same prefix (e.g. CAIRN_CONFIG) are not settings and are left alone. */
export function envLayer(env: NodeJS.ProcessEnv, spec: EnvSpec): Layer {
  const values: Obj = {}
  const sourceOf: Record<string, string> = {}
  const leaves = leafSettings(spec.schema)
  const known = new Map<string, { path: string[]; schema: TSchema }>()
  for (const leaf of leaves) known.set(spec.envName(leaf.path), leaf)
  for (const [name, path] of Object.entries(spec.aliases ?? {})) {
    const leaf = leaves.find(l => l.path.join('.') === path.join('.'))
    if (leaf) known.set(name, leaf)
  }
  for (const [name, raw] of Object.entries(env)) {
    if (raw === undefined) continue
    const leaf = known.get(name)
    if (!leaf) continue
    setPath(values, leaf.path, coerce(raw, leaf.schema, `env ${name}`))
    sourceOf[leaf.path.join('.')] = `env ${name}`
  }
  return { name: 'env', values, sourceOf }
}

/** A flag's or a variable's text as the setting's type: a list split on commas, a
 * boolean from true/false (yes/no, on/off, 1/0), a number; a bad one names `where`. */
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

/** Flags as a layer: each given value (undefined: not given) set at its setting's path,
 * coerced by the schema so an error names the flag. Lists and booleans pass as given. */
export function flagLayer(values: Readonly<Record<string, unknown>>, flags: ReadonlyArray<{ flag: string; path: string }>, schema: TSchema): Layer {
  const out: Obj = {}
  const sourceOf: Record<string, string> = {}
  const leaves = new Map(leafSettings(schema).map(l => [l.path.join('.'), l]))
  for (const { flag, path } of flags) {
    const raw = values[flag]
    if (raw === undefined) continue
    const leaf = leaves.get(path)
    if (!leaf) throw new Error(`flag --${flag}: no setting ${path}`)
    setPath(out, path.split('.'), Array.isArray(raw) || typeof raw === 'boolean' ? raw : coerce(String(raw), leaf.schema, `flag --${flag}`))
    sourceOf[path] = `flag --${flag}`
  }
  return { name: 'flags', values: out, sourceOf }
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

/** Merges layers in order (later wins), fills defaults, validates, freezes. `unset`
 * says how to set a required setting that no layer gave. */
export function resolveLayers<S extends TObject>(schema: S, layers: readonly Layer[], unset: (path: string[]) => string): Resolved<import('@sinclair/typebox').Static<S>> {
  const merged: Obj = {}
  const sources = new Map<string, string>()
  for (const layer of layers) merge(merged, layer.values, '', layer, sources)
  const withDefaults = Value.Default(schema, merged) as Obj
  const errors = [...Value.Errors(schema, withDefaults)]
  if (errors.length > 0) {
    const lines = errors.slice(0, 5).map(e => {
      const path = e.path.replace(/^\//, '').replace(/\//g, '.') || '(top level)'
      if (e.value === undefined) return `  ${path}: required; ${unset(path.split('.'))}`
      return `  ${path}: ${e.message}${describeValue(e.value)} (${sourceOf(path, sources)})`
    })
    throw new CairnError('INVALID_CONFIG', `invalid configuration:\n${[...new Set(lines)].join('\n')}`)
  }
  return { config: deepFreeze(withDefaults as import('@sinclair/typebox').Static<S>), sources }
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

const esc = (s: string) => s.replace(/\|/g, '\\|')

function typeOf(s: TSchema): string {
  const x = s as Record<string, unknown>
  if (Array.isArray(x.anyOf)) return (x.anyOf as TSchema[]).map(v => ('const' in v ? JSON.stringify(v.const) : typeOf(v))).join(' | ')
  if (x.type === 'array') return `array of ${typeOf(x.items as TSchema)}${typeof x.minItems === 'number' ? ` (at least ${x.minItems})` : ''}`
  const limits: string[] = []
  if (typeof x.pattern === 'string') limits.push(`pattern \`${x.pattern}\``)
  if (x.minLength === 1) limits.push('non-empty')
  if (typeof x.minimum === 'number') limits.push(`≥ ${x.minimum}`)
  if (typeof x.maximum === 'number') limits.push(`≤ ${x.maximum}`)
  return `${String(x.type)}${limits.length ? ` (${limits.join(', ')})` : ''}`
}

/** A Markdown table of every setting: path, variable, type, default, description. */
export function settingsTable(schema: TObject, envName: (path: readonly string[]) => string): string {
  const required = new Set((schema.required as string[] | undefined) ?? [])
  const rows = leafSettings(schema).map(({ path, schema: leaf }) => {
    const s = leaf as Record<string, unknown>
    const def = 'default' in s ? `\`${JSON.stringify(s.default)}\`` : path.length === 1 && required.has(path[0]!) ? '— (required)' : '— (unset)'
    return `| \`${path.join('.')}\` | \`${envName(path)}\` | ${esc(typeOf(leaf))} | ${esc(def)} | ${esc(String(s.description ?? ''))} |`
  })
  return ['| Setting | Environment variable | Type | Default | Description |', '|---|---|---|---|---|', ...rows].join('\n')
}

/** A document with the part between two marker lines replaced by `content`. */
export function spliceGenerated(doc: string, name: string, markers: { start: string; end: string }, content: string): string {
  const a = doc.indexOf(markers.start)
  const b = doc.indexOf(markers.end)
  if (a < 0 || b < a) throw new Error(`${name} lacks the markers ${markers.start} … ${markers.end}`)
  return doc.slice(0, a + markers.start.length) + '\n' + content + '\n' + doc.slice(b)
}
