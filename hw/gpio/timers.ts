// Real timers for the device, and a manual clock for tests and simulations:
// `advance(ms)` fires due callbacks in time order and awaits the promises they
// return (a sysfs poll reads a file), so a test sees every effect before it
// asserts, without sleeping.
import type { GpioTimers, TimerHandle } from './types.js'

/** unref'd: a blinking LED or a watched button never keeps the process alive on its own. */
export function systemTimers(): GpioTimers {
  let next = 1
  const live = new Map<number, NodeJS.Timeout>()
  return {
    now: () => Date.now(),
    setTimeout(cb, ms) {
      const id = next++
      const t = setTimeout(() => {
        live.delete(id)
        // A rejected poll is logged by its owner; never let it become unhandled.
        Promise.resolve()
          .then(cb)
          .catch(() => undefined)
      }, ms)
      t.unref?.()
      live.set(id, t)
      return { id }
    },
    clearTimeout(handle) {
      const t = live.get(handle.id)
      if (t !== undefined) clearTimeout(t)
      live.delete(handle.id)
    },
  }
}

interface Pending {
  id: number
  at: number
  seq: number
  cb: () => void | Promise<void>
}

export class ManualTimers implements GpioTimers {
  private t: number
  private nextId = 1
  private seq = 0
  private readonly pending = new Map<number, Pending>()

  constructor(startMs = 1_700_000_000_000) {
    this.t = startMs
  }

  now(): number {
    return this.t
  }

  setTimeout(cb: () => void | Promise<void>, ms: number): TimerHandle {
    const id = this.nextId++
    this.pending.set(id, { id, at: this.t + Math.max(0, ms), seq: this.seq++, cb })
    return { id }
  }

  clearTimeout(handle: TimerHandle): void {
    this.pending.delete(handle.id)
  }

  /** Number of scheduled callbacks (a stopped poll loop leaves none). */
  get scheduled(): number {
    return this.pending.size
  }

  /** Moves the clock forward, running every callback that falls due on the way. */
  async advance(ms: number): Promise<void> {
    const end = this.t + ms
    for (;;) {
      const due = [...this.pending.values()].filter(p => p.at <= end).sort((a, b) => a.at - b.at || a.seq - b.seq)[0]
      if (due === undefined) break
      this.pending.delete(due.id)
      this.t = Math.max(this.t, due.at)
      await due.cb()
      await flush()
    }
    this.t = end
    await flush()
  }
}

/** Lets promise chains and fs callbacks started by a callback run to completion. */
async function flush(rounds = 5): Promise<void> {
  for (let i = 0; i < rounds; i++) await new Promise<void>(resolve => setImmediate(resolve))
}
