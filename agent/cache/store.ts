// The content-addressed store: objects named by their SHA-256 under
// <dir>/objects/<first two hex>/<sha256>, an index (index-db.ts) with sizes, access
// times and pins, leases in memory, a byte quota with LRU eviction.
//
// Nothing unverified is ever visible: a download streams into <dir>/tmp/ (same
// filesystem), is hashed on the way, fsynced, renamed into place, the directory
// fsynced, and only then indexed. A crash leaves at worst a temp file (deleted on open)
// or a file without its index row (re-hashed and re-indexed on open).

import { createHash, randomBytes } from 'node:crypto'
import { existsSync, mkdirSync, rmSync } from 'node:fs'
import { open, rename, unlink } from 'node:fs/promises'
import { join } from 'node:path'
import { systemClock, type Clock } from '../../protocol/clock.js'
import { fsyncDir } from '../../protocol/durable-files.js'
import { CairnError, errorBody, type ErrorCode } from '../../protocol/errors.js'
import type { Logger } from '../../protocol/log.js'
import type { ContentLease, ContentSource } from '../task/executor-port.js'
import { cidFromSha256, HEX_PATTERN } from './cid.js'
import { fetchInto, FetchFailed, type OriginFailure } from './fetch.js'
import { repairIndex, type RepairReport } from './store-files.js'
import { indexStatements, openIndexDb, type IndexDb, type IndexRow } from './index-db.js'
import { Quota } from './quota.js'
import { SharedJobs } from './shared-jobs.js'

export interface ContentStoreOptions {
  /** The cache directory, normally <stateDir>/cache. */
  dir: string
  quotaBytes: number
  /** Largest single object accepted. */
  maxObjectBytes: number
  clock?: Clock
  log?: Logger
  /** Per-origin download limit, ms (default 10 minutes). */
  fetchTimeoutMs?: number
  maxRedirects?: number
  /** Bytes always left free on the filesystem (default 64 MiB). */
  reserveDiskBytes?: number
  /** Free bytes on the cache's filesystem (tests inject a small disk). */
  diskFree?: () => number
}

export interface ObjectInfo {
  sha256: string
  cid: string
  bytes: number
  added: number
  lastAccess: number
  pinned: boolean
  leases: number
}

export type { RepairReport }
export { FetchFailed }

export interface LeaseOptions {
  signal: AbortSignal
  maxBytes?: number
  /** Expected length; any other is CONTENT_MISMATCH. */
  expectBytes?: number
}

const TOUCH_FLUSH_MS = 10_000

/** A finished download: its length, and a lease taken in the same synchronous step that
 * indexed it, so no eviction can slip in before the waiting callers take theirs. */
interface Downloaded {
  bytes: number
  birth: ContentLease
  /** Set by the first waiter to see it: that one takes over `birth` and reports
   * `fetched: true`; the others take their own leases while `birth` still holds. */
  claimed: boolean
}

export class ContentStore implements ContentSource {
  private readonly st
  private readonly leases = new Map<string, number>()
  private readonly downloads = new SharedJobs<Downloaded>()
  /** Temp files being written (downloads and puts): repair must leave them alone. */
  private ingesting = 0
  /** Access times not yet written: a SQLite write per HTTP request would cost more than the request. */
  private readonly touches = new Map<string, number>()
  private lastTouchFlush = 0
  /** Which origin delivered each object this process fetched (bounded; for task receipts). */
  private readonly origins = new Map<string, string>()
  private readonly quota: Quota
  private readonly clock: Clock
  private closed = false

  private constructor(
    private readonly o: ContentStoreOptions,
    readonly db: IndexDb,
  ) {
    this.clock = o.clock ?? systemClock
    this.st = indexStatements(db)
    this.quota = new Quota(o, { st: this.st, leased: sha => (this.leases.get(sha) ?? 0) > 0, drop: sha => this.dropBySha(sha), flush: () => this.flushTouches() })
  }

