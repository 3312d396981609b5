// The one GPIO interface every driver implements (Linux sysfs, the libgpiod
// character-device tools, an in-memory fake). Pins are BCM numbers, the numbers
// printed on Raspberry Pi pinout diagrams; each driver maps them to its own line
// numbering, which is exactly what differs between boards and kernels.

export type Level = 0 | 1
export type Edge = 'rising' | 'falling' | 'both'
export type DriverName = 'sysfs' | 'gpiod' | 'fake'

export interface OpenOptions {
  direction: 'in' | 'out'
  /** Which debounced transitions `watch` reports; default 'both'. */
  edge?: Edge
  /** Logical 1 drives or reads the pin low (LED to 3V3, button to GND). */
  activeLow?: boolean
  /** A level must hold this long before it counts as a transition; default 0. */
  debounceMs?: number
  /** Outputs only: the logical level set when the line is opened; default 0. */
  initial?: Level
}

export interface GpioEvent {
  /** The logical level after the transition. */
  value: Level
  edge: 'rising' | 'falling'
  /** Timer clock (ms) at which the level changed and then held. */
  atMs: number
}

/** Where a BCM pin ended up: `line` is the sysfs global number or the gpiod chip offset. */
export interface LineLocation {
  driver: DriverName
  chip: string
  line: number
}

export interface GpioLine {
  readonly bcm: number
  readonly location: LineLocation
  /** The logical level (active-low already applied). */
  read(): Promise<Level>
  /** Outputs only. */
  write(value: Level): Promise<void>
  /** Inputs only. Returns the unsubscribe function. */
  watch(cb: (event: GpioEvent) => void): () => void
  /** Releases the line (unexport / ends the tool process). Idempotent. */
  close(): Promise<void>
}

export interface GpioDriver {
  readonly name: DriverName
  open(bcm: number, opts: OpenOptions): Promise<GpioLine>
  /** Closes every line this driver opened. */
  close(): Promise<void>
  /** Best-effort synchronous release for process 'exit' handlers. */
  releaseSync(): void
}

export type GpioErrorCode =
  | 'no-such-pin' // BCM number outside the header chip
  | 'busy' // already open here, or held by another consumer
  | 'closed' // used after close()
  | 'direction' // write on an input, watch on an output
  | 'io' // the kernel or a tool refused, or a file held nonsense

export class GpioError extends Error {
  constructor(
    readonly code: GpioErrorCode,
    message: string,
  ) {
    super(message)
    this.name = 'GpioError'
  }
}

/** Timers are injected so tests step a manual clock instead of sleeping. */
export interface GpioTimers {
  now(): number
  /** A callback returning a promise is awaited by manual timers before time moves on. */
  setTimeout(cb: () => void | Promise<void>, ms: number): TimerHandle
  clearTimeout(handle: TimerHandle): void
}

export interface TimerHandle {
  readonly id: number
}

/** The slice of a pino logger the GPIO layer uses. */
export interface GpioLog {
  info(obj: object, msg: string): void
  warn(obj: object, msg: string): void
}

export const silentLog: GpioLog = { info() {}, warn() {} }

export function checkBcm(bcm: number, lines: number): void {
  if (!Number.isInteger(bcm) || bcm < 0 || bcm >= lines) {
    throw new GpioError('no-such-pin', `BCM ${bcm} is not a line of the header chip (0..${lines - 1})`)
  }
}

export function invert(level: Level, activeLow: boolean | undefined): Level {
  return activeLow === true ? (level === 1 ? 0 : 1) : level
}
