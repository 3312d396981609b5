// Raspberry Pi power and thermal throttling state.
// Primary source: the firmware's `vcgencmd get_throttled` bit field. Debian's
// upstream kernel has no /dev/vcio, so vcgencmd cannot work there; the fallback is
// the raspberrypi-hwmon device ("rpi_volt"), which only knows about under-voltage,
// plus a cpufreq heuristic for capping. See docs/hardware.md for what it cannot know.
import { findHwmon, readInt, type HwContext } from './context.js'

export interface ThrottleFlags {
  underVoltage?: boolean
  armFreqCapped?: boolean
  throttled?: boolean
  softTempLimit?: boolean
}

export interface ThrottleSample {
  source: 'vcgencmd' | 'hwmon'
  /** The firmware word as printed, e.g. "0x50005" (vcgencmd only). */
  raw?: string
  now: ThrottleFlags
  /** Firmware sticky bits (vcgencmd only). */
  sinceBoot?: ThrottleFlags
  /** What this process itself has seen since it started (hwmon only: there are no sticky bits to read). */
  sinceStart?: ThrottleFlags
}

type FlagName = keyof ThrottleFlags
const FLAG_BITS: ReadonlyArray<readonly [FlagName, number]> = [
  ['underVoltage', 0],
  ['armFreqCapped', 1],
  ['throttled', 2],
  ['softTempLimit', 3],
]

export function decodeThrottled(stdout: string): ThrottleSample | undefined {
  const m = /^throttled=(0x[0-9a-fA-F]{1,8})\s*$/.exec(stdout.trim())
  if (m?.[1] === undefined) return undefined
  const word = parseInt(m[1], 16)
  const now: ThrottleFlags = {}
  const sinceBoot: ThrottleFlags = {}
  for (const [name, bit] of FLAG_BITS) {
    now[name] = (word & (1 << bit)) !== 0
    sinceBoot[name] = (word & (1 << (bit + 16))) !== 0
  }
  return { source: 'vcgencmd', raw: m[1].toLowerCase(), now, sinceBoot }
}

export async function readVcgencmdThrottle(ctx: HwContext): Promise<ThrottleSample | undefined> {
  const res = await ctx.run.run('vcgencmd', ['get_throttled'])
  return res?.code === 0 ? decodeThrottled(res.stdout) : undefined
}

// Below this busiest-core load a governor legitimately runs slower than maximum,
// so a low clock says nothing about capping.
const BUSY_PERCENT = 90

export interface HwmonThrottleInput {
  /** Busiest core's utilisation over the last interval, if known. */
  busiestCorePercent?: number
}

/**
 * raspberrypi-hwmon polls the firmware every 2 s and asks it to clear the sticky
 * bits each time, so in0_lcrit_alarm = 1 means "under-voltage seen within the last
 * poll", i.e. now, never "since boot".
 */
export async function readHwmonThrottle(ctx: HwContext, input: HwmonThrottleInput): Promise<ThrottleSample | undefined> {
  const dir = await findHwmon(ctx, ['rpi_volt'])
  if (dir === undefined) return undefined
  const alarm = await readInt(ctx, `${dir}/in0_lcrit_alarm`)
  if (alarm !== 0 && alarm !== 1) return undefined
  const now: ThrottleFlags = { underVoltage: alarm === 1 }
  const capped = await cpufreqCapped(ctx, input.busiestCorePercent)
  if (capped !== undefined) now.armFreqCapped = capped
  return { source: 'hwmon', now }
}

async function cpufreqCapped(ctx: HwContext, busiest: number | undefined): Promise<boolean | undefined> {
  if (busiest === undefined || busiest < BUSY_PERCENT) return undefined
  const base = '/sys/devices/system/cpu/cpu0/cpufreq'
  const cur = await readInt(ctx, `${base}/scaling_cur_freq`)
  const max = await readInt(ctx, `${base}/cpuinfo_max_freq`)
  if (cur === undefined || max === undefined || max <= 0) return undefined
  return cur < max
}

/** Ors each flag seen into the running record; kept by the collector between samples. */
export function accumulateFlags(seen: ThrottleFlags, now: ThrottleFlags): ThrottleFlags {
  const out: ThrottleFlags = { ...seen }
  for (const [name] of FLAG_BITS) {
    const v = now[name]
    if (v !== undefined) out[name] = (seen[name] ?? false) || v
  }
  return out
}
