// `cairn sim`: many simulated devices in one process, for load tests and fraud drills.
// Each device has its own ed25519 key, its own MQTT connection and its own heartbeat
// chain, and runs the agent's own device-side proof code (sim-device.ts): the same
// heartbeat schedule, beacon rule, request checks and signing as a real device. Only
// the storage differs: the newest heartbeats live in memory, not SQLite. Chosen devices
// can misbehave (equivocate, fork, replay, forge beacons, run a wrong clock, drop
// offline) so the validator's fraud checks can be exercised against real traffic.

import { pino } from 'pino'
import type { IClientOptions } from 'mqtt'
import { systemClock, type Clock } from '../../protocol/clock.js'
import { publicKeyFromKeyId } from '../../protocol/keys.js'
import type { Logger } from '../../protocol/log.js'
import { BeaconCache, SimDevice, zeroCounts, type DeviceCounts, type Faults, type Shared } from './sim-device.js'

export { SimDevice }

export const MisbehaviourKinds = ['equivocate', 'replay', 'clock', 'offline', 'fork', 'forge-beacon', 'hot', 'under-voltage', 'disk-full', 'update-failed', 'backlog'] as const
export type MisbehaviourKind = (typeof MisbehaviourKinds)[number]

export interface Misbehaviour {
  kind: MisbehaviourKind
  /** A fraction of the devices (0 < f <= 1, at least one device) or one device index. */
  who: { fraction: number } | { index: number }
  /** equivocate, fork, forge-beacon, replay: act on heartbeat seq 1 and every `arg`-th
   * after it (default 5). clock: offset in seconds. offline: seconds offline. hot,
   * under-voltage, disk-full, backlog (a large, growing outbox backlog): what its
   * telemetry says (with telemetryPeriodS). update-failed: once online, its updater
   * reports a release rolled back (an event). */
  arg?: number
  /** offline: seconds after the first connection (default: random within two periods). */
  at?: number
}

export interface SimOptions {
  devices: number
  brokerUrl: string
  fleet: string
  /** Trusted validator key ids. */
  validators: readonly string[]
  /** Connection options (protocol version, credentials, TLS); id and session are the sim's. */
  mqtt?: IClientOptions
  periodS?: number
  /** New connections per second. */
  rampPerS?: number
  /** Longest delay between a new beacon and the heartbeat citing it (capped at 0.3 slot, as in the agent). */
  jitterMs?: number
  /** Tolerated clock difference for challenges issued "in the future" (the agent's commands.skewS). */
  skewMs?: number
  owner?: string | null
  keepaliveS?: number
  /** Seconds between telemetry samples; with it each device also keeps a retained status
   * (online, its Will offline) as an agent does, for the fleet service. Default: none. */
  telemetryPeriodS?: number
  misbehave?: readonly Misbehaviour[]
  clock?: Clock
  random?: () => number
  log?: Logger
  /** Called once with an error that stops the ramp (EMFILE: out of file descriptors). */
  onFatal?: (err: Error) => void
}

interface SimDeviceStats extends DeviceCounts {
  index: number
  id: string
  faults: string[]
  connected: boolean
}

export interface SimStats {
  devices: number
  started: number
  connected: number
  everConnected: number
  offline: number
  /** Distinct beacon payloads this process checked (each once, shared by all devices). */
  beaconsVerified: number
  totals: DeviceCounts
  refusedByCode: Record<string, number>
  perDevice?: SimDeviceStats[]
}

export interface Sim {
  readonly devices: readonly SimDevice[]
  /** Resolves once every device has connected at least once. */
  readonly ready: Promise<void>
  stats(opts?: { perDevice?: boolean }): SimStats
  /** Stops timers, waits (bounded) for in-flight acknowledgements, disconnects. */
  stop(): Promise<SimStats>
}

/** Which devices get which faults: an index names one; a fraction picks that many at
 * random (at least one), preferring devices without a fault yet. */