  /** Opens (creating) the store, deletes interrupted downloads and repairs the index
   * against the files on disk. */
  static async open(o: ContentStoreOptions): Promise<ContentStore> {
    try {
      mkdirSync(join(o.dir, 'objects'), { recursive: true })
      mkdirSync(join(o.dir, 'tmp'), { recursive: true })
    } catch (err) {
      throw new CairnError('STATE_DIR', `${o.dir}: cannot create the cache directory (${(err as Error).message})`, { cause: err })
    }
    const store = new ContentStore(o, openIndexDb(o.dir))
    const report = await store.repair()
    if (report.indexed + report.forgotten + report.deleted + report.temps > 0) o.log?.warn({ ...report }, 'cache index repaired from disk')
    return store
  }

  objectPath(sha256: string): string {
    return join(this.o.dir, 'objects', sha256.slice(0, 2), sha256)
  }

  has(sha256: string): boolean {
    return this.st.get.get(sha256) !== undefined
  }

  stat(sha256: string): ObjectInfo | undefined {
    const row = this.st.get.get(sha256)
    return row ? this.info(row) : undefined
  }

  list(): ObjectInfo[] {
    this.flushTouches()
    return this.st.all.all().map(r => this.info(r))
  }

  usage(): { objects: number; bytes: number; pinnedBytes: number; reservedBytes: number; quotaBytes: number } {
    const t = this.st.total.get()!
    return { objects: t.n, bytes: t.b, pinnedBytes: t.p, reservedBytes: this.quota.reserved, quotaBytes: this.o.quotaBytes }
  }

  leaseLocal(sha256: string): ContentLease | undefined {
    const row = this.st.get.get(sha256)
    if (!row) return undefined
    return this.makeLease(sha256, row.bytes, false)
  }

  /** Makes sure the object is stored (one download however many callers ask at once) and
   * leases it. Origins are tried in order; FetchFailed says how each one failed. */
  async lease(sha256: string, origins: readonly string[], opts: LeaseOptions): Promise<ContentLease> {
    if (!HEX_PATTERN.test(sha256)) throw new CairnError('BAD_REQUEST', `not a lowercase hex sha256: ${sha256.slice(0, 80)}`)
    opts.signal.throwIfAborted()
    const local = this.leaseLocal(sha256)
    if (local) return this.checked(local, opts)
    // The shared download stops only when every caller waiting on it has given up.
    const { result } = this.downloads.join(sha256, signal => this.download(sha256, origins, { ...opts, signal }), opts.signal)
    const got = await result
    // A shared download ran with the first caller's limits: check this caller's.
    if (!got.claimed) {
      got.claimed = true
      return this.checked(got.birth, opts)
    }
    const lease = this.leaseLocal(sha256)
    if (!lease) throw new CairnError('INTERNAL', `${sha256} vanished right after its download`)
    return this.checked(lease, opts)
  }

  /** The lease, unless the object breaks the caller's expected length or size cap. */
  private checked(lease: ContentLease, opts: LeaseOptions): ContentLease {
    const fail = (code: ErrorCode, message: string) => {
      lease.release()
      throw new CairnError(code, message)
    }
    if (opts.expectBytes !== undefined && lease.bytes !== opts.expectBytes) fail('CONTENT_MISMATCH', `${lease.sha256} has ${lease.bytes} bytes, not the ${opts.expectBytes} expected`)
    if (opts.maxBytes !== undefined && lease.bytes > opts.maxBytes) fail('TOO_LARGE', `${lease.sha256} has ${lease.bytes} bytes, more than the ${opts.maxBytes} allowed`)
    return lease
  }

  /** Stores bytes the caller already has (CLI, demo, tests), verified like a download. */
  async put(sha256: string, data: Buffer): Promise<void> {
    const got = createHash('sha256').update(data).digest('hex')
    if (got !== sha256) throw new CairnError('CONTENT_MISMATCH', `sha256 of the ${data.length} bytes is ${got}, not ${sha256}`)
    if (this.has(sha256)) return
    this.quota.checkSize(data.length, this.o.maxObjectBytes)
    this.quota.reserve(data.length)
    try {
      const lease = await this.ingest(sha256, async fh => {
        await fh.write(data)
        await fh.sync()
        return data.length
      })
      lease.release()
    } finally {
      this.quota.reserved -= data.length
    }
  }

  /** The origin URL (after redirects) this process fetched the object from, if it did. */
  origin(sha256: string): string | undefined {
    return this.origins.get(sha256)
  }

