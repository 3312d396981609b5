// The store's byte accounting: bytes stored (`used`), bytes promised to downloads in
// progress (`reserved`), the per-object cap, the filesystem's free space, and which
// least-recently-used objects go to make room. Pinned objects are never candidates
// (the index's `lru` statement skips them); leased ones are skipped here.

import { CairnError } from '../../protocol/errors.js'
import type { Logger } from '../../protocol/log.js'
import { diskFree } from './store-files.js'
import type { indexStatements } from './index-db.js'

export interface QuotaOptions {
  dir: string
  quotaBytes: number
  maxObjectBytes: number
  /** Bytes always left free on the filesystem (default 64 MiB). */
  reserveDiskBytes?: number
  diskFree?: () => number
  log?: Logger
}

export interface QuotaDeps {
  st: ReturnType<typeof indexStatements>
  leased: (sha256: string) => boolean
  /** Deletes one object (file, row) and lowers `used`. */
  drop: (sha256: string) => void
  /** Writes pending access times, so the LRU order is current. */
  flush: () => void
}

export class Quota {
  used: number
  reserved = 0

  constructor(
    private readonly o: QuotaOptions,
    private readonly d: QuotaDeps,
  ) {
    this.used = d.st.total.get()!.b
  }

  recount(): void {
    this.used = this.d.st.total.get()!.b
  }

  checkSize(bytes: number, maxBytes: number): void {
    const cap = Math.min(maxBytes, this.o.maxObjectBytes)
    if (bytes > cap) throw new CairnError('TOO_LARGE', `${bytes} bytes is more than the ${cap} allowed for one object`)
    if (bytes > this.o.quotaBytes) throw new CairnError('NO_SPACE', `${bytes} bytes is more than the whole cache quota (${this.o.quotaBytes})`)
  }

  checkDisk(bytes: number): void {
    const free = this.o.diskFree ? this.o.diskFree() : diskFree(this.o.dir)
    const keep = this.o.reserveDiskBytes ?? 64 * 1024 * 1024
    if (bytes + keep > free) throw new CairnError('NO_SPACE', `disk has ${free} bytes free; ${bytes} more would leave less than ${keep}`)
  }

  /** Which objects would go to make room for `bytes` more; throws NO_SPACE if not enough can. */
  evictable(bytes: number): string[] {
    let need = this.used + this.reserved + bytes - this.o.quotaBytes
    if (need <= 0) return []
    this.d.flush()
    const out: string[] = []
    for (const r of this.d.st.lru.iterate()) {
      if (this.d.leased(r.sha256)) continue
      out.push(r.sha256)
      need -= r.bytes
      if (need <= 0) return out
    }
    throw new CairnError('NO_SPACE', `cache quota ${this.o.quotaBytes} bytes reached and only pinned or leased objects are left (${this.used} used, ${this.reserved} reserved, ${bytes} more wanted)`)
  }

  /** Evicts what `evictable` names and reserves `bytes`; the caller gives them back. */
  reserve(bytes: number): void {
    const victims = this.evictable(bytes)
    for (const sha of victims) this.d.drop(sha)
    if (victims.length > 0) this.o.log?.info({ evicted: victims.length }, 'cache evicted least recently used objects')
    this.reserved += bytes
  }

  /** Evicts least-recently-used unpinned, unleased objects until usage is within the
   * quota; frees what it can even when pins and leases keep usage above it. */
  gc(): string[] {
    this.d.flush()
    const evicted: string[] = []
    for (const r of this.d.st.lru.all()) {
      if (this.used + this.reserved <= this.o.quotaBytes) break
      if (this.d.leased(r.sha256)) continue
      this.d.drop(r.sha256)
      evicted.push(r.sha256)
    }
    return evicted
  }
}
