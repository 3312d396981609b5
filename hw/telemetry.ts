// Assembles one telemetry sample from the collectors. The collector object keeps
// the previous /proc/stat and network counters so utilisation and rates cover the
// interval between two calls of sample(); the first call has no cpu percent or
// rates. Each part is read independently: one failing part leaves its field out
// and never costs the rest of the sample.
import { accelerators, type Accelerator } from './accelerators.js'
import { detectBoard, isJetson, isRaspberryPi, type Board } from './board.js'
import type { HwContext } from './context.js'
import { buildCpuSample, readCoreMhz, readProcStat, type ProcStat } from './cpu.js'
import { readDisk, type DiskSample } from './disk.js'
import { readFan } from './fan.js'
import { readJetsonGpu } from './jetson.js'
import { buildNetSample, readNetDev, type NetCounters } from './net.js'
import { readLoadavg, readMemory, readUptime } from './proc.js'
import { readPmicPower } from './rpi5-power.js'
import { accumulateFlags, readHwmonThrottle, readVcgencmdThrottle, type ThrottleFlags, type ThrottleSample } from './rpi-throttle.js'
import type { TelemetrySample } from './schema.js'
import { readThermal } from './thermal.js'

export interface TelemetryCollector {
  board(): Promise<Board>
  sample(): Promise<TelemetrySample>
}

export interface TelemetryOptions {
  /** Milliseconds clock for rates; injected so tests step time instead of sleeping. */
  now?: () => number
  /** How long an accelerator inventory is reused (default 60 s): it may spawn nvidia-smi and rarely changes. */
  acceleratorTtlMs?: number
}

const DEFAULT_ACCELERATOR_TTL_MS = 60_000

export function createTelemetry(ctx: HwContext, opts: TelemetryOptions = {}): TelemetryCollector {
  const now = opts.now ?? Date.now
  const acceleratorTtl = opts.acceleratorTtlMs ?? DEFAULT_ACCELERATOR_TTL_MS
  let boardPromise: Promise<Board> | undefined
  let prevStat: ProcStat | undefined
  let prevNet: { at: number; counters: Map<string, NetCounters> } | undefined
  let throttleSeen: ThrottleFlags = {}
  let inventory: { at: number; list: Accelerator[] } | undefined
  // Deltas are only meaningful between consecutive snapshots, so overlapping calls queue.
  let queue: Promise<unknown> = Promise.resolve()

  // The board does not change while we run; detecting it once spares a uname per sample.
  const board = (): Promise<Board> => (boardPromise ??= detectBoard(ctx))

  function sample(): Promise<TelemetrySample> {
    const next = queue.then(takeSample)
    queue = next.catch(() => undefined)
    return next
  }

  async function inventoryAt(at: number, b: Board): Promise<Accelerator[]> {
    if (inventory !== undefined && at - inventory.at < acceleratorTtl && at >= inventory.at) return inventory.list
    const list = await accelerators(ctx, b)
    inventory = { at, list }
    return list
  }

  async function takeSample(): Promise<TelemetrySample> {
    const at = now()
    const b = await board()
    const [uptimeS, load, memory, stat, mhz, netCounters, thermal, disk, fan, accel] = await Promise.all([
      safe(readUptime(ctx)),
      safe(readLoadavg(ctx)),
      safe(readMemory(ctx)),
      safe(readProcStat(ctx)),
      safe(readCoreMhz(ctx)),
      safe(readNetDev(ctx)),
      safe(readThermal(ctx)),
      safe(readDisks(ctx.diskPaths ?? ['/'])),
      safe(readFan(ctx)),
      safe(inventoryAt(at, b)),
    ])

    const cpu = buildCpuSample(prevStat, stat, mhz ?? new Map())
    if (stat !== undefined) prevStat = stat
    const net = netCounters === undefined ? undefined : buildNetSample(prevNet, { at, counters: netCounters })
    if (netCounters !== undefined) prevNet = { at, counters: netCounters }

    const [throttle, power, gpu] = await Promise.all([
      safe(readThrottle(b, cpu?.cores)),
      b.kind === 'rpi5' ? safe(readPmicPower(ctx)) : undefined,
      isJetson(b) ? safe(readJetsonGpu(ctx, thermal ?? [])) : undefined,
    ])

    const s: TelemetrySample = { board: b }
    if (uptimeS !== undefined) s.uptimeS = uptimeS
    if (load !== undefined) s.load = load
    if (cpu !== undefined) s.cpu = cpu
    if (memory !== undefined) s.memory = memory
    if (disk !== undefined && disk.length > 0) s.disk = disk
    if (net !== undefined && net.length > 0) s.net = net
    if (thermal !== undefined && thermal.length > 0) s.thermal = thermal
    if (throttle !== undefined) s.throttle = throttle
    if (fan !== undefined) s.fan = fan
    if (power !== undefined) s.power = power
    if (gpu !== undefined) s.gpu = gpu
    if (accel !== undefined && accel.length > 0) s.accelerators = accel
    return s
  }

  async function readThrottle(b: Board, cores: ReadonlyArray<{ percent?: number }> | undefined): Promise<ThrottleSample | undefined> {
    if (!isRaspberryPi(b)) return undefined
    const fromFirmware = await readVcgencmdThrottle(ctx)
    if (fromFirmware !== undefined) return fromFirmware
    const busiest = Math.max(-1, ...(cores ?? []).map(c => c.percent ?? -1))
    const fromHwmon = await readHwmonThrottle(ctx, busiest >= 0 ? { busiestCorePercent: busiest } : {})
    if (fromHwmon === undefined) return undefined
    throttleSeen = accumulateFlags(throttleSeen, fromHwmon.now)
    return { ...fromHwmon, sinceStart: throttleSeen }
  }

  return { board, sample }
}

async function readDisks(paths: readonly string[]): Promise<DiskSample[]> {
  const all = await Promise.all(paths.map(p => readDisk(p)))
  return all.filter((d): d is DiskSample => d !== undefined)
}

/** Collectors are written not to throw; this is the backstop that keeps a bug in one from sinking the sample. */
async function safe<T>(p: Promise<T>): Promise<T | undefined> {
  try {
    return await p
  } catch {
    return undefined
  }
}
