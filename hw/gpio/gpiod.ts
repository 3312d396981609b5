// GPIO through the kernel's character device (/dev/gpiochipN) using libgpiod's
// command-line tools, for kernels without sysfs GPIO. The header chip is found
// from `gpiodetect` labels (or, failing that, a `gpioinfo` line named GPIO<n> at
// offset n); on it, the line offset is the BCM number on every Pi.
//
// The character device releases a line when the process holding it exits, so:
//  - an output is a running `gpioset` (v2 holds by default; v1 needs
//    --mode=signal); each write ends the old process, then starts a new one;
//  - an input being watched is a running `gpiomon`; while it holds the line,
//    `read()` answers from its events, otherwise from a one-shot `gpioget`.
// close() and releaseSync() end those processes, which releases the lines.
import { listDir, type HwContext } from '../context.js'
import { chipForBcm, headerChip, type GpioChip } from './chips.js'
import { EdgeFilter } from './edge-filter.js'
import { parseGpiodetect, parseGpiodVersion, parseGpioget, parseGpioinfo, parseGpiomonEvent, type GpiodVersion, type GpioinfoChip } from './gpiod-parse.js'
import { createProcessSpawner, whenExited, type ProcessSpawner, type ToolProcess } from './spawn.js'
import { systemTimers } from './timers.js'
import { GpioError, silentLog, type GpioDriver, type GpioEvent, type GpioLine, type GpioLog, type GpioTimers, type Level, type OpenOptions } from './types.js'

export interface GpiodSetup {
  version: GpiodVersion
  chip: GpioChip
}

const CONSUMER = 'cairn'

/** Command lines per libgpiod generation; exported so tests and docs show the exact syntax. */
export function gpiodCommands(version: GpiodVersion, chip: string) {
  const low = (activeLow: boolean) => (activeLow ? ['-l'] : [])
  if (version === 2) {
    return {
      info: (): string[] => ['gpioinfo', '-c', chip],
      get: (offset: number, activeLow: boolean): string[] => ['gpioget', '-c', chip, '-C', CONSUMER, '--numeric', ...low(activeLow), String(offset)],
      set: (offset: number, value: Level, activeLow: boolean): string[] => ['gpioset', '--banner', '-c', chip, '-C', CONSUMER, ...low(activeLow), `${offset}=${value}`],
      mon: (offset: number, activeLow: boolean): string[] => ['gpiomon', '-c', chip, '-C', CONSUMER, '-e', 'both', '-F', '%o %e', ...low(activeLow), String(offset)],
    }
  }
  return {
    info: (): string[] => ['gpioinfo', chip],
    get: (offset: number, activeLow: boolean): string[] => ['gpioget', ...low(activeLow), chip, String(offset)],
    set: (offset: number, value: Level, activeLow: boolean): string[] => ['gpioset', '--mode=signal', ...low(activeLow), chip, `${offset}=${value}`],
    // -b: v1 block-buffers stdout into a pipe without it, holding events back.
    mon: (offset: number, activeLow: boolean): string[] => ['gpiomon', '-b', '-F', '%o %e', ...low(activeLow), chip, String(offset)],
  }
}

/** The libgpiod version and header chip, or why the character device cannot be used here. */
export async function probeGpiod(ctx: HwContext): Promise<GpiodSetup | { reason: string }> {
  const nodes = (await listDir(ctx, '/dev')).filter(e => /^gpiochip\d+$/.test(e))
  if (nodes.length === 0) return { reason: 'no /dev/gpiochip*' }
  const ver = await ctx.run.run('gpiodetect', ['--version'])
  const version = ver?.code === 0 ? parseGpiodVersion(ver.stdout) : undefined
  if (version === undefined) return { reason: 'libgpiod tools not found (apt install gpiod)' }
  const detect = await ctx.run.run('gpiodetect', [])
  const chips = detect?.code === 0 ? parseGpiodetect(detect.stdout) : []
  if (chips.length === 0) return { reason: 'gpiodetect listed no chips' }
  const byLabel = headerChip(chips)
  if (byLabel !== undefined) return { version, chip: byLabel }
  // Unknown label (a future board or DT): the chip whose line n is named "GPIO<n>".
  for (const chip of chips) {
    const info = await gpioinfo(ctx, version, chip.name)
    if (info?.lines.some(l => l.name === `GPIO${l.offset}`) === true) return { version, chip }
  }
  return { reason: `no header chip among ${chips.map(c => `${c.name} [${c.label}]`).join(', ')}` }
}

