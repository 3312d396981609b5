// CPU utilisation from /proc/stat deltas and per-core clock from cpufreq.
// Utilisation needs two snapshots, so the caller keeps the previous one: the first
// sample of a collector reports clocks only (documented in docs/hardware.md).
import { listDir, readInt, readText, round, type HwContext } from './context.js'

export interface CpuTimes {
  /** user+nice+system+idle+iowait+irq+softirq+steal, in jiffies (guest time is already in user/nice). */
  total: number
  /** idle+iowait: time the core had nothing to run. */
  idle: number
}

export interface ProcStat {
  all: CpuTimes
  cores: Map<number, CpuTimes>
}

interface CoreSample {
  cpu: number
  percent?: number
  mhz?: number
}

export interface CpuSample {
  percent?: number
  cores?: CoreSample[]
}

export function parseProcStat(text: string): ProcStat | undefined {
  let all: CpuTimes | undefined
  const cores = new Map<number, CpuTimes>()
  for (const line of text.split('\n')) {
    // Old kernels print 4 to 9 fields; offline cores are simply absent.
    const m = /^cpu(\d{0,5})\s+(\d{1,20}(?: \d{1,20}){3,9})\s*$/.exec(line)
    if (m?.[2] === undefined) continue
    const f = m[2].split(' ').map(Number)
    const at = (i: number): number => f[i] ?? 0
    const times: CpuTimes = {
      total: at(0) + at(1) + at(2) + at(3) + at(4) + at(5) + at(6) + at(7),
      idle: at(3) + at(4),
    }
    if (m[1] === '') all = times
    else cores.set(Number(m[1]), times)
  }
  return all === undefined ? undefined : { all, cores }
}

/** Busy share of the interval between two snapshots; undefined when counters did not advance or went back. */
export function busyPercent(prev: CpuTimes, cur: CpuTimes): number | undefined {
  const dTotal = cur.total - prev.total
  const dIdle = cur.idle - prev.idle
  // iowait may step backwards on some kernels, and a core that went offline and
  // came back restarts its counters: neither interval says anything true.
  if (dTotal <= 0 || dIdle < 0 || dIdle > dTotal) return undefined
  return round(((dTotal - dIdle) / dTotal) * 100, 1)
}

export async function readProcStat(ctx: HwContext): Promise<ProcStat | undefined> {
  const text = await readText(ctx, '/proc/stat')
  return text === undefined ? undefined : parseProcStat(text)
}

/** Current clock of each core that has cpufreq, keyed by core number. */
export async function readCoreMhz(ctx: HwContext): Promise<Map<number, number>> {
  const out = new Map<number, number>()
  for (const entry of await listDir(ctx, '/sys/devices/system/cpu')) {
    const m = /^cpu(\d+)$/.exec(entry)
    if (m?.[1] === undefined) continue
    const khz = await readInt(ctx, `/sys/devices/system/cpu/${entry}/cpufreq/scaling_cur_freq`)
    if (khz !== undefined && khz > 0) out.set(Number(m[1]), round(khz / 1000, 1))
  }
  return out
}

export function buildCpuSample(prev: ProcStat | undefined, cur: ProcStat | undefined, mhz: Map<number, number>): CpuSample | undefined {
  const sample: CpuSample = {}
  if (prev !== undefined && cur !== undefined) {
    const pct = busyPercent(prev.all, cur.all)
    if (pct !== undefined) sample.percent = pct
  }
  const ids = new Set<number>([...(cur?.cores.keys() ?? []), ...mhz.keys()])
  const cores: CoreSample[] = []
  for (const id of [...ids].sort((a, b) => a - b)) {
    const core: CoreSample = { cpu: id }
    const before = prev?.cores.get(id)
    const now = cur?.cores.get(id)
    const pct = before !== undefined && now !== undefined ? busyPercent(before, now) : undefined
    if (pct !== undefined) core.percent = pct
    const clock = mhz.get(id)
    if (clock !== undefined) core.mhz = clock
    if (core.percent !== undefined || core.mhz !== undefined) cores.push(core)
  }
  if (cores.length > 0) sample.cores = cores
  return sample.percent === undefined && sample.cores === undefined ? undefined : sample
}
