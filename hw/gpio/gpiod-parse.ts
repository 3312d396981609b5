// Parsers for the libgpiod command-line tools' output, in both generations:
// v1.6 (Debian bookworm, Raspberry Pi OS bookworm) and v2.x (Debian trixie ships
// 2.2.1). Formats follow libgpiod's tools/*.c; fixtures in test/fixtures/gpio/.
import type { GpioChip } from './chips.js'
import type { Level } from './types.js'

export type GpiodVersion = 1 | 2

/** `gpiodetect --version` → "gpiodetect (libgpiod) v2.2.1" (v1: "… v1.6.3"). */
export function parseGpiodVersion(text: string): GpiodVersion | undefined {
  const m = /\(libgpiod\)\s+v(\d+)\.\d+/.exec(text)
  if (m?.[1] === '1') return 1
  if (m?.[1] === '2') return 2
  return undefined
}

/** `gpiodetect` (same in v1 and v2): "gpiochip0 [pinctrl-rp1] (54 lines)". */
export function parseGpiodetect(text: string): GpioChip[] {
  const chips: GpioChip[] = []
  for (const line of text.split('\n')) {
    const m = /^(gpiochip\d+)\s+\[(.*)\]\s+\((\d+) lines?\)\s*$/.exec(line.trim())
    if (m?.[1] === undefined || m[2] === undefined || m[3] === undefined) continue
    chips.push({ name: m[1], label: m[2], lines: Number(m[3]) })
  }
  return chips
}

interface GpioinfoLine {
  offset: number
  /** undefined for "unnamed" lines. */
  name?: string
  direction: 'input' | 'output'
  activeLow: boolean
  /** Set when the line is requested by someone (the kernel, a driver, a process). */
  consumer?: string
}

export interface GpioinfoChip {
  chip: string
  lines: GpioinfoLine[]
}

// v1: `\tline  17:     "GPIO17"       unused   input  active-high `
//     `\tline   7:  "SPI_CE1_N"   "spi0 CS1"  output   active-low [used]`
const V1_LINE = /^\s*line\s+(\d+):\s+("[^"]*"|unnamed)\s+("[^"]*"|unused)\s+(input|output)\s+(active-high|active-low)/
// v2: `\tline  17:\t"GPIO17"        \tinput`
//     `\tline   1:\t"2712_BOOT_CS_N"\toutput active-low consumer="spi10 CS0"`
const V2_LINE = /^\s*line\s+(\d+):\s+("[^"]*"|unnamed)\s+(input|output)(.*)$/

/** `gpioinfo` (v1 or v2 format, one or more chips). */
export function parseGpioinfo(text: string): GpioinfoChip[] {
  const chips: GpioinfoChip[] = []
  let current: GpioinfoChip | undefined
  for (const raw of text.split('\n')) {
    const header = /^(gpiochip\d+) - (\d+) lines:\s*$/.exec(raw.trim())
    if (header?.[1] !== undefined) {
      current = { chip: header[1], lines: [] }
      chips.push(current)
      continue
    }
    if (current === undefined) continue
    const parsed = parseV1Line(raw) ?? parseV2Line(raw)
    if (parsed !== undefined) current.lines.push(parsed)
  }
  return chips
}

function parseV1Line(raw: string): GpioinfoLine | undefined {
  const m = V1_LINE.exec(raw)
  if (m === null) return undefined
  const line: GpioinfoLine = {
    offset: Number(m[1]),
    direction: m[4] === 'output' ? 'output' : 'input',
    activeLow: m[5] === 'active-low',
  }
  const name = unquote(m[2])
  if (name !== undefined) line.name = name
  const consumer = unquote(m[3])
  if (consumer !== undefined) line.consumer = consumer
  else if (/\[used/.test(raw)) line.consumer = 'kernel'
  return line
}

function parseV2Line(raw: string): GpioinfoLine | undefined {
  const m = V2_LINE.exec(raw)
  if (m === null) return undefined
  const attrs = m[4] ?? ''
  const line: GpioinfoLine = {
    offset: Number(m[1]),
    direction: m[3] === 'output' ? 'output' : 'input',
    activeLow: /(^|\s)active-low(\s|$)/.test(attrs),
  }
  const name = unquote(m[2])
  if (name !== undefined) line.name = name
  const consumer = /\sconsumer=(?:"([^"]*)"|(\S+))/.exec(attrs)
  if (consumer !== null) line.consumer = consumer[1] ?? consumer[2] ?? 'kernel'
  return line
}

function unquote(field: string | undefined): string | undefined {
  if (field === undefined || !field.startsWith('"')) return undefined
  return field.slice(1, -1)
}

/**
 * `gpioget` output for one line: "0"/"1" (v1, and v2 with --numeric), or v2's
 * default `"17"=active` / `17=inactive`.
 */
export function parseGpioget(text: string): Level | undefined {
  const t = text.trim()
  if (t === '0' || t === '1') return t === '1' ? 1 : 0
  const m = /^(?:"[^"]*"|\S+)=(active|inactive)$/.exec(t)
  if (m === null) return undefined
  return m[1] === 'active' ? 1 : 0
}

/**
 * One gpiomon event printed with `--format "%o %e"`: offset, then the event type.
 * v2 numbers rising 1 and falling 2; v1 numbers rising 1 and falling 0. Either
 * way 1 means the line is now active.
 */
export function parseGpiomonEvent(line: string, version: GpiodVersion): { offset: number; level: Level } | undefined {
  const m = /^(\d+)\s+(\d)$/.exec(line.trim())
  if (m === null) return undefined
  const type = m[2]
  const falling = version === 2 ? '2' : '0'
  if (type !== '1' && type !== falling) return undefined
  return { offset: Number(m[1]), level: type === '1' ? 1 : 0 }
}
