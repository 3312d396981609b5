// GPIO through the kernel's sysfs interface (/sys/class/gpio), in plain node:fs:
// export base+BCM, set active_low and direction, read and write `value`, and
// unexport on close. The global number is the header chip's `base` plus the BCM
// pin, which is the step onoff leaves to its users and gets wrong on Pi 5 and
// kernels >= 6.6 (see docs/gpio.md).
//
// Edges are found by polling `value` every `pollMs`: a sysfs edge is signalled as
// POLLPRI on the open file, which Node cannot wait for without a native addon
// (onoff uses the `epoll` addon for it). Polling a 2-byte attribute every 10 ms
// costs little on a Pi and keeps one JavaScript code path.
import { constants, writeFileSync } from 'node:fs'
import { access, readFile, writeFile } from 'node:fs/promises'
import { underRoot, type HwContext } from '../context.js'
import { chipForBcm, headerChip, HEADER_CHIP_LABELS, sysfsChips, type GpioChip } from './chips.js'
import { EdgeFilter } from './edge-filter.js'
import { systemTimers } from './timers.js'
import { GpioError, invert, silentLog, type GpioDriver, type GpioEvent, type GpioLine, type GpioLog, type GpioTimers, type Level, type OpenOptions, type TimerHandle } from './types.js'

/** File access seam: the device uses node:fs under the root; tests add the kernel's side effects. */
export interface SysfsFiles {
  read(path: string): Promise<string>
  write(path: string, data: string): Promise<void>
  exists(path: string): Promise<boolean>
  writeSync(path: string, data: string): void
}

export function nodeSysfsFiles(ctx: Pick<HwContext, 'root'>): SysfsFiles {
  return {
    read: path => readFile(underRoot(ctx, path), 'utf8'),
    write: (path, data) => writeFile(underRoot(ctx, path), data),
    exists: path =>
      access(underRoot(ctx, path), constants.W_OK).then(
        () => true,
        () => false,
      ),
    writeSync: (path, data) => writeFileSync(underRoot(ctx, path), data),
  }
}

export interface SysfsOptions {
  timers?: GpioTimers
  log?: GpioLog
  /** Edge polling interval; default 10 ms. */
  pollMs?: number
  /** How long to wait for udev to make a freshly exported gpioN writable; default 1000 ms. */
  exportWaitMs?: number
  files?: SysfsFiles
}

const CLASS = '/sys/class/gpio'

/** The header chip, or why sysfs cannot be used here. */
export async function probeSysfs(ctx: Pick<HwContext, 'root'>): Promise<{ chip: GpioChip } | { reason: string }> {
  const chips = await sysfsChips(ctx)
  if (chips.length === 0) return { reason: `no ${CLASS}/gpiochip* (kernel without CONFIG_GPIO_SYSFS, or no GPIO)` }
  const chip = headerChip(chips)
  if (chip === undefined) {
    const seen = chips.map(c => c.label).join(', ')
    return { reason: `no header chip in ${CLASS} (labels ${seen}; want one of ${HEADER_CHIP_LABELS.join(', ')})` }
  }
  const writable = await nodeSysfsFiles(ctx).exists(`${CLASS}/export`)
  if (!writable) return { reason: `${CLASS}/export is not writable (run as root or in the gpio group)` }
  return { chip }
}

