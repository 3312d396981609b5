// An LED pattern player: loops a pattern of on/off durations on a GPIO output with
// injected timers. It knows nothing of what a pattern means: which patterns exist and
// when each is shown is the caller's business.
import { silentLog, type GpioLine, type GpioLog, type GpioTimers, type Level, type TimerHandle } from './types.js'

export interface LedStep {
  on: boolean
  ms: number
}

export interface LedFrame {
  level: Level
  ms: number
}

/** The frames to write to a line opened active-high: active-low wiring inverts each level. */
export function ledFrames(steps: readonly LedStep[], activeLow = false): LedFrame[] {
  return steps.map(s => ({ level: (s.on !== activeLow ? 1 : 0) as Level, ms: s.ms }))
}

export function describeSteps(steps: readonly LedStep[]): string {
  return steps.map(s => `${s.on ? 'on' : 'off'} ${s.ms}`).join(', ')
}

const sameSteps = (a: readonly LedStep[], b: readonly LedStep[]): boolean => a.length === b.length && a.every((s, i) => s.on === b[i]?.on && s.ms === b[i]?.ms)

export interface LedPlayerOptions {
  timers: GpioTimers
  /** The LED lights when the pin is low (wired from 3V3 through the LED to the pin). */
  activeLow?: boolean
  log?: GpioLog
}

/**
 * Loops one pattern at a time on `line`, which must be an output opened WITHOUT
 * activeLow (the frames already carry the inversion). play() with the pattern already
 * playing keeps the loop's phase; a different pattern restarts at its first step.
 */
export class LedPlayer {
  private current: readonly LedStep[] | undefined
  private frames: LedFrame[] = []
  private index = 0
  private timer: TimerHandle | undefined
  private warned = false
  private stopped = false

  constructor(
    private readonly line: GpioLine,
    private readonly opts: LedPlayerOptions,
  ) {}

  /** The pattern being looped, if any. */
  get playing(): readonly LedStep[] | undefined {
    return this.current
  }

  play(steps: readonly LedStep[]): void {
    // A zero-length loop would spin the timers without ever yielding.
    if (steps.length === 0 || !steps.every(s => s.ms > 0)) throw new RangeError(`LED pattern needs steps of positive length: [${describeSteps(steps)}]`)
    if (this.stopped || (this.current !== undefined && sameSteps(steps, this.current))) return
    this.current = steps
    this.frames = ledFrames(steps, this.opts.activeLow === true)
    this.index = 0
    this.cancel()
    this.timer = this.opts.timers.setTimeout(() => this.step(), 0)
  }

  /** Stops the loop for good and leaves the LED dark. */
  async stop(): Promise<void> {
    this.stopped = true
    this.cancel()
    this.current = undefined
    await this.put(this.opts.activeLow === true ? 1 : 0)
  }

  private async step(): Promise<void> {
    const frame = this.frames[this.index]
    if (frame === undefined || this.stopped) return
    this.index = (this.index + 1) % this.frames.length
    this.timer = this.opts.timers.setTimeout(() => this.step(), frame.ms)
    await this.put(frame.level)
  }

  private async put(level: Level): Promise<void> {
    try {
      await this.line.write(level)
    } catch (err) {
      if (!this.warned) (this.opts.log ?? silentLog).warn({ bcm: this.line.bcm, err }, 'LED write failed')
      this.warned = true
    }
  }

  private cancel(): void {
    if (this.timer !== undefined) this.opts.timers.clearTimeout(this.timer)
    this.timer = undefined
  }
}