  pin(sha256: string, pinned = true): boolean {
    return this.st.pin.run(pinned ? 1 : 0, sha256).changes > 0
  }

  unpin(sha256: string): boolean {
    return this.pin(sha256, false)
  }

  /** Deletes an object unless it is leased; returns whether it was removed. */
  remove(sha256: string): boolean {
    if ((this.leases.get(sha256) ?? 0) > 0) return false
    const row = this.st.get.get(sha256)
    if (!row) return false
    this.drop(row)
    return true
  }

  /** Whether an object of `bytes` (unknown: 0) could be stored now, evicting if need be. */
  admit(bytes: number | undefined, maxBytes = this.o.maxObjectBytes): { ok: true } | { ok: false; code: ErrorCode; message: string } {
    try {
      this.quota.checkSize(bytes ?? 0, maxBytes)
      this.quota.checkDisk(bytes ?? 0)
      this.quota.evictable(bytes ?? 0)
      return { ok: true }
    } catch (err) {
      return { ok: false, ...errorBody(err) }
    }
  }

  /** Evicts least-recently-used unpinned, unleased objects until usage is within the quota. */
  gc(): { evicted: string[] } {
    return { evicted: this.quota.gc() }
  }

  close(): void {
    if (this.closed) return
    this.closed = true
    this.downloads.abortAll(new Error('store closed'))
    this.flushTouches()
    this.db.close()
  }

  /** Reconciles the index with the object files: a file without a row is re-hashed and
   * indexed (or deleted if its bytes do not match its name), a row without a file is
   * dropped, interrupted downloads are deleted. */
  async repair(): Promise<RepairReport> {
    const report = await repairIndex(this.o.dir, this.st, { keepTemps: this.ingesting > 0 || this.downloads.size > 0 })
    this.quota.recount()
    return report
  }

  // ------------------------------------------------------------------ internals

  private info(r: IndexRow): ObjectInfo {
    return {
      sha256: r.sha256,
      cid: cidFromSha256(r.sha256),
      bytes: r.bytes,
      added: r.added,
      lastAccess: Math.max(r.last_access, this.touches.get(r.sha256) ?? 0),
      pinned: r.pinned !== 0,
      leases: this.leases.get(r.sha256) ?? 0,
    }
  }

  private makeLease(sha256: string, bytes: number, fetched: boolean): ContentLease {
    this.leases.set(sha256, (this.leases.get(sha256) ?? 0) + 1)
    this.touch(sha256)
    let released = false
    return {
      sha256,
      path: this.objectPath(sha256),
      bytes,
      fetched,
      release: () => {
        if (released) return
        released = true
        const n = (this.leases.get(sha256) ?? 1) - 1
        if (n <= 0) this.leases.delete(sha256)
        else this.leases.set(sha256, n)
      },
    }
  }

  private touch(sha256: string): void {
    const now = this.clock.now()
    this.touches.set(sha256, now)
    if (now - this.lastTouchFlush >= TOUCH_FLUSH_MS || this.touches.size >= 1000) this.flushTouches()
  }

  private flushTouches(): void {
    this.lastTouchFlush = this.clock.now()
    if (this.touches.size === 0 || (this.closed && !this.db.open)) return
    this.db.transaction(() => {
      for (const [sha, t] of this.touches) this.st.touch.run(t, sha)
    })()
    this.touches.clear()
  }

  private dropBySha(sha256: string): void {
    const row = this.st.get.get(sha256)
    if (row) this.drop(row)
  }

  private drop(row: IndexRow): void {
    // File first: a crash in between leaves a row without a file, which repair drops.
    rmSync(this.objectPath(row.sha256), { force: true })
    this.st.del.run(row.sha256)
    this.touches.delete(row.sha256)
    this.quota.used -= row.bytes
  }

