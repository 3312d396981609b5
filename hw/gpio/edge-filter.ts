// Software debounce and edge selection, shared by every driver so a bouncing
// contact behaves the same through sysfs polling, gpiomon events or the fake.
// Rule: a new level counts only once it has held for `debounceMs`; a bounce back
// to the reported level inside that time cancels it, so a burst of contact
// chatter yields at most one event. The event carries the time the level last
// changed (not when the wait ended), so press durations stay exact.
import type { Edge, GpioEvent, GpioTimers, Level, TimerHandle } from './types.js'

export interface EdgeFilterOptions {
  edge: Edge
  debounceMs: number
  timers: GpioTimers
  /** The level known when watching starts; no event is reported for it. */
  initial: Level
}

export class EdgeFilter {
  private stable: Level
  private raw: Level
  private rawSince: number
  private timer: TimerHandle | undefined
  private readonly subscribers = new Set<(event: GpioEvent) => void>()

  constructor(private readonly opts: EdgeFilterOptions) {
    this.stable = opts.initial
    this.raw = opts.initial
    this.rawSince = opts.timers.now()
  }

  /** The last debounced level. */
  get level(): Level {
    return this.stable
  }

  get size(): number {
    return this.subscribers.size
  }

  subscribe(cb: (event: GpioEvent) => void): () => void {
    this.subscribers.add(cb)
    return () => {
      this.subscribers.delete(cb)
    }
  }

  /** Feeds one observation of the (logical) level; repeats of the same level are fine. */
  sample(level: Level): void {
    if (level === this.raw) return
    this.raw = level
    this.rawSince = this.opts.timers.now()
    this.cancel()
    if (level === this.stable) return // bounced back before it counted
    if (this.opts.debounceMs <= 0) {
      this.commit()
      return
    }
    this.timer = this.opts.timers.setTimeout(() => {
      this.timer = undefined
      if (this.raw !== this.stable) this.commit()
    }, this.opts.debounceMs)
  }

  stop(): void {
    this.cancel()
    this.subscribers.clear()
  }

  private cancel(): void {
    if (this.timer !== undefined) this.opts.timers.clearTimeout(this.timer)
    this.timer = undefined
  }

  private commit(): void {
    this.stable = this.raw
    const edge = this.stable === 1 ? 'rising' : 'falling'
    if (this.opts.edge !== 'both' && this.opts.edge !== edge) return
    const event: GpioEvent = { value: this.stable, edge, atMs: this.rawSince }
    for (const cb of [...this.subscribers]) {
      try {
        cb(event)
      } catch {
        // A subscriber's bug must not stop the others or the poll loop.
      }
    }
  }
}
