// Whole-system counters that need no history: uptime, load averages and memory,
// parsed from their /proc files. Parsers are pure so tests feed them exact text.
import { readText, round, type HwContext } from './context.js'

export interface MemorySample {
  totalBytes: number
  availableBytes: number
  usedPercent: number
  swapTotalBytes?: number
  swapFreeBytes?: number
  swapUsedPercent?: number
}

const NUM = String.raw`\d{1,15}(?:\.\d{1,6})?`

export function parseUptime(text: string): number | undefined {
  const m = new RegExp(`^(${NUM}) (${NUM})\\s*$`).exec(text)
  return m?.[1] === undefined ? undefined : Number(m[1])
}

export function parseLoadavg(text: string): [number, number, number] | undefined {
  const m = new RegExp(`^(${NUM}) (${NUM}) (${NUM}) \\d+/\\d+ \\d+\\s*$`).exec(text)
  if (m?.[1] === undefined || m[2] === undefined || m[3] === undefined) return undefined
  return [Number(m[1]), Number(m[2]), Number(m[3])]
}

export function parseMeminfo(text: string): MemorySample | undefined {
  const kb = new Map<string, number>()
  for (const line of text.split('\n')) {
    const m = /^([A-Za-z0-9_()]+):\s+(\d{1,15})(?: kB)?$/.exec(line.trim())
    if (m?.[1] !== undefined && m[2] !== undefined) kb.set(m[1], Number(m[2]) * 1024)
  }
  const total = kb.get('MemTotal')
  if (total === undefined || total <= 0) return undefined
  // Kernels before 3.14 lack MemAvailable; free + page cache is the usual stand-in.
  const free = kb.get('MemFree')
  const fallback = free === undefined ? undefined : free + (kb.get('Buffers') ?? 0) + (kb.get('Cached') ?? 0)
  const available = kb.get('MemAvailable') ?? fallback
  if (available === undefined || available > total) return undefined
  const mem: MemorySample = {
    totalBytes: total,
    availableBytes: available,
    usedPercent: round(((total - available) / total) * 100, 1),
  }
  const swapTotal = kb.get('SwapTotal')
  const swapFree = kb.get('SwapFree')
  if (swapTotal !== undefined && swapFree !== undefined && swapFree <= swapTotal) {
    mem.swapTotalBytes = swapTotal
    mem.swapFreeBytes = swapFree
    if (swapTotal > 0) mem.swapUsedPercent = round(((swapTotal - swapFree) / swapTotal) * 100, 1)
  }
  return mem
}

export async function readUptime(ctx: HwContext): Promise<number | undefined> {
  const text = await readText(ctx, '/proc/uptime')
  return text === undefined ? undefined : parseUptime(text)
}

export async function readLoadavg(ctx: HwContext): Promise<[number, number, number] | undefined> {
  const text = await readText(ctx, '/proc/loadavg')
  return text === undefined ? undefined : parseLoadavg(text)
}

export async function readMemory(ctx: HwContext): Promise<MemorySample | undefined> {
  const text = await readText(ctx, '/proc/meminfo')
  return text === undefined ? undefined : parseMeminfo(text)
}