  private async download(sha256: string, origins: readonly string[], opts: LeaseOptions): Promise<Downloaded> {
    if (origins.length === 0) throw new FetchFailed('NOT_FOUND', `${sha256} is not stored and no origin was given`, [])
    const maxBytes = Math.min(opts.maxBytes ?? Infinity, this.o.maxObjectBytes)
    const failures: OriginFailure[] = []
    for (const origin of origins) {
      let held = 0
      const hold = (total: number) => {
        // Grow the reservation in 1 MiB steps as bytes arrive, evicting as needed.
        if (total <= held) return
        const step = Math.max(total - held, opts.expectBytes === undefined ? 1024 * 1024 : 0)
        // A known length was checked against the disk up front; an unknown one, per step.
        if (opts.expectBytes === undefined) this.quota.checkDisk(step)
        this.quota.reserve(step)
        held += step
      }
      try {
        if (opts.expectBytes !== undefined) {
          this.quota.checkSize(opts.expectBytes, maxBytes)
          this.quota.checkDisk(opts.expectBytes)
          hold(opts.expectBytes)
        }
        let from = origin
        const birth = await this.ingest(sha256, fh =>
          fetchInto(origin, fh, sha256, {
            signal: opts.signal,
            maxBytes,
            expectBytes: opts.expectBytes,
            timeoutMs: this.o.fetchTimeoutMs ?? 600_000,
            maxRedirects: this.o.maxRedirects ?? 5,
            onBytes: hold,
          }).then(r => {
            from = r.url
            return r.bytes
          }),
        )
        if (this.origins.size >= 1000) this.origins.delete(this.origins.keys().next().value!)
        this.origins.set(sha256, from)
        // The lease ingest took with the index row: the first waiter takes it over; when
        // every waiter has left, nobody does, and it goes once they all had their turn.
        const d: Downloaded = { bytes: birth.bytes, birth, claimed: false }
        setImmediate(() => d.claimed || birth.release())
        return d
      } catch (err) {
        const { code, message } = errorBody(err)
        failures.push({ origin, code, message })
        this.o.log?.warn({ sha256, origin, code, err: message }, 'cache origin failed')
        if (code === 'NO_SPACE' || opts.signal.aborted || this.closed) break
      } finally {
        this.quota.reserved -= held
      }
    }
    const codes = new Set(failures.map(f => f.code))
    const code: ErrorCode = codes.has('NO_SPACE') ? 'NO_SPACE' : codes.size === 1 ? failures[0]!.code : 'DOWNLOAD'
    throw new FetchFailed(code, `no origin delivered ${sha256}: ${failures.map(f => `${f.origin}: ${f.code} ${f.message}`).join('; ')}`, failures)
  }

  /** Writes through `fill` into a fresh temp file, then moves it into place and indexes it.
   * Returns a lease taken in the same synchronous step as the index row, so nothing can
   * evict the object before the caller has it. */
  private async ingest(sha256: string, fill: (fh: import('node:fs/promises').FileHandle) => Promise<number>): Promise<ContentLease> {
    const tmp = join(this.o.dir, 'tmp', `${sha256}.${randomBytes(6).toString('hex')}.part`)
    this.ingesting++
    try {
      const fh = await open(tmp, 'wx', 0o644)
      let bytes: number
      try {
        bytes = await fill(fh)
        await fh.close()
      } catch (err) {
        await fh.close().catch(() => undefined)
        await unlink(tmp).catch(() => undefined)
        if ((err as NodeJS.ErrnoException).code === 'ENOSPC') throw new CairnError('NO_SPACE', 'disk full', { cause: err })
        throw err
      }
      if (this.closed) {
        await unlink(tmp).catch(() => undefined)
        throw new CairnError('DOWNLOAD', 'cache closed')
      }
      const objects = join(this.o.dir, 'objects')
      const subDir = join(objects, sha256.slice(0, 2))
      if (!existsSync(subDir)) {
        mkdirSync(subDir, { recursive: true })
        // The new directory's own entry must be durable too, or the object is lost with it.
        await fsyncDir(objects, { required: true })
      }
      await rename(tmp, this.objectPath(sha256))
      await fsyncDir(subDir, { required: true })
      if (this.closed) throw new CairnError('DOWNLOAD', 'cache closed')
      // The same object may have landed meanwhile (a put beside a download, a repair):
      // same bytes, one row, counted once.
      const had = this.st.get.get(sha256)
      const now = this.clock.now()
      this.st.put.run(sha256, bytes, had?.added ?? now, now)
      this.quota.used += bytes - (had?.bytes ?? 0)
      return this.makeLease(sha256, bytes, true)
    } finally {
      this.ingesting--
    }
  }
}
