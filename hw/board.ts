// Which board we run on: the device-tree model string names Raspberry Pis and
// Jetsons exactly; anything without one is a generic Linux host described by its
// architecture and CPU model.
import { readText, readValue, isPrintable, type HwContext } from './context.js'

export type BoardKind = 'rpi4' | 'rpi5' | 'jetson-nano' | 'jetson-orin' | 'generic'

export interface Board {
  kind: BoardKind
  /** e.g. "Raspberry Pi 5 Model B Rev 1.0", or "generic x86_64 (AMD EPYC)" */
  model: string
  /** `uname -m` spelling: aarch64, x86_64, armv7l … */
  arch: string
}

// Both paths are the same node on a running kernel; /proc/device-tree is a symlink
// that some minimal containers do not mount.
const MODEL_PATHS = ['/proc/device-tree/model', '/sys/firmware/devicetree/base/model']

export async function detectBoard(ctx: HwContext): Promise<Board> {
  const arch = await detectArch(ctx)
  const model = await deviceTreeModel(ctx)
  if (model !== undefined) return { kind: classifyModel(model), model, arch }
  const cpu = await cpuModelName(ctx)
  return { kind: 'generic', model: cpu === undefined ? `generic ${arch}` : `generic ${arch} (${cpu})`, arch }
}

/** Boards outside the known families (Pi 3, Jetson Xavier …) keep their model string but run as generic. */
export function classifyModel(model: string): BoardKind {
  if (/^Raspberry Pi (5|500|Compute Module 5)\b/.test(model)) return 'rpi5'
  if (/^Raspberry Pi (4|400|Compute Module 4)/.test(model)) return 'rpi4'
  if (/\bJetson\b/.test(model) && /\bOrin\b/.test(model)) return 'jetson-orin'
  if (/\bJetson[ -]Nano\b/.test(model)) return 'jetson-nano'
  return 'generic'
}

export function isRaspberryPi(board: Board): boolean {
  return board.model.startsWith('Raspberry Pi')
}

export function isJetson(board: Board): boolean {
  return /\bJetson\b/.test(board.model)
}

async function deviceTreeModel(ctx: HwContext): Promise<string | undefined> {
  for (const path of MODEL_PATHS) {
    const model = await readValue(ctx, path)
    if (model !== undefined) return model
  }
  return undefined
}

async function detectArch(ctx: HwContext): Promise<string> {
  // uname answers for the board's kernel, which a fixture runner can replay;
  // process.arch only describes how this Node binary was built.
  const res = await ctx.run.run('uname', ['-m'])
  const arch = res?.code === 0 ? res.stdout.trim() : ''
  if (/^[A-Za-z0-9_]{1,32}$/.test(arch)) return arch
  return NODE_ARCH_TO_UNAME[process.arch] ?? process.arch
}

/** The kernel's spelling (uname -m) of each Node architecture name (process.arch); docs/ota.md shows both. */
export const NODE_ARCH_TO_UNAME: Readonly<Record<string, string>> = {
  x64: 'x86_64',
  arm64: 'aarch64',
  arm: 'armv7l',
  ia32: 'i686',
  riscv64: 'riscv64',
}

async function cpuModelName(ctx: HwContext): Promise<string | undefined> {
  const text = await readText(ctx, '/proc/cpuinfo')
  if (text === undefined) return undefined
  // x86 says "model name"; 32-bit ARM kernels say "Hardware" or "Processor".
  for (const key of ['model name', 'Hardware', 'Processor']) {
    const m = new RegExp(`^${key}\\s*:\\s*(.+)$`, 'm').exec(text)
    const value = m?.[1]?.trim()
    if (value !== undefined && value.length > 0 && value.length <= 200 && isPrintable(value)) return value
  }
  return undefined
}
