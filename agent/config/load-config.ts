// Loads the agent configuration once at start: defaults < config file (YAML or JSON)
// < remote overrides (signed set-config, kept in the state dir) < environment < flags.
// Validated by one schema; an error names the field and where its value came from.

import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { CairnError } from '../../protocol/errors.js'
import { envLayer as programEnvLayer, readConfigFile, resolveLayers, type Layer, type Resolved } from '../../protocol/config-layers.js'
import { ConfigSchema, envName, REMOTE_SETTABLE, type Config } from './config-schema.js'

export const REMOTE_CONFIG_FILE = 'config.remote.json'

export interface LoadedConfig extends Resolved<Config> {
  /** The remote layer (set-config) that could not be used at this load, and why: the
   * configuration is what the other layers give. The agent sets the file aside. */
  readonly remoteRejected?: { readonly file: string; readonly reason: string }
}

const isObj = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v)

/** Values from CAIRN_* variables, coerced to each setting's type. */
export function envLayer(env: NodeJS.ProcessEnv): Layer {
  return programEnvLayer(env, { schema: ConfigSchema, envName, aliases: { CAIRN_BROKER: ['broker', 'url'], CAIRN_OPERATOR_KEY: ['operatorKeys'] } })
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

/** Merges layers in order (later wins), fills defaults, validates, freezes. */
export function resolveConfig(layers: readonly Layer[]): LoadedConfig {
  return resolveLayers(ConfigSchema, layers, path => `set it in the config file or with ${envName(path)}`)
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
