// In-memory GPIO for machines without any (CI, x86 hosts, `npm start`): outputs
// are remembered, inputs are driven by `setInput`, as a simulated button or a
// test would. It honours active-low, debounce and busy/closed rules exactly like
// the real drivers, because the same contract test runs against it.
import { EdgeFilter } from './edge-filter.js'
import { systemTimers } from './timers.js'
import { checkBcm, GpioError, invert, type GpioDriver, type GpioEvent, type GpioLine, type GpioTimers, type Level, type OpenOptions } from './types.js'

export interface FakeGpioOptions {
  timers?: GpioTimers
  /** Lines on the fake chip; default 28 (BCM 0-27, the 40-pin header). */
  lines?: number
}

export interface FakeGpio extends GpioDriver {
  /** Sets the physical level on a pin, as the outside world would (ignored while the pin is an output). */
  setInput(bcm: number, physical: Level): void
  /** The physical level of a pin (an output's drive, or the last input set). */
  physical(bcm: number): Level
  /** Whether a line is currently open on the pin. */
  isOpen(bcm: number): boolean
}

export function createFakeGpio(opts: FakeGpioOptions = {}): FakeGpio {
  const timers = opts.timers ?? systemTimers()
  const lineCount = opts.lines ?? 28
  const levels = new Map<number, Level>()
  const open = new Map<number, FakeLine>()

  const physical = (bcm: number): Level => levels.get(bcm) ?? 0

  class FakeLine implements GpioLine {
    readonly location
    private closed = false
    private readonly filter: EdgeFilter | undefined

    constructor(
      readonly bcm: number,
      private readonly o: OpenOptions,
    ) {
      this.location = { driver: 'fake' as const, chip: 'fake', line: bcm }
      if (o.direction === 'out') levels.set(bcm, invert(o.initial ?? 0, o.activeLow))
      else {
        this.filter = new EdgeFilter({
          edge: o.edge ?? 'both',
          debounceMs: o.debounceMs ?? 0,
          timers,
          initial: invert(physical(bcm), o.activeLow),
        })
      }
    }

    async read(): Promise<Level> {
      this.assertOpen()
      return invert(physical(this.bcm), this.o.activeLow)
    }

    async write(value: Level): Promise<void> {
      this.assertOpen()
      if (this.o.direction !== 'out') throw new GpioError('direction', `BCM ${this.bcm} is an input`)
      levels.set(this.bcm, invert(value, this.o.activeLow))
    }

    watch(cb: (event: GpioEvent) => void): () => void {
      this.assertOpen()
      if (this.filter === undefined) throw new GpioError('direction', `BCM ${this.bcm} is an output`)
      return this.filter.subscribe(cb)
    }

    async close(): Promise<void> {
      this.closeNow()
    }

    closeNow(): void {
      if (this.closed) return
      this.closed = true
      this.filter?.stop()
      open.delete(this.bcm)
    }

    get isOutput(): boolean {
      return this.o.direction === 'out'
    }

    /** Called by setInput: the fake's equivalent of the kernel seeing a level change. */
    sense(): void {
      this.filter?.sample(invert(physical(this.bcm), this.o.activeLow))
    }

    private assertOpen(): void {
      if (this.closed) throw new GpioError('closed', `BCM ${this.bcm} is closed`)
    }
  }

  return {
    name: 'fake',
    async open(bcm, o) {
      checkBcm(bcm, lineCount)
      if (open.has(bcm)) throw new GpioError('busy', `BCM ${bcm} is already open`)
      const line = new FakeLine(bcm, o)
      open.set(bcm, line)
      return line
    },
    async close() {
      for (const line of [...open.values()]) line.closeNow()
    },
    releaseSync() {
      for (const line of [...open.values()]) line.closeNow()
    },
    setInput(bcm, level) {
      checkBcm(bcm, lineCount)
      const line = open.get(bcm)
      if (line?.isOutput === true) return // a driven pin ignores the outside world, as a real one would
      levels.set(bcm, level)
      line?.sense()
    },
    physical,
    isOpen: bcm => open.has(bcm),
  }
}
