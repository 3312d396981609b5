// The configuration of a running agent, and how it changes without a restart: a signed
// `set-config` (the remote layer, validated on top of every other layer before it is
// persisted in the state dir), and a re-read on SIGHUP or `restart-agent`. Settings
// that can change live (telemetry, outbox, log) are applied in place; any other change
// restarts the agent in place, after the reply is on its way.

import { renameSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { CairnError } from '../../protocol/errors.js'
import { writeFileAtomic } from '../../protocol/durable-files.js'
import type { Logger } from '../../protocol/log.js'
import { REMOTE_SETTABLE, type Config } from '../config/config-schema.js'
import type { Problems } from './problems.js'
import { REMOTE_CONFIG_FILE, remoteLayer, type LoadedConfig } from '../config/load-config.js'
import { UNSAFE_KEYS } from '../../protocol/config-layers.js'

/** Settings applied in place; a change to any other restarts the agent. */
const LIVE_SECTIONS: ReadonlySet<string> = new Set(['telemetry', 'outbox', 'log'])

/** Where a rejected remote layer is kept (never read again; for the owner to look at). */
const REJECTED_PREFIX = 'config.remote.rejected'

export interface LiveConfigOptions {
  loaded: LoadedConfig
  /** Re-reads file, env and flags; with `remote`, uses those values in place of the
   * remote set-config file. Throws INVALID_CONFIG. */
  reload(remote?: Record<string, unknown>): LoadedConfig
  log: Logger
  /** Called after a live change, with the configuration before it. */
  applied(before: Readonly<Config>): void
  /** Restart in place (a change that cannot be applied live). */
  restart(): void
  publishEvent(kind: string, data: Record<string, unknown>): void
  problems: Problems
  now(): number
}

export class LiveConfig {
  private loaded: LoadedConfig

  constructor(private readonly o: LiveConfigOptions) {
    this.loaded = o.loaded
    this.setAsideRejected(o.loaded)
  }

  /** A remote layer the load could not use is moved aside, reported as an event and as a
   * problem in the status: the device runs on the other layers and stays reachable. */
  private setAsideRejected(loaded: LoadedConfig): void {
    const r = loaded.remoteRejected
    if (!r) return
    const keptAs = join(dirname(r.file), `${REJECTED_PREFIX}-${new Date(this.o.now()).toISOString().replace(/[:.]/g, '-')}.json`)
    try {
      renameSync(r.file, keptAs)
    } catch (err) {
      this.o.log.error({ err, file: r.file }, 'could not move the rejected remote configuration aside')
    }
    this.o.log.warn({ file: r.file, keptAs, reason: r.reason }, 'remote configuration (set-config) set aside: it would keep the agent from starting')
    this.o.publishEvent('config.remote-rejected', { reason: r.reason, keptAs })
    this.o.problems.set('REMOTE_CONFIG_REJECTED', `remote configuration set aside as ${keptAs}: ${r.reason}`, this.o.now())
  }

  get config(): Readonly<Config> {
    return this.loaded.config
  }

  /** The effective configuration with secrets redacted, and where each value came from. */
  view(): { config: unknown; sources: Record<string, string> } {
    return { config: redact(this.loaded.config), sources: Object.fromEntries(this.loaded.sources) }
  }

  /** `set-config`: validates the patch on top of every layer, persists it, applies it. */
  setRemote(patch: Record<string, unknown>): { applied: string[]; shadowed: string[] } {
    const stateDir = this.loaded.config.stateDir
    for (const k of Object.keys(patch)) if (!(REMOTE_SETTABLE as readonly string[]).includes(k)) throw new CairnError('BAD_REQUEST', `${k} cannot be set remotely`)
    const nextRemote = mergeDeep(remoteLayer(stateDir).values, patch)
    // Validate on top of every other layer before anything is written.
    const after = this.o.reload(nextRemote)
    try {
      writeFileAtomic(join(stateDir, REMOTE_CONFIG_FILE), JSON.stringify(nextRemote, null, 2) + '\n', { mode: 0o600 })
    } catch (err) {
      throw new CairnError('STATE_DIR', `cannot persist remote config: ${(err as Error).message}`)
    }
    const applied: string[] = []
    const shadowed: string[] = []
    for (const path of leafPaths(patch)) {
      const src = after.sources.get(path) ?? ''
      if (src.startsWith('remote')) applied.push(path)
      else shadowed.push(`${path} (overridden by ${src})`)
    }
    if (!this.applyLive(after)) {
      // The file or environment changed too, in settings that need a fresh start.
      this.o.log.info('other settings changed since start; restarting in place after the reply')
      setTimeout(() => this.o.restart(), 50)
    }
    this.o.publishEvent('config.changed', { applied, shadowed })
    return { applied, shadowed }
  }

  /** SIGHUP: re-reads everything; a broken configuration is logged and the running one kept. */
  reload(): void {
    let next: LoadedConfig
    try {
      next = this.o.reload()
    } catch (err) {
      this.o.log.error({ err }, 'reload failed; keeping the running configuration')
      return
    }
    this.setAsideRejected(next)
    if (!this.applyLive(next)) {
      this.o.log.info('settings changed that need a restart; restarting in place')
      this.o.restart()
    } else this.o.log.info('configuration reloaded')
  }

  /** Applies what can change live; returns false (and changes nothing) when the new
   * configuration differs in settings that need a fresh start. */
  private applyLive(next: LoadedConfig): boolean {
    const cur = this.loaded.config as Record<string, unknown>
    const nxt = next.config as Record<string, unknown>
    if (!Object.keys(nxt).every(k => LIVE_SECTIONS.has(k) || JSON.stringify(cur[k]) === JSON.stringify(nxt[k]))) return false
    const before = this.loaded.config
    this.loaded = next
    this.o.applied(before)
    return true
  }
}

function redact(config: Readonly<Config>): unknown {
  const copy = structuredClone(config) as Config
  if (copy.broker.password !== undefined) copy.broker.password = '(redacted)'
  return copy
}

function leafPaths(obj: Record<string, unknown>, prefix = ''): string[] {
  const out: string[] = []
  for (const [k, v] of Object.entries(obj)) {
    const p = prefix ? `${prefix}.${k}` : k
    if (v !== null && typeof v === 'object' && !Array.isArray(v)) out.push(...leafPaths(v as Record<string, unknown>, p))
    else out.push(p)
  }
  return out
}

function mergeDeep(a: Record<string, unknown>, b: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = structuredClone(a)
  for (const [k, v] of Object.entries(b)) {
    if (UNSAFE_KEYS.has(k)) throw new CairnError('INVALID_CONFIG', `${k}: not a setting`)
    const cur = out[k]
    out[k] = v !== null && typeof v === 'object' && !Array.isArray(v) && cur !== null && typeof cur === 'object' ? mergeDeep(cur as Record<string, unknown>, v as Record<string, unknown>) : v
  }
  return out
}