async function gpioinfo(ctx: HwContext, version: GpiodVersion, chip: string): Promise<GpioinfoChip | undefined> {
  const [cmd = 'gpioinfo', ...args] = gpiodCommands(version, chip).info()
  const res = await ctx.run.run(cmd, args)
  if (res?.code !== 0) return undefined
  return parseGpioinfo(res.stdout).find(c => c.chip === chip)
}

export interface GpiodOptions {
  spawner?: ProcessSpawner
  timers?: GpioTimers
  log?: GpioLog
  /** v2 gpioset prints its banner once the line is set; give up after this long. Default 2000 ms. */
  setTimeoutMs?: number
}

export function createGpiodDriver(ctx: HwContext, setup: GpiodSetup, opts: GpiodOptions = {}): GpioDriver {
  const deps: Deps = {
    ctx,
    setup,
    cmds: gpiodCommands(setup.version, setup.chip.name),
    spawner: opts.spawner ?? createProcessSpawner(),
    timers: opts.timers ?? systemTimers(),
    log: opts.log ?? silentLog,
    setTimeoutMs: opts.setTimeoutMs ?? 2000,
  }
  const lines = new Map<number, GpiodLine>()
  return {
    name: 'gpiod',
    async open(bcm, o) {
      if (lines.has(bcm)) throw new GpioError('busy', `BCM ${bcm} is already open`)
      const { offset } = chipForBcm(setup.chip, bcm)
      const info = await gpioinfo(ctx, setup.version, setup.chip.name)
      const consumer = info?.lines.find(l => l.offset === offset)?.consumer
      if (consumer !== undefined) {
        throw new GpioError('busy', `${setup.chip.name} line ${offset} (BCM ${bcm}) is used by "${consumer}"`)
      }
      const line = new GpiodLine(bcm, offset, o, deps)
      lines.set(bcm, line)
      line.onClose = () => lines.delete(bcm)
      try {
        await line.start()
      } catch (err) {
        await line.close()
        throw err
      }
      return line
    },
    async close() {
      await Promise.all([...lines.values()].map(l => l.close()))
    },
    releaseSync() {
      for (const line of lines.values()) line.releaseSync()
      lines.clear()
    },
  }
}

interface Deps {
  ctx: HwContext
  setup: GpiodSetup
  cmds: ReturnType<typeof gpiodCommands>
  spawner: ProcessSpawner
  timers: GpioTimers
  log: GpioLog
  setTimeoutMs: number
}

class GpiodLine implements GpioLine {
  readonly location
  onClose: (() => void) | undefined
  private closed = false
  private holder: ToolProcess | undefined // gpioset
  private monitor: ToolProcess | undefined // gpiomon
  private monitoring = false
  private filter: EdgeFilter | undefined
  private lastRaw: Level = 0
  private written: Level
  private queue: Promise<unknown> = Promise.resolve()

  constructor(
    readonly bcm: number,
    private readonly offset: number,
    private readonly o: OpenOptions,
    private readonly deps: Deps,
  ) {
    this.location = { driver: 'gpiod' as const, chip: deps.setup.chip.name, line: offset }
    this.written = o.initial ?? 0
  }

  async start(): Promise<void> {
    if (this.o.direction === 'out') return this.write(this.written)
    this.lastRaw = await this.get()
    this.filter = new EdgeFilter({
      edge: this.o.edge ?? 'both',
      debounceMs: this.o.debounceMs ?? 0,
      timers: this.deps.timers,
      initial: this.lastRaw,
    })
  }

  async read(): Promise<Level> {
    this.assertOpen()
    if (this.o.direction === 'out') return this.written // the line is held by our gpioset
    if (this.monitor?.running === true) return this.lastRaw
    return this.get()
  }

  write(value: Level): Promise<void> {
    if (this.closed) return Promise.reject(new GpioError('closed', `BCM ${this.bcm} is closed`))
    if (this.o.direction !== 'out') return Promise.reject(new GpioError('direction', `BCM ${this.bcm} is an input`))
    const run = this.queue.then(() => this.hold(value))
    this.queue = run.catch(() => undefined)
    return run
  }

  watch(cb: (event: GpioEvent) => void): () => void {
    this.assertOpen()
    const filter = this.filter
    if (filter === undefined) throw new GpioError('direction', `BCM ${this.bcm} is an output`)
    const unsubscribe = filter.subscribe(cb)
    if (!this.monitoring) {
      this.monitoring = true
      void this.startMonitor()
    }
    return () => {
      unsubscribe()
      if (filter.size === 0) this.stopMonitor()
    }
  }

