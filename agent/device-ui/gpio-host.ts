// The agent's one GPIO driver, shared by the status LED, the button and the lines the
// local API lends to clients. Created on first use, so an agent with no LED, no button
// and no GPIO client never probes /sys or runs gpiodetect. Lines are released when the
// agent stops and, as a last resort, when the process exits.
// Every line is opened through open(), which hands back the driver's line wrapped so the
// host knows what is held (for telemetry's `io`): who holds it, its direction and the
// level last written or seen, all from the calls that pass through anyway (no polling).

import {
  createGpio,
  GpioError,
  releaseOnExit,
  systemTimers,
  type DriverName,
  type GpioDriver,
  type GpioEvent,
  type GpioLine,
  type GpioTimers,
  type Level,
  type OpenOptions,
} from '../../hw/gpio/index.js'
import type { HwContext } from '../../hw/index.js'
import { CairnError } from '../../protocol/errors.js'
import type { Logger } from '../../protocol/log.js'

export interface GpioHostOptions {
  hw: Omit<HwContext, 'diskPaths'>
  driver: 'auto' | DriverName
  log: Logger
  /** Pins the agent drives itself; the local API refuses them with PIN_BUSY. */
  reserved: ReadonlyMap<number, string>
  timers?: GpioTimers
}

/** Who holds a line: the status LED, the button, or a client of the local API. */
export type GpioHolder = 'led' | 'button' | 'local-api'

/** A line the agent holds open, as telemetry reports it. */
export interface HeldLine {
  pin: number
  holder: GpioHolder
  direction: 'in' | 'out'
  /** The logical level (active-low applied, as the holder opened it) last written (out:
   * the initial level until a write) or seen by a read or a reported edge (in: unknown
   * until the first). Writes and reads that fail leave it as it was. */
  value?: Level
}

/** The most lines lines() lists (the telemetry schema's cap). */
const MAX_LISTED = 64

export class GpioHost {
  readonly timers: GpioTimers
  private driverP: Promise<GpioDriver> | undefined
  /** The lines open through open(), by pin (a driver opens a pin once at a time). */
  private readonly held = new Map<number, TrackedLine>()
  private unhookExit: (() => void) | undefined
  private closed = false

  constructor(private readonly o: GpioHostOptions) {
    this.timers = o.timers ?? systemTimers()
  }

  /** Why a pin cannot be lent, or undefined. */
  reservedFor(pin: number): string | undefined {
    return this.o.reserved.get(pin)
  }

  driver(): Promise<GpioDriver> {
    if (this.closed) return Promise.reject(new CairnError('UNAVAILABLE', 'the agent is stopping'))
    this.driverP ??= createGpio(this.o.hw as HwContext, {
      timers: this.timers,
      log: this.o.log,
      ...(this.o.driver === 'auto' ? {} : { driver: this.o.driver }),
    }).then(sel => {
      this.unhookExit = releaseOnExit(sel.driver)
      return sel.driver
    })
    return this.driverP
  }

  /** Opens a line for `holder`: the driver's line, wrapped so that its writes, reads,
   * edges and close keep lines() up to date. Errors are the driver's (GpioError). */
  async open(holder: GpioHolder, pin: number, opts: OpenOptions): Promise<GpioLine> {
    const line = await (await this.driver()).open(pin, opts)
    const tracked = new TrackedLine(line, holder, opts, l => {
      if (this.held.get(l.bcm) === l) this.held.delete(l.bcm)
    })
    this.held.set(line.bcm, tracked)
    return tracked
  }

  /** The lines held open now, by pin (at most 64): what each holder did with them, from
   * memory (nothing is read from the hardware). */
  lines(): HeldLine[] {
    return [...this.held.values()]
      .sort((a, b) => a.bcm - b.bcm)
      .slice(0, MAX_LISTED)
      .map(l => ({ pin: l.bcm, holder: l.holder, direction: l.direction, ...(l.value !== undefined ? { value: l.value } : {}) }))
  }

  /** The driver's name once created (status output), else undefined. */
  async driverName(): Promise<string | undefined> {
    return this.driverP ? (await this.driverP).name : undefined
  }

  async close(): Promise<void> {
    this.closed = true
    const p = this.driverP
    if (!p) return
    const d = await p
    await d.close()
    this.held.clear()
    this.unhookExit?.()
  }
}

/** A driver's line as its holder uses it, remembering the level last written or seen. */
class TrackedLine implements GpioLine {
  readonly direction: 'in' | 'out'
  value: Level | undefined

  constructor(
    private readonly line: GpioLine,
    readonly holder: GpioHolder,
    opts: OpenOptions,
    private readonly released: (l: TrackedLine) => void,
  ) {
    this.direction = opts.direction
    // An output is driven to its initial level as it opens; an input is unknown until read.
    if (opts.direction === 'out') this.value = opts.initial ?? 0
  }

  get bcm(): number {
    return this.line.bcm
  }

  get location(): GpioLine['location'] {
    return this.line.location
  }

  async read(): Promise<Level> {
    const v = await this.line.read()
    this.value = v
    return v
  }

  async write(value: Level): Promise<void> {
    await this.line.write(value)
    this.value = value
  }

  watch(cb: (event: GpioEvent) => void): () => void {
    return this.line.watch(ev => {
      this.value = ev.value
      cb(ev)
    })
  }

  close(): Promise<void> {
    this.released(this)
    return this.line.close()
  }
}

/** A GpioError as a CairnError with a code a client can branch on. */
export function gpioCairnError(err: unknown, pin: number): CairnError {
  if (err instanceof CairnError) return err
  if (err instanceof GpioError) {
    if (err.code === 'busy') return new CairnError('PIN_BUSY', err.message)
    if (err.code === 'no-such-pin') return new CairnError('BAD_REQUEST', err.message)
    return new CairnError('GPIO', err.message)
  }
  return new CairnError('GPIO', `BCM ${pin}: ${(err as Error).message}`)
}
