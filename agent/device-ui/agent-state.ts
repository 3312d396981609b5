// What the agent is doing, in the terms the status LED shows (led-patterns.ts): provisioning
// error, disk full, updating, no network, broker unreachable, online. Checked every `pollMs` (the broker
// link has no change events, and a 2-byte stat per second costs nothing) and fed by the
// OTA events on the local bus; emits 'change' when the state or the connection flips.

import { EventEmitter } from 'node:events'
import { existsSync } from 'node:fs'
import { networkInterfaces } from 'node:os'
import type { LocalBus, LocalEvent } from '../core/local-bus.js'
import { ledStateFor, type LedState } from './led-patterns.js'

export interface AgentStateOptions {
  bus: LocalBus
  connected(): boolean
  /** True when the broker can be reached at all; default: see hasNetwork(). */
  network(): boolean
  provisioningError(): boolean
  pollMs?: number
}

export interface AgentStateSnapshot {
  connected: boolean
  state: LedState
}

// OTA events that start and end "updating" (ota/updater.ts).
const UPDATING_ON = new Set(['ota.available', 'ota.staged', 'ota.switching'])
const UPDATING_OFF = new Set(['ota.committed', 'ota.rolled-back', 'ota.failed'])

export class AgentState extends EventEmitter<{ change: [AgentStateSnapshot] }> {
  private current: AgentStateSnapshot
  private updating = false
  private diskFull = false
  private timer: NodeJS.Timeout | undefined
  private readonly onEvent = (e: LocalEvent) => this.seeEvent(e)

  constructor(private readonly o: AgentStateOptions) {
    super()
    this.current = this.compute()
  }

  /** Current as of now (re-checked, so a reader never sees a poll-interval-old state). */
  get snapshot(): AgentStateSnapshot {
    this.refresh()
    return this.current
  }

  start(): void {
    this.o.bus.on('event', this.onEvent)
    this.timer = setInterval(() => this.refresh(), this.o.pollMs ?? 500)
    this.timer.unref()
    this.refresh()
  }

  stop(): void {
    this.o.bus.off('event', this.onEvent)
    if (this.timer) clearInterval(this.timer)
    this.removeAllListeners()
  }

  /** Re-reads every condition now; emits 'change' if anything differs. */
  refresh(): void {
    const next = this.compute()
    if (next.state === this.current.state && next.connected === this.current.connected) return
    this.current = next
    this.emit('change', next)
  }

  private seeEvent(e: LocalEvent): void {
    const state = e.data.state
    if (e.kind === 'storage.full' || e.kind === 'storage.ok') this.diskFull = e.kind === 'storage.full'
    else if (UPDATING_ON.has(e.kind) || (e.kind === 'ota.download' && state !== 'interrupted')) this.updating = true
    else if (UPDATING_OFF.has(e.kind) || (e.kind === 'ota.download' && state === 'interrupted')) this.updating = false
    else return
    this.refresh()
  }

  private compute(): AgentStateSnapshot {
    const connected = this.o.connected()
    const state = ledStateFor({
      provisioningError: safe(this.o.provisioningError, false),
      diskFull: this.diskFull,
      updating: this.updating,
      // Connected proves the network; only look at interfaces when not.
      network: connected || safe(this.o.network, true),
      broker: connected,
    })
    return { connected, state }
  }
}

function safe(f: () => boolean, fallback: boolean): boolean {
  try {
    return f()
  } catch {
    return fallback
  }
}

/** Any interface up with a routable address; a loopback broker needs none. */
export function hasNetwork(brokerUrl: string, interfaces: typeof networkInterfaces = networkInterfaces): boolean {
  let host = ''
  try {
    host = new URL(brokerUrl).hostname.replace(/^\[|\]$/g, '')
  } catch {
    // an unparsable URL fails elsewhere, loudly
  }
  if (host === 'localhost' || host === '::1' || host.startsWith('127.')) return true
  for (const list of Object.values(interfaces())) {
    for (const a of list ?? []) {
      if (a.internal) continue
      if (a.family === 'IPv4' && !a.address.startsWith('169.254.')) return true
      if (a.family === 'IPv6' && !/^fe[89ab]/i.test(a.address)) return true
    }
  }
  return false
}

export function provisionErrorCheck(file: string): () => boolean {
  return () => existsSync(file)
}
