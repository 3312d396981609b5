// Refusals of input nobody authenticated, logged as counts per interval: the first of
// each code in an interval in full (what it was, so the owner can tell a typo from an
// attack), the rest counted and told in one summary line when the interval ends. A flood
// of junk costs a few log lines a minute, not one per message (the local API does the
// same for wrong tokens). Authenticated failures are not this class's: those are logged
// one by one, since only a trusted key can cause them.

import type { Logger } from './log.js'

export class RefusalLog {
  private counts = new Map<string, number>()
  private timer: NodeJS.Timeout | undefined

  constructor(
    private readonly log: Logger,
    /** e.g. "command", "task message", "proof message" */
    private readonly what: string,
    private readonly intervalMs = 60_000,
  ) {}

  refused(code: string, detail: Record<string, unknown>): void {
    const n = this.counts.get(code) ?? 0
    this.counts.set(code, n + 1)
    if (n === 0) this.log.warn({ code, ...detail }, `${this.what} refused (the first of its kind in this interval; more are counted)`)
    this.timer ??= setTimeout(() => this.flush(), this.intervalMs).unref()
  }

  /** Tells what was counted since the first of each kind, and starts a new interval. */
  flush(): void {
    if (this.timer) clearTimeout(this.timer)
    this.timer = undefined
    const byCode = Object.fromEntries(this.counts)
    const refused = [...this.counts.values()].reduce((a, b) => a + b, 0)
    this.counts = new Map()
    if (refused > Object.keys(byCode).length) this.log.warn({ refused, byCode, intervalS: this.intervalMs / 1000 }, `${this.what}s refused in the last interval`)
  }
}