  async close(): Promise<void> {
    if (this.closed) return
    this.closed = true
    this.filter?.stop()
    this.onClose?.()
    await this.queue
    await Promise.all([this.end(this.holder), this.end(this.monitor)])
    this.holder = undefined
    this.monitor = undefined
  }

  releaseSync(): void {
    this.closed = true
    this.holder?.kill()
    this.monitor?.kill()
  }

  private async get(): Promise<Level> {
    const [cmd = 'gpioget', ...args] = this.deps.cmds.get(this.offset, this.o.activeLow === true)
    const res = await this.deps.ctx.run.run(cmd, args)
    const level = res?.code === 0 ? parseGpioget(res.stdout) : undefined
    if (level === undefined) throw new GpioError('io', `${cmd} ${args.join(' ')} failed`)
    return level
  }

  /** Ends the current gpioset (the chardev allows one holder), then holds the line at `value`. */
  private async hold(value: Level): Promise<void> {
    this.assertOpen()
    await this.end(this.holder)
    const [cmd = 'gpioset', ...args] = this.deps.cmds.set(this.offset, value, this.o.activeLow === true)
    const proc = this.deps.spawner.spawn(cmd, args)
    this.holder = proc
    await this.untilSet(proc)
    this.written = value
    proc.onExit((code, stderr) => {
      if (this.holder === proc && !this.closed) {
        this.deps.log.warn({ bcm: this.bcm, code, stderr: stderr.trim() }, 'gpioset exited; the line is no longer held')
      }
    })
  }

  /** v2 prints "Setting line …" once the request succeeded; v1 prints nothing, so only a quick failure is caught. */
  private untilSet(proc: ToolProcess): Promise<void> {
    return new Promise((resolve, reject) => {
      let done = false
      const finish = (err?: GpioError) => {
        if (done) return
        done = true
        this.deps.timers.clearTimeout(timer)
        if (err === undefined) resolve()
        else reject(err)
      }
      const timer = this.deps.timers.setTimeout(() => {
        proc.kill()
        finish(new GpioError('io', `${proc.command}: no confirmation within ${this.deps.setTimeoutMs} ms`))
      }, this.deps.setTimeoutMs)
      proc.onExit((code, stderr) => finish(toolError(proc.command, code, stderr)))
      if (this.deps.setup.version === 2) {
        proc.onLine(line => {
          if (line.startsWith('Setting line')) finish()
        })
      } else {
        setImmediate(() => finish())
      }
    })
  }

  /** Reads the level once more (it may have moved since open), then hands the line to gpiomon. */
  private async startMonitor(): Promise<void> {
    try {
      this.lastRaw = await this.get()
      this.filter?.sample(this.lastRaw)
    } catch {
      // Not fatal: gpiomon's events will bring the level.
    }
    if (!this.monitoring || this.closed || this.monitor !== undefined) return
    const [cmd = 'gpiomon', ...args] = this.deps.cmds.mon(this.offset, this.o.activeLow === true)
    const proc = this.deps.spawner.spawn(cmd, args)
    this.monitor = proc
    proc.onLine(line => {
      const ev = parseGpiomonEvent(line, this.deps.setup.version)
      if (ev === undefined || ev.offset !== this.offset || this.monitor !== proc) return
      this.lastRaw = ev.level
      this.filter?.sample(ev.level)
    })
    proc.onExit((code, stderr) => {
      if (this.monitor !== proc) return
      this.monitor = undefined
      this.monitoring = false
      if (!this.closed) this.deps.log.warn({ bcm: this.bcm, code, stderr: stderr.trim() }, 'gpiomon exited; edges stop')
    })
  }

  private stopMonitor(): void {
    this.monitoring = false
    const proc = this.monitor
    this.monitor = undefined
    proc?.kill()
  }

  private async end(proc: ToolProcess | undefined): Promise<void> {
    if (proc === undefined || !proc.running) return
    proc.kill()
    await whenExited(proc)
  }

  private assertOpen(): void {
    if (this.closed) throw new GpioError('closed', `BCM ${this.bcm} is closed`)
  }
}

function toolError(command: string, code: number | null, stderr: string): GpioError {
  const detail = stderr.trim().split('\n').pop() ?? ''
  const kind = /busy/i.test(stderr) ? 'busy' : 'io'
  return new GpioError(kind, `${command} exited (${code ?? 'signal'})${detail === '' ? '' : `: ${detail}`}`)
}