function assignFaults(n: number, specs: readonly Misbehaviour[], random: () => number): Faults[] {
  const faults: Faults[] = Array.from({ length: n }, () => ({ clockMs: 0 }))
  const taken = new Set<number>()
  for (const m of specs) {
    let picks: number[]
    if ('index' in m.who) {
      if (!Number.isInteger(m.who.index) || m.who.index < 0 || m.who.index >= n) throw new RangeError(`misbehave ${m.kind}: device index ${m.who.index} is not in 0..${n - 1}`)
      picks = [m.who.index]
    } else {
      const want = Math.min(n, Math.max(1, Math.round(m.who.fraction * n)))
      const order = Array.from({ length: n }, (_, i) => i)
      for (let i = n - 1; i > 0; i--) {
        const j = Math.floor(random() * (i + 1))
        ;[order[i], order[j]] = [order[j]!, order[i]!]
      }
      picks = [...order.filter(i => !taken.has(i)), ...order.filter(i => taken.has(i))].slice(0, want)
    }
    for (const i of picks) {
      taken.add(i)
      const f = faults[i]!
      const every = Math.max(1, Math.floor(m.arg ?? 5))
      if (m.kind === 'equivocate') f.equivocate = every
      else if (m.kind === 'fork') f.fork = every
      else if (m.kind === 'forge-beacon') f.forge = every
      else if (m.kind === 'replay') f.replay = every
      else if (m.kind === 'clock') f.clockMs = Math.round((m.arg ?? 0) * 1000)
      else if (m.kind === 'hot' || m.kind === 'under-voltage' || m.kind === 'disk-full' || m.kind === 'update-failed' || m.kind === 'backlog') (f.telemetry ??= []).push(m.kind)
      else f.offline = { ms: Math.round((m.arg ?? 30) * 1000), atMs: m.at === undefined ? undefined : Math.round(m.at * 1000) }
    }
  }
  return faults
}

export function startSim(opts: SimOptions): Sim {
  if (!Number.isInteger(opts.devices) || opts.devices < 1) throw new RangeError('devices must be a positive integer')
  const random = opts.random ?? Math.random
  let fatal: Error | undefined
  let everConnected = 0
  let resolveReady!: () => void
  const ready = new Promise<void>(r => (resolveReady = r))
  const shared: Shared = {
    o: {
      brokerUrl: opts.brokerUrl,
      fleet: opts.fleet,
      periodS: opts.periodS ?? 60,
      jitterMs: opts.jitterMs ?? 5000,
      skewMs: opts.skewMs ?? 300_000,
      keepaliveS: opts.keepaliveS ?? 60,
      owner: opts.owner ?? null,
      mqtt: opts.mqtt ?? { protocolVersion: 5 },
      telemetryPeriodS: opts.telemetryPeriodS ?? 0,
    },
    validators: [...new Set(opts.validators)].map(publicKeyFromKeyId),
    beacons: new BeaconCache(),
    log: pino({ level: 'silent' }),
    clock: opts.clock ?? systemClock,
    random,
    refused: new Map(),
    fatal(err) {
      if (fatal) return
      fatal = err
      clearTimeout(rampTimer)
      opts.log?.error({ err, started }, 'sim stopped ramping')
      opts.onFatal?.(err)
    },
    firstConnect() {
      if (++everConnected === devices.length) resolveReady()
    },
  }
  const faults = assignFaults(opts.devices, opts.misbehave ?? [], random)
  const devices = faults.map((f, i) => new SimDevice(i, f, shared))

  // Ramp: start devices at rampPerS, in small batches off a timer.
  const rampPerS = opts.rampPerS ?? 200
  const t0 = performance.now()
  let started = 0
  let rampTimer: NodeJS.Timeout | undefined
  const pump = () => {
    const due = Math.min(devices.length, Math.floor(((performance.now() - t0) / 1000) * rampPerS) + 1)
    while (started < due && !fatal) devices[started++]!.start()
    if (started < devices.length && !fatal) rampTimer = setTimeout(pump, 20)
  }
  pump()

  const stats = (o: { perDevice?: boolean } = {}): SimStats => {
    const totals = zeroCounts()
    let connected = 0
    let offline = 0
    for (const d of devices) {
      for (const k of Object.keys(totals) as Array<keyof DeviceCounts>) totals[k] += d.counts[k]
      if (d.connected) connected++
      if (d.offline) offline++
    }
    const out: SimStats = { devices: devices.length, started, connected, everConnected, offline, beaconsVerified: shared.beacons.verified, totals, refusedByCode: Object.fromEntries(shared.refused) }
    if (o.perDevice) out.perDevice = devices.map(d => ({ index: d.index, id: d.id, faults: d.faultNames(), connected: d.connected, ...d.counts }))
    return out
  }

  let stopping: Promise<SimStats> | undefined
  return {
    devices,
    ready,
    stats,
    stop() {
      stopping ??= (async () => {
        clearTimeout(rampTimer)
        await Promise.all(devices.slice(0, started).map(d => d.stop()))
        return stats()
      })()
      return stopping
    },
  }
}
