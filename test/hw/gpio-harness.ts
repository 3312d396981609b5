// Drivers under test, each with the outside world it needs: the fake on its own;
// sysfs on a temp copy of a fixture tree with a small stand-in for the kernel's
// side of export/direction/value; gpiod with the recorded gpiodetect/gpioinfo
// outputs and a simulated board answering gpioget/gpioset/gpiomon the way
// libgpiod's tools do (their output formats, their busy rules).
import { cp, readFile, stat } from 'node:fs/promises'
import { mkdirSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { Test } from 'tap'
import type { CommandRunner, HwContext } from '../../hw/index.js'
import {
  createFakeGpio,
  createGpiodDriver,
  createSysfsDriver,
  ManualTimers,
  nodeSysfsFiles,
  parseGpiodVersion,
  probeGpiod,
  probeSysfs,
  type GpioDriver,
  type Level,
  type LineLocation,
  type ProcessSpawner,
  type SysfsFiles,
  type ToolProcess,
} from '../../hw/gpio/index.js'

export const GPIO_FIXTURES = fileURLToPath(new URL('../fixtures/gpio/', import.meta.url))
const SYSFS_BOARDS = ['pi4-kernel6.1', 'pi4-kernel6.12', 'pi5-kernel6.12'] as const
export const GPIOD_BOARDS = ['pi4-libgpiod1.6', 'pi4-libgpiod2.2', 'pi5-libgpiod1.6-kernel6.6.20', 'pi5-libgpiod2.2-kernel6.12'] as const

export interface Harness {
  name: string
  driver: GpioDriver
  timers: ManualTimers
  /** Where BCM 17 must land on this board. */
  bcm17: LineLocation
  /** The outside world sets a pin's physical level. */
  setPhysical(bcm: number, level: Level): Promise<void>
  physical(bcm: number): Promise<Level>
  /** Nothing holds the pin any more (unexported / no tool process). */
  released(bcm: number): Promise<boolean>
  /** Command lines run or spawned (gpiod only). */
  commands: string[]
}

export const HARNESSES: Array<[string, (t: Test) => Promise<Harness>]> = [
  ['fake', fakeHarness],
  ...SYSFS_BOARDS.map((b): [string, (t: Test) => Promise<Harness>] => [`sysfs ${b}`, t => sysfsHarness(t, b)]),
  ...GPIOD_BOARDS.map((b): [string, (t: Test) => Promise<Harness>] => [`gpiod ${b}`, t => gpiodHarness(t, b)]),
]

async function fakeHarness(): Promise<Harness> {
  const timers = new ManualTimers()
  const fake = createFakeGpio({ timers })
  return {
    name: 'fake',
    driver: fake,
    timers,
    bcm17: { driver: 'fake', chip: 'fake', line: 17 },
    async setPhysical(bcm, level) {
      fake.setInput(bcm, level)
    },
    physical: async bcm => fake.physical(bcm),
    released: async bcm => !fake.isOpen(bcm),
    commands: [],
  }
}

// ---------------------------------------------------------------- sysfs

const BCM17: Record<(typeof SYSFS_BOARDS)[number], LineLocation> = {
  'pi4-kernel6.1': { driver: 'sysfs', chip: 'gpiochip0', line: 17 },
  'pi4-kernel6.12': { driver: 'sysfs', chip: 'gpiochip512', line: 529 },
  'pi5-kernel6.12': { driver: 'sysfs', chip: 'gpiochip571', line: 588 },
}

async function sysfsHarness(t: Test, board: (typeof SYSFS_BOARDS)[number]): Promise<Harness> {
  const root = t.testdir()
  await cp(join(GPIO_FIXTURES, 'sysfs', board, 'root'), root, { recursive: true })
  const probe = await probeSysfs({ root })
  if (!('chip' in probe)) throw new Error(probe.reason)
  const base = probe.chip.base ?? 0
  const kernel = new SysfsKernel(root)
  const timers = new ManualTimers()
  const driver = createSysfsDriver({ root }, probe.chip, { timers, pollMs: 1, files: kernel.files })
  return {
    name: `sysfs ${board}`,
    driver,
    timers,
    bcm17: BCM17[board],
    setPhysical: (bcm, level) => kernel.setPhysical(base + bcm, level),
    physical: async bcm => kernel.physical(base + bcm),
    released: async bcm =>
      stat(join(root, `sys/class/gpio/gpio${base + bcm}`)).then(
        () => false,
        () => true,
      ),
    commands: [],
  }
}

interface KernelLine {
  physical: Level
  activeLow: boolean
  out: boolean
}

const errno = (code: string) => Object.assign(new Error(code), { code })

/** The kernel's side of sysfs GPIO, enough for the driver: files stay the source of truth for reads. */
class SysfsKernel {
  private readonly pins = new Map<number, Level>()
  private readonly exported = new Map<number, KernelLine>()
  readonly files: SysfsFiles

  constructor(private readonly root: string) {
    const plain = nodeSysfsFiles({ root })
    this.files = {
      read: plain.read,
      exists: plain.exists,
      write: async (path, data) => this.write(path, data),
      writeSync: (path, data) => this.write(path, data),
    }
  }

  physical(n: number): Level {
    return this.exported.get(n)?.physical ?? this.pins.get(n) ?? 0
  }

  async setPhysical(n: number, level: Level): Promise<void> {
    this.pins.set(n, level)
    const line = this.exported.get(n)
    if (line === undefined || line.out) return
    line.physical = level
    this.sync(n, line)
  }

  private dir(n: number): string {
    return join(this.root, `sys/class/gpio/gpio${n}`)
  }

  /** Rewrites `value` as the kernel would report it: the logical level. */
  private sync(n: number, line: KernelLine): void {
    const logical = line.activeLow ? 1 - line.physical : line.physical
    writeFileSync(join(this.dir(n), 'value'), `${logical}\n`)
  }

  // Synchronous on purpose: the side effects are in place before the driver's write resolves.
  private write(path: string, data: string): void {
    const value = data.trim()
    if (path === '/sys/class/gpio/export') {
      const n = Number(value)
      if (this.exported.has(n)) throw errno('EBUSY')
      const line: KernelLine = { physical: this.pins.get(n) ?? 0, activeLow: false, out: false }
      this.exported.set(n, line)
      mkdirSync(this.dir(n), { recursive: true })
      for (const [f, v] of [
        ['direction', 'in'],
        ['active_low', '0'],
        ['edge', 'none'],
      ]) {
        writeFileSync(join(this.dir(n), f ?? ''), `${v}\n`)
      }
      this.sync(n, line)
      return
    }
    if (path === '/sys/class/gpio/unexport') {
      const n = Number(value)
      if (!this.exported.delete(n)) throw errno('EINVAL')
      rmSync(this.dir(n), { recursive: true, force: true })
      return
    }
    const m = /^\/sys\/class\/gpio\/gpio(\d+)\/(direction|value|active_low|edge)$/.exec(path)
    const line = m === null ? undefined : this.exported.get(Number(m[1]))
    if (m === null || line === undefined) throw errno('ENOENT')
    const n = Number(m[1])
    if (m[2] === 'active_low') line.activeLow = value === '1'
    if (m[2] === 'direction') {
      line.out = value !== 'in'
      if (value === 'high' || value === 'low' || value === 'out') line.physical = value === 'high' ? 1 : 0
      writeFileSync(join(this.dir(n), 'direction'), `${line.out ? 'out' : 'in'}\n`)
    }
    if (m[2] === 'value') {
      if (!line.out) throw errno('EPERM')
      const logical = value === '0' ? 0 : 1
      line.physical = (line.activeLow ? 1 - logical : logical) as Level
    }
    this.sync(n, line)
  }
}

// ---------------------------------------------------------------- gpiod

const GPIOD_BCM17: Record<(typeof GPIOD_BOARDS)[number], LineLocation> = {
  'pi4-libgpiod1.6': { driver: 'gpiod', chip: 'gpiochip0', line: 17 },
  'pi4-libgpiod2.2': { driver: 'gpiod', chip: 'gpiochip0', line: 17 },
  'pi5-libgpiod1.6-kernel6.6.20': { driver: 'gpiod', chip: 'gpiochip4', line: 17 },
  'pi5-libgpiod2.2-kernel6.12': { driver: 'gpiod', chip: 'gpiochip0', line: 17 },
}

export async function gpiodContext(t: Test, board: (typeof GPIOD_BOARDS)[number]) {
  const root = t.testdir()
  await cp(join(GPIO_FIXTURES, 'gpiod', board, 'root'), root, { recursive: true })
  const recorded = JSON.parse(await readFile(join(GPIO_FIXTURES, 'gpiod', board, 'commands.json'), 'utf8')) as Record<string, string>
  const version = parseGpiodVersion(recorded['gpiodetect --version'] ?? '') ?? 1
  const sim = new GpiodBoard(version, GPIOD_BCM17[board].chip, recorded)
  const ctx: HwContext = { root, run: sim.runner }
  return { ctx, sim, version }
}

async function gpiodHarness(t: Test, board: (typeof GPIOD_BOARDS)[number]): Promise<Harness> {
  const { ctx, sim } = await gpiodContext(t, board)
  const probe = await probeGpiod(ctx)
  if (!('chip' in probe)) throw new Error(probe.reason)
  const timers = new ManualTimers()
  const driver = createGpiodDriver(ctx, probe, { timers, spawner: sim.spawner })
  return {
    name: `gpiod ${board}`,
    driver,
    timers,
    bcm17: GPIOD_BCM17[board],
    setPhysical: async (bcm, level) => sim.setPhysical(bcm, level),
    physical: async bcm => sim.level(bcm),
    released: async bcm => !sim.held(bcm),
    commands: sim.commands,
  }
}

interface SimProc {
  offset: number
  kind: 'set' | 'mon'
  activeLow: boolean
  lines: Array<(l: string) => void>
  exits: Array<(code: number | null, stderr: string) => void>
  exited?: { code: number | null; stderr: string }
}

/** One header chip as libgpiod's tools see it; other chips only exist in the recorded outputs. */
class GpiodBoard {
  readonly commands: string[] = []
  private readonly levels = new Map<number, Level>()
  private readonly procs = new Set<SimProc>()
  readonly runner: CommandRunner
  readonly spawner: ProcessSpawner

  constructor(
    readonly version: 1 | 2,
    readonly chip: string,
    recorded: Record<string, string>,
  ) {
    this.runner = {
      run: async (cmd, args) => {
        const line = [cmd, ...args].join(' ')
        this.commands.push(line)
        if (cmd === 'gpioget') return this.gpioget(args)
        const stdout = recorded[line]
        return stdout === undefined ? null : { code: 0, stdout }
      },
    }
    this.spawner = { spawn: (cmd, args) => this.spawn(cmd, args) }
  }

  level(offset: number): Level {
    return this.levels.get(offset) ?? 0
  }

  held(offset: number): boolean {
    return [...this.procs].some(p => p.offset === offset && p.exited === undefined)
  }

  setPhysical(offset: number, level: Level): void {
    const before = this.level(offset)
    this.levels.set(offset, level)
    if (before === level) return
    for (const p of this.procs) {
      if (p.kind !== 'mon' || p.offset !== offset || p.exited !== undefined) continue
      const logicalRising = (level === 1) !== p.activeLow
      const type = logicalRising ? '1' : this.version === 2 ? '2' : '0'
      for (const cb of p.lines) cb(`${offset} ${type}`)
    }
  }

  /** Splits tool arguments into flags and positionals, and checks the chip is the header chip. */
  private parse(args: readonly string[]): { activeLow: boolean; positional: string[]; chipOk: boolean } {
    const positional: string[] = []
    let chip: string | undefined
    for (let i = 0; i < args.length; i++) {
      const a = args[i] ?? ''
      if (a === '-c' || a === '-C' || a === '-e' || a === '-F') {
        if (a === '-c') chip = args[i + 1]
        i++
      } else if (!a.startsWith('-')) positional.push(a)
    }
    if (this.version === 1) chip = positional.shift()
    return { activeLow: args.includes('-l'), positional, chipOk: chip === this.chip }
  }

  private gpioget(args: readonly string[]) {
    const { activeLow, positional, chipOk } = this.parse(args)
    const offset = Number(positional[0])
    if (!chipOk || this.held(offset)) return Promise.resolve({ code: 1, stdout: '' })
    const logical = activeLow ? 1 - this.level(offset) : this.level(offset)
    return Promise.resolve({ code: 0, stdout: `${logical}\n` })
  }

  private spawn(cmd: string, args: readonly string[]): ToolProcess {
    this.commands.push([cmd, ...args].join(' '))
    const { activeLow, positional, chipOk } = this.parse(args)
    const [offText = '', valText] = (positional[0] ?? '').split('=')
    const p: SimProc = { offset: Number(offText), kind: cmd === 'gpioset' ? 'set' : 'mon', activeLow, lines: [], exits: [] }
    const exit = (code: number | null, stderr = '') => {
      if (p.exited !== undefined) return
      p.exited = { code, stderr }
      for (const cb of p.exits) cb(code, stderr)
    }
    const busy = this.held(p.offset)
    this.procs.add(p)
    setImmediate(() => {
      if (!chipOk) return exit(1, `${cmd}: cannot find GPIO chip character device\n`)
      if (busy) return exit(1, `${cmd}: unable to request lines on chip: Device or resource busy\n`)
      if (p.kind === 'set') {
        const logical = valText === '1' ? 1 : 0
        this.levels.set(p.offset, (activeLow ? 1 - logical : logical) as Level)
        if (this.version === 2) for (const cb of p.lines) cb(`Setting line '${p.offset}'...`)
      }
    })
    return {
      command: [cmd, ...args].join(' '),
      onLine: cb => void p.lines.push(cb),
      onExit: cb => (p.exited === undefined ? void p.exits.push(cb) : cb(p.exited.code, p.exited.stderr)),
      get running() {
        return p.exited === undefined
      },
      kill: () => setImmediate(() => exit(0)),
    }
  }
}
