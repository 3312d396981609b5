// The status LED: a pure table of blink patterns, one per agent state, and a
// player that loops a pattern on a GPIO line with injected timers. Patterns are
// told apart by counting flashes, so they read the same on a red, green or blue
// LED and need no colour. Each is a loop of on/off steps with a 2-3 s period.
import { silentLog, type GpioLine, type GpioLog, type GpioTimers, type Level, type TimerHandle } from './types.js'

export type LedState = 'provisioning-error' | 'no-network' | 'broker-unreachable' | 'online' | 'updating'

export interface LedStep {
  on: boolean
  ms: number
}

export interface LedPattern {
  steps: readonly LedStep[]
  /** What an owner sees, for docs and `cairn` status output. */
  looks: string
}

const on = (ms: number): LedStep => ({ on: true, ms })
const off = (ms: number): LedStep => ({ on: false, ms })

export const LED_PATTERNS: Readonly<Record<LedState, LedPattern>> = {
  'provisioning-error': { steps: [on(150), off(150), on(150), off(150), on(150), off(1250)], looks: 'three quick flashes, pause' },
  'broker-unreachable': { steps: [on(150), off(150), on(150), off(1550)], looks: 'two quick flashes, pause' },
  'no-network': { steps: [on(1000), off(1000)], looks: 'slow even blink, 1 s on / 1 s off' },
  updating: { steps: [on(150), off(150)], looks: 'fast flicker, about 3 per second' },
  online: { steps: [on(2850), off(150)], looks: 'on, with a short wink every 3 s (the agent is alive)' },
}

/** The frames to write to a line opened active-high: active-low wiring inverts each level. */
export function ledFrames(state: LedState, activeLow = false): Array<{ level: Level; ms: number }> {
  return LED_PATTERNS[state].steps.map((s) => ({ level: (s.on !== activeLow ? 1 : 0) as Level, ms: s.ms }))
}

export function describeSteps(steps: readonly LedStep[]): string {
  return steps.map((s) => `${s.on ? 'on' : 'off'} ${s.ms}`).join(', ')
}

export interface AgentConditions {
  provisioningError: boolean
  updating: boolean
  network: boolean
  broker: boolean
}

/** When several things hold at once, the one an owner must act on first wins. */
export function ledStateFor(c: AgentConditions): LedState {
  if (c.provisioningError) return 'provisioning-error'
  if (c.updating) return 'updating'
  if (!c.network) return 'no-network'
  if (!c.broker) return 'broker-unreachable'
  return 'online'
}

export interface StatusLedOptions {
  timers: GpioTimers
  /** The LED lights when the pin is low (wired from 3V3 through the LED to the pin). */
  activeLow?: boolean
  log?: GpioLog
}

/**
 * Loops one pattern at a time on `line`, which must be an output opened WITHOUT
 * activeLow (the frames already carry the inversion). show() with the current
 * state keeps the loop running; a new state restarts at its first step.
 */
export class StatusLed {
  private current: LedState | undefined
  private frames: Array<{ level: Level; ms: number }> = []
  private index = 0
  private timer: TimerHandle | undefined
  private warned = false
  private stopped = false

  constructor(
    private readonly line: GpioLine,
    private readonly opts: StatusLedOptions,
  ) {}

  get state(): LedState | undefined {
    return this.current
  }

  show(state: LedState): void {
    if (this.stopped || state === this.current) return
    this.current = state
    this.frames = ledFrames(state, this.opts.activeLow === true)
    this.index = 0
    this.cancel()
    this.timer = this.opts.timers.setTimeout(() => this.step(), 0)
  }

  /** Stops the loop and leaves the LED dark. */
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
      if (!this.warned) (this.opts.log ?? silentLog).warn({ bcm: this.line.bcm, err: String(err) }, 'status LED write failed')
      this.warned = true
    }
  }

  private cancel(): void {
    if (this.timer !== undefined) this.opts.timers.clearTimeout(this.timer)
    this.timer = undefined
  }
}
