// The live stream's source: the ingest says which device changed, the feed coalesces
// that into at most one notice a second (at 10,000 devices sending every 10 s that is
// 1,000 changes a second, more than any browser wants one by one) and hands each notice
// to every subscriber (an SSE connection, http-api.ts). A notice names up to 200
// devices; more is a count, and the console then reloads its whole view.

export interface ChangeNotice {
  /** devices that changed since the last notice (at most MAX_NAMED) */
  readonly devices: readonly string[]
  /** how many more changed than are named */
  readonly more: number
  /** a presence changed (the overview's counts moved) */
  readonly presence: boolean
  /** the release repository's listing or state changed (the rollouts page) */
  readonly releases: boolean
}

const MAX_NAMED = 200

export class ChangeFeed {
  private readonly subscribers = new Set<(n: ChangeNotice) => void>()
  private readonly changed = new Set<string>()
  private more = 0
  private presence = false
  private releases = false
  private timer: NodeJS.Timeout | undefined

  constructor(private readonly everyMs = 1000) {}

  notify(device: string, what: 'status' | 'telemetry' | 'event' | 'command'): void {
    if (what === 'status') this.presence = true
    if (this.changed.size < MAX_NAMED) this.changed.add(device)
    else if (!this.changed.has(device)) this.more++
    this.timer ??= setTimeout(() => this.flush(), this.everyMs)
  }

  /** The release repository changed: a notice naming no device. */
  notifyReleases(): void {
    this.releases = true
    this.timer ??= setTimeout(() => this.flush(), this.everyMs)
  }

  subscribe(fn: (n: ChangeNotice) => void): () => void {
    this.subscribers.add(fn)
    return () => this.subscribers.delete(fn)
  }

  get size(): number {
    return this.subscribers.size
  }

  private flush(): void {
    this.timer = undefined
    const notice: ChangeNotice = { devices: [...this.changed], more: this.more, presence: this.presence, releases: this.releases }
    this.changed.clear()
    this.more = 0
    this.presence = false
    this.releases = false
    for (const fn of this.subscribers) fn(notice)
  }

  close(): void {
    clearTimeout(this.timer)
    this.subscribers.clear()
  }
}