export function createSysfsDriver(ctx: Pick<HwContext, 'root'>, chip: GpioChip, opts: SysfsOptions = {}): GpioDriver {
  const files = opts.files ?? nodeSysfsFiles(ctx)
  const timers = opts.timers ?? systemTimers()
  const log = opts.log ?? silentLog
  const pollMs = opts.pollMs ?? 10
  const exportWaitMs = opts.exportWaitMs ?? 1000
  const lines = new Map<number, SysfsLine>()

  const sleep = (ms: number) => new Promise<void>(resolve => timers.setTimeout(resolve, ms))

  async function waitWritable(dir: string): Promise<boolean> {
    for (let waited = 0; ; waited += 10) {
      if ((await files.exists(`${dir}/value`)) && (await files.exists(`${dir}/direction`))) return true
      if (waited >= exportWaitMs) return false
      await sleep(10)
    }
  }

  return {
    name: 'sysfs',
    async open(bcm, o) {
      if (lines.has(bcm)) throw new GpioError('busy', `BCM ${bcm} is already open`)
      const { global } = chipForBcm(chip, bcm)
      const n = global ?? bcm
      const dir = `${CLASS}/gpio${n}`
      let exported = false
      if (!(await files.exists(`${dir}/value`))) {
        try {
          await files.write(`${CLASS}/export`, String(n))
        } catch (err) {
          throw exportError(err, bcm, n)
        }
        exported = true
        if (!(await waitWritable(dir))) {
          await files.write(`${CLASS}/unexport`, String(n)).catch(() => undefined)
          throw new GpioError('io', `${dir} did not become writable within ${exportWaitMs} ms`)
        }
      } else {
        log.info({ bcm, gpio: n }, 'gpio already exported; reusing it and leaving it exported on close')
      }
      const line = new SysfsLine(bcm, n, dir, exported, chip, o, { files, timers, log, pollMs })
      try {
        await line.configure()
      } catch (err) {
        if (exported) await files.write(`${CLASS}/unexport`, String(n)).catch(() => undefined)
        throw err instanceof GpioError ? err : new GpioError('io', `configuring ${dir}: ${String(err)}`)
      }
      lines.set(bcm, line)
      line.onClose = () => lines.delete(bcm)
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

function exportError(err: unknown, bcm: number, n: number): GpioError {
  const code = (err as NodeJS.ErrnoException).code
  if (code === 'EBUSY') return new GpioError('busy', `BCM ${bcm} (gpio${n}) is claimed by a kernel driver or another process`)
  if (code === 'EINVAL') return new GpioError('no-such-pin', `the kernel refused to export gpio${n} for BCM ${bcm}`)
  return new GpioError('io', `exporting gpio${n}: ${code ?? String(err)}`)
}

interface LineDeps {
  files: SysfsFiles
  timers: GpioTimers
  log: GpioLog
  pollMs: number
}

class SysfsLine implements GpioLine {
  readonly location
  onClose: (() => void) | undefined
  private closed = false
  private filter: EdgeFilter | undefined
  private poll: TimerHandle | undefined
  private pollWarned = false

  constructor(
    readonly bcm: number,
    private readonly n: number,
    private readonly dir: string,
    private readonly exported: boolean,
    chip: GpioChip,
    private readonly opts: OpenOptions,
    private readonly deps: LineDeps,
  ) {
    this.location = { driver: 'sysfs' as const, chip: chip.name, line: n }
  }

  async configure(): Promise<void> {
    const { files } = this.deps
    await files.write(`${this.dir}/active_low`, this.opts.activeLow === true ? '1' : '0')
    if (this.opts.direction === 'out') {
      // "high"/"low" switch to output glitch-free; they set the raw level, so apply active-low here.
      const raw = invert(this.opts.initial ?? 0, this.opts.activeLow)
      await files.write(`${this.dir}/direction`, raw === 1 ? 'high' : 'low')
      return
    }
    await files.write(`${this.dir}/direction`, 'in')
    this.filter = new EdgeFilter({
      edge: this.opts.edge ?? 'both',
      debounceMs: this.opts.debounceMs ?? 0,
      timers: this.deps.timers,
      initial: await this.readValue(),
    })
  }

  async read(): Promise<Level> {
    this.assertOpen()
    return this.readValue()
  }

  async write(value: Level): Promise<void> {
    this.assertOpen()
    if (this.opts.direction !== 'out') throw new GpioError('direction', `BCM ${this.bcm} is an input`)
    try {
      await this.deps.files.write(`${this.dir}/value`, value === 1 ? '1' : '0')
    } catch (err) {
      throw new GpioError('io', `writing ${this.dir}/value: ${String(err)}`)
    }
  }

  watch(cb: (event: GpioEvent) => void): () => void {
    this.assertOpen()
    const filter = this.filter
    if (filter === undefined) throw new GpioError('direction', `BCM ${this.bcm} is an output`)
    const unsubscribe = filter.subscribe(cb)
    this.startPolling()
    return () => {
      unsubscribe()
      if (filter.size === 0) this.stopPolling()
    }
  }

  async close(): Promise<void> {
    if (this.closed) return
    this.closed = true
    this.stopPolling()
    this.filter?.stop()
    this.onClose?.()
    if (!this.exported) return
    try {
      await this.deps.files.write(`${CLASS}/unexport`, String(this.n))
    } catch (err) {
      this.deps.log.warn({ gpio: this.n, err }, 'unexport failed')
    }
  }

  releaseSync(): void {
    if (this.closed) return
    this.closed = true
    this.stopPolling()
    if (!this.exported) return
    try {
      this.deps.files.writeSync(`${CLASS}/unexport`, String(this.n))
    } catch {
      // Exiting anyway; nothing better to do.
    }
  }

  private async readValue(): Promise<Level> {
    let text: string
    try {
      text = await this.deps.files.read(`${this.dir}/value`)
    } catch (err) {
      throw new GpioError('io', `reading ${this.dir}/value: ${String(err)}`)
    }
    const v = text.trim()
    if (v !== '0' && v !== '1') throw new GpioError('io', `${this.dir}/value holds ${JSON.stringify(v.slice(0, 8))}`)
    return v === '1' ? 1 : 0
  }

  private startPolling(): void {
    if (this.poll !== undefined) return
    const tick = async (): Promise<void> => {
      try {
        const level = await this.readValue()
        this.filter?.sample(level)
      } catch (err) {
        if (!this.pollWarned) this.deps.log.warn({ bcm: this.bcm, err }, 'gpio poll failed')
        this.pollWarned = true
      }
      if (this.poll !== undefined) this.poll = this.deps.timers.setTimeout(tick, this.deps.pollMs)
    }
    this.poll = this.deps.timers.setTimeout(tick, this.deps.pollMs)
  }

  private stopPolling(): void {
    if (this.poll !== undefined) this.deps.timers.clearTimeout(this.poll)
    this.poll = undefined
  }

  private assertOpen(): void {
    if (this.closed) throw new GpioError('closed', `BCM ${this.bcm} is closed`)
  }
}
