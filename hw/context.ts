// What every collector receives (a filesystem root and a command runner), and the
// tolerant file readers they share: a missing or unreadable file is `undefined`,
// never an exception, because boards differ in which files they have at all.
import { readdir, readFile } from 'node:fs/promises'
import { join } from 'node:path'
import type { CommandRunner } from './command-runner.js'

export interface HwContext {
  /** Where /proc, /sys and /dev are looked up: "/" on a device, a fixture tree in tests. */
  root: string
  run: CommandRunner
  /** Real mount points for disk usage; default ["/"]. Not prefixed by root (see disk.ts). */
  diskPaths?: readonly string[]
}

// procfs and sysfs files are tiny; a huge file under a fixture root is not one of them.
const MAX_FILE_BYTES = 4 * 1024 * 1024

export function underRoot(ctx: Pick<HwContext, 'root'>, path: string): string {
  return join(ctx.root, path)
}

export async function readText(ctx: Pick<HwContext, 'root'>, path: string): Promise<string | undefined> {
  try {
    const buf = await readFile(underRoot(ctx, path))
    return buf.length > MAX_FILE_BYTES ? undefined : buf.toString('utf8')
  } catch {
    return undefined
  }
}

/** A one-value sysfs attribute (e.g. "rpi_volt\n"); device-tree strings end in NUL. */
export async function readValue(ctx: Pick<HwContext, 'root'>, path: string): Promise<string | undefined> {
  const text = await readText(ctx, path)
  if (text === undefined) return undefined
  const value = text.replace(/\0+$/, '').trim()
  return isPrintable(value) && value.length > 0 ? value : undefined
}

export async function readInt(ctx: Pick<HwContext, 'root'>, path: string): Promise<number | undefined> {
  return parseIntStrict(await readValue(ctx, path))
}

export async function listDir(ctx: Pick<HwContext, 'root'>, path: string): Promise<string[]> {
  try {
    return (await readdir(underRoot(ctx, path))).sort(naturalCompare)
  } catch {
    return []
  }
}

/** hwmon numbers change between boots; the `name` attribute is the stable handle. */
export async function findHwmon(ctx: Pick<HwContext, 'root'>, names: readonly string[]): Promise<string | undefined> {
  for (const entry of await listDir(ctx, '/sys/class/hwmon')) {
    const dir = `/sys/class/hwmon/${entry}`
    const name = await readValue(ctx, `${dir}/name`)
    if (name !== undefined && names.includes(name)) return dir
  }
  return undefined
}

function parseIntStrict(text: string | undefined): number | undefined {
  if (text === undefined || !/^-?\d{1,18}$/.test(text.trim())) return undefined
  return Number(text.trim())
}

export function isPrintable(text: string): boolean {
  return /^[\x20-\x7e\t]*$/.test(text)
}

export function round(value: number, digits: number): number {
  const f = 10 ** digits
  return Math.round(value * f) / f
}

/** "thermal_zone10" after "thermal_zone9", "cpu10" after "cpu9". */
function naturalCompare(a: string, b: string): number {
  return a.localeCompare(b, 'en', { numeric: true })
}
