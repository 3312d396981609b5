// The release repository as the fleet service follows it (`fleet serve --release-url
// --release-root`): every poll lists the releases the TUF metadata publishes, verified by
// OTA's own client against the pinned root (ota/release-list.ts), and records what
// changed (a new release, a rollout raised or cut to 0, a release withdrawn) in the store,
// so the rollouts page can show each release's rollout over time beside what the devices
// did with it. Metadata that does not verify is recorded nowhere: the page says why.

import type { Clock } from '../../protocol/clock.js'
import { isCairnError } from '../../protocol/errors.js'
import type { Logger } from '../../protocol/log.js'
import type { ReleaseListing } from '../../ota/release-list.js'
import type { FleetStore, ReleaseKind, ReleaseSummary } from './fleet-store.js'

export interface RepositoryState {
  /** the release repository's base URL (metadata/ below it) */
  url: string
  /** the last poll: when, and whether its metadata verified */
  checkedAt: number | null
  ok: boolean
  /** why the last poll failed (the TUF check that refused, or the network) */
  error: string | null
  /** the last verified listing: the targets role's version, its expiry, and when */
  targetsVersion: number | null
  expires: string | null
  verifiedAt: number | null
}

export interface ReleaseWatchOptions {
  url: string
  /** what the store compares metadata versions within (default the URL): the URL and
   * the pinned root, so a repository made anew at the same URL starts afresh */
  source?: string
  /** one verified listing (listReleases, bound to the URL, root and metadata dir) */
  list: () => Promise<ReleaseListing>
  store: FleetStore
  clock: Clock
  log: Logger
  everyMs: number
  /** told when what the page shows changed: a release recorded, or the repository's state */
  onChange?: () => void
  /** how long stop() waits for a poll under way (default 3 s); the poll is then left to
   * end by itself, recording nothing */
  stopWaitMs?: number
}

/** A listing's targets taken together per release (kind, version, channel): the highest
 * rollout of its targets, their count, and the arches and boards they name (null: one
 * of them is for any). */
export function summarise(listing: ReleaseListing): ReleaseSummary[] {
  const out = new Map<string, { kind: ReleaseKind; version: string; channel: string; rollout: number; targets: number; arch: Set<string> | null; boards: Set<string> | null }>()
  for (const r of listing.releases) {
    const key = `${r.kind}\n${r.version}\n${r.channel}`
    let e = out.get(key)
    if (!e) out.set(key, (e = { kind: r.kind, version: r.version, channel: r.channel, rollout: r.rollout, targets: 0, arch: new Set(), boards: new Set() }))
    e.targets++
    e.rollout = Math.max(e.rollout, r.rollout)
    e.arch = r.arch && e.arch ? new Set([...e.arch, ...r.arch]) : null
    e.boards = r.boards && e.boards ? new Set([...e.boards, ...r.boards]) : null
  }
  return [...out.values()].map(e => ({ ...e, arch: e.arch ? [...e.arch].sort() : null, boards: e.boards ? [...e.boards].sort() : null }))
}

export class ReleaseWatch {
  private current: RepositoryState
  private timer: NodeJS.Timeout | undefined
  private running: Promise<void> | undefined
  private stopped = false

  constructor(private readonly o: ReleaseWatchOptions) {
    this.current = { url: o.url, checkedAt: null, ok: false, error: null, targetsVersion: null, expires: null, verifiedAt: null }
  }

  state(): RepositoryState {
    return { ...this.current }
  }

  /** Polls now and then every `everyMs`; a poll that fails is logged and tried again at the next. */
  start(): void {
    const tick = () => {
      void this.poll().finally(() => {
        if (!this.stopped) this.timer = setTimeout(tick, this.o.everyMs)
      })
    }
    tick()
  }

  /** One poll (at most one at a time: a second call waits for the one under way). */
  poll(): Promise<void> {
    this.running ??= this.pollOnce().finally(() => (this.running = undefined))
    return this.running
  }

  private async pollOnce(): Promise<void> {
    const at = this.o.clock.now()
    const was = this.current
    try {
      const listing = await this.o.list()
      if (this.stopped) return
      const { added, stale } = await this.o.store.recordReleases(this.o.clock.now(), { source: this.o.source ?? this.o.url, version: listing.targetsVersion, releases: summarise(listing) })
      if (stale) {
        // another process (or an earlier run) recorded newer metadata: this one is behind
        if (!was.ok || was.verifiedAt === null) this.o.log.warn({ targetsVersion: listing.targetsVersion }, 'release metadata older than what was recorded from this repository: left out')
        this.current = { ...this.current, checkedAt: at, ok: true, error: null, verifiedAt: at }
      } else {
        this.current = { ...this.current, checkedAt: at, ok: true, error: null, targetsVersion: listing.targetsVersion, expires: listing.expires, verifiedAt: at }
        if (added > 0) this.o.log.info({ added, targetsVersion: listing.targetsVersion }, 'release repository changed')
      }
      if (added > 0 || !was.ok || was.targetsVersion !== this.current.targetsVersion) this.o.onChange?.()
    } catch (err) {
      if (this.stopped) return
      const error = isCairnError(err) ? `${err.code}: ${err.message}` : err instanceof Error ? err.message : String(err)
      if (error !== this.current.error) this.o.log.warn({ err, url: this.o.url }, 'release repository not read')
      this.current = { ...this.current, checkedAt: at, ok: false, error: error.slice(0, 1000) }
      if (was.ok || was.error !== this.current.error) this.o.onChange?.()
    }
  }

  /** Stops polling; waits a few seconds at most for a poll under way (a slow release
   * server must not hold the service's stop), which then records nothing. */
  async stop(): Promise<void> {
    this.stopped = true
    clearTimeout(this.timer)
    const running = this.running
    if (!running) return
    let timer: NodeJS.Timeout | undefined
    await Promise.race([running, new Promise<void>(r => (timer = setTimeout(r, this.o.stopWaitMs ?? 3000)))])
    clearTimeout(timer)
  }
}
