// A push button's gestures: a pure state machine over debounced press/release times,
// and a small watcher that feeds it from a GPIO line. Gestures:
//   short press (released before longPressMs)  → 'press'
//   held for longPressMs                        → 'long-press' (while still held)
//   then, released, a confirmation window opens:
//     another press held longPressMs inside it  → 'confirmed-long-press'
//     a short press inside it, or no press      → 'cancel'
// What a gesture means is the caller's business; the two-step confirmed long press is
// for actions too drastic to follow from one long press alone.
import type { GpioEvent, GpioLine, GpioTimers, TimerHandle } from './types.js'

export type ButtonGesture = 'press' | 'long-press' | 'confirmed-long-press' | 'cancel'

export interface ButtonTiming {
  longPressMs: number
  confirmWindowMs: number
}

export const DEFAULT_BUTTON_TIMING: ButtonTiming = { longPressMs: 3000, confirmWindowMs: 10_000 }

export type ButtonState = { kind: 'idle' } | { kind: 'down'; since: number; confirming: boolean; longSent: boolean } | { kind: 'armed'; until: number } | { kind: 'ignore-until-release' }

export class ButtonMachine {
  private s: ButtonState = { kind: 'idle' }

  constructor(private readonly timing: ButtonTiming = DEFAULT_BUTTON_TIMING) {}

  get state(): ButtonState {
    return this.s
  }

  /** For a button already held when watching starts: wait for its release. */
  ignoreUntilRelease(): void {
    this.s = { kind: 'ignore-until-release' }
  }

  press(atMs: number): ButtonGesture[] {
    const out = this.tick(atMs)
    if (this.s.kind === 'idle') this.s = { kind: 'down', since: atMs, confirming: false, longSent: false }
    else if (this.s.kind === 'armed') this.s = { kind: 'down', since: atMs, confirming: true, longSent: false }
    return out
  }

  release(atMs: number): ButtonGesture[] {
    const out = this.tick(atMs)
    const s = this.s
    if (s.kind === 'ignore-until-release') this.s = { kind: 'idle' }
    if (s.kind !== 'down') return out
    if (s.longSent) {
      this.s = s.confirming ? { kind: 'idle' } : { kind: 'armed', until: atMs + this.timing.confirmWindowMs }
      return out
    }
    this.s = { kind: 'idle' }
    out.push(s.confirming ? 'cancel' : 'press')
    return out
  }

  /** Lets time pass: a held button crosses the long-press threshold, a window expires. */
  tick(atMs: number): ButtonGesture[] {
    const s = this.s
    if (s.kind === 'down' && !s.longSent && atMs - s.since >= this.timing.longPressMs) {
      this.s = { ...s, longSent: true }
      return [s.confirming ? 'confirmed-long-press' : 'long-press']
    }
    if (s.kind === 'armed' && atMs >= s.until) {
      this.s = { kind: 'idle' }
      return ['cancel']
    }
    return []
  }

  /** When tick() next has something to do, if anything. */
  deadline(): number | undefined {
    const s = this.s
    if (s.kind === 'down' && !s.longSent) return s.since + this.timing.longPressMs
    if (s.kind === 'armed') return s.until
    return undefined
  }
}

export interface ButtonWatchOptions {
  timers: GpioTimers
  timing?: ButtonTiming
  onGesture: (gesture: ButtonGesture, atMs: number) => void
}

/**
 * Feeds the machine from `line`, an input opened with the button's wiring as
 * activeLow and a debounce (20-50 ms suits most tactile switches), so logical 1
 * means pressed. A button held at start is ignored until released.
 */
export async function watchButton(line: GpioLine, opts: ButtonWatchOptions): Promise<{ stop(): void }> {
  const machine = new ButtonMachine(opts.timing ?? DEFAULT_BUTTON_TIMING)
  let timer: TimerHandle | undefined
  let stopped = false

  const emit = (gestures: ButtonGesture[], atMs: number) => {
    for (const g of gestures) opts.onGesture(g, atMs)
  }
  const schedule = () => {
    if (timer !== undefined) opts.timers.clearTimeout(timer)
    timer = undefined
    const due = machine.deadline()
    if (due === undefined || stopped) return
    timer = opts.timers.setTimeout(
      () => {
        timer = undefined
        emit(machine.tick(opts.timers.now()), opts.timers.now())
        schedule()
      },
      Math.max(0, due - opts.timers.now()),
    )
  }

  if ((await line.read()) === 1) machine.ignoreUntilRelease()
  const unsubscribe = line.watch((ev: GpioEvent) => {
    emit(ev.value === 1 ? machine.press(ev.atMs) : machine.release(ev.atMs), ev.atMs)
    schedule()
  })
  return {
    stop() {
      stopped = true
      unsubscribe()
      if (timer !== undefined) opts.timers.clearTimeout(timer)
    },
  }
}
