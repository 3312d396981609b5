// The durable outbox: every QoS 1 message waits here until the broker acknowledges it.
// Events, replies and must-keep records are committed to SQLite before they are
// published. Telemetry is held in memory for up to `lazyWriteMs` first: if the broker
// acknowledges it sooner (the normal case online) it never touches the SD card; if not,
// it is written then, or at shutdown. A size cap evicts old telemetry first, then
// events and replies; must-keep records (proofs, receipts) go only after their retention.

import type { Db } from './state-db.js'
import { CairnError } from '../../protocol/errors.js'
import type { Clock } from '../../protocol/clock.js'
import type { PublishProps } from '../../protocol/mqtt-props.js'

export const MsgClass = { telemetry: 0, event: 1, reply: 2, mustKeep: 3 } as const
export type MsgClass = (typeof MsgClass)[keyof typeof MsgClass]
export const CLASS_NAMES = ['telemetry', 'event', 'reply', 'must-keep'] as const

export interface NewMessage {
  id: string
  cls: MsgClass
  topic: string
  payload: Buffer
  props?: PublishProps
  retain?: boolean
  /** ms since epoch after which the message is useless (e.g. a reply to an expired command) */
  expires?: number
}

export interface OutboxRecord extends Required<Omit<NewMessage, 'props' | 'expires'>> {
  seq: number
  created: number
  props?: PublishProps
  expires?: number
}

export interface OutboxOptions {
  clock: Clock
  maxBytes: number
  lazyWriteMs: number
  mustKeepDays: number
  /** Pending acknowledgements are deleted in one transaction this often. */
  ackBatchMs?: number
  onEvict?: (cls: MsgClass, count: number) => void
  /** A write of the outbox's failed; true when the disk is to blame (full, read-only):
   * the outbox then keeps going degraded (agent/core/storage-health.ts). */
  onStorageError?: (err: unknown, what: string) => boolean
}

// A row's cost against the cap: payload, topic and SQLite's per-row overhead.
const ROW_OVERHEAD = 64
const sizeOf = (m: { topic: string; payload: Buffer }) => m.payload.length + m.topic.length + ROW_OVERHEAD

type Row = { seq: number; id: string; cls: number; topic: string; payload: Buffer; props: string | null; retain: number; created: number; expires: number | null }

export class Outbox {
  private readonly mem: OutboxRecord[] = [] // lazy telemetry, ascending seq
  private readonly pendingAcks = new Set<number>()
  private readonly listeners = new Set<() => void>()
  private nextSeq: number
  private dbRows: number
  private bytes: number
  private timer: NodeJS.Timeout | undefined
  private lastAckFlush = 0
  private readonly st

  constructor(
    private readonly db: Db,
    private opts: OutboxOptions,
  ) {
    this.st = {
      insert: db.prepare('INSERT INTO outbox (seq, id, cls, topic, payload, props, retain, created, expires) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)'),
      // RETURNING tells whether a row was there and what it cost against the cap.
      del: db.prepare('DELETE FROM outbox WHERE seq = ? RETURNING LENGTH(payload) + LENGTH(topic) + ' + ROW_OVERHEAD + ' AS size'),
      peek: db.prepare('SELECT * FROM outbox WHERE seq NOT IN (SELECT value FROM json_each(?)) ORDER BY seq LIMIT ?'),
      oldestOfClass: db.prepare('SELECT seq, topic, payload FROM outbox WHERE cls = ? ORDER BY seq LIMIT ?'),
      expired: db.prepare('SELECT seq, topic, payload FROM outbox WHERE (expires IS NOT NULL AND expires <= ?) OR (cls = 3 AND created <= ?)'),
      // By seq, the table's rowid: the first rows of its b-tree, no scan.
      head: db.prepare('SELECT seq, created FROM outbox ORDER BY seq LIMIT ?'),
      stats: db.prepare('SELECT COUNT(*) AS n, COALESCE(SUM(LENGTH(payload) + LENGTH(topic) + ' + ROW_OVERHEAD + '), 0) AS b, COALESCE(MAX(seq), 0) AS m FROM outbox'),
    }
    const s = this.st.stats.get() as { n: number; b: number; m: number }
    this.dbRows = s.n
    this.bytes = s.b
    this.nextSeq = s.m + 1
  }

  /** Replaces the live-tunable limits (set-config). */
  configure(opts: Pick<OutboxOptions, 'maxBytes' | 'lazyWriteMs' | 'mustKeepDays'>): void {
    this.opts = { ...this.opts, ...opts }
    this.enforceCap()
  }

  start(): void {
    if (this.timer) return
    this.timer = setInterval(() => this.tick(), 1000)
    this.timer.unref()
  }

  /** Adds a message. Throws STATE_DIR if a must-keep/event record cannot be stored. */
  enqueue(msg: NewMessage): OutboxRecord {
    const rec = this.record(msg)
    if (rec.cls === MsgClass.telemetry && this.opts.lazyWriteMs > 0) {
      this.mem.push(rec)
      // Bound memory: a long outage flushes in batches of 256 samples.
      if (this.mem.length >= 256) this.flushMemory()
    } else {
      this.writeRows([rec])
    }
    this.added(rec)
    return rec
  }

  /** Adds several durable (non-telemetry) messages in one transaction. */
  enqueueBatch(msgs: readonly NewMessage[]): OutboxRecord[] {
    if (msgs.length === 0) return []
    const recs = msgs.map(m => this.record(m))
    this.writeRows(recs)
    for (const rec of recs) {
      this.bytes += sizeOf(rec)
    }
    this.enforceCap()
    for (const l of this.listeners) l()
    return recs
  }

  /** Runs `make` (which may write its own rows) and stores the message it returns in
   * ONE SQLite transaction, and tells the link only after that commits: nothing reaches
   * the broker that is not durable together with `make`'s rows (a heartbeat and the
   * chain head it advances). */
  enqueueWith(make: () => NewMessage): OutboxRecord {
    let rec: OutboxRecord | undefined
    try {
      this.db.transaction(() => {
        rec = this.record(make())
        this.insertRow(rec)
      })()
    } catch (err) {
      if (err instanceof CairnError) throw err
      this.opts.onStorageError?.(err, 'outbox: store a message')
      const code = (err as { code?: string }).code ?? ''
      throw new CairnError('STATE_DIR', `outbox: cannot store message (${code || (err as Error).message})`, { cause: err })
    }
    this.dbRows++
    this.added(rec!)
    return rec!
  }

  private record(msg: NewMessage): OutboxRecord {
    return {
      seq: this.nextSeq++,
      id: msg.id,
      cls: msg.cls,
      topic: msg.topic,
      payload: msg.payload,
      retain: msg.retain ?? false,
      created: this.opts.clock.now(),
      ...(msg.props ? { props: msg.props } : {}),
      ...(msg.expires !== undefined ? { expires: msg.expires } : {}),
    }
  }

  private added(rec: OutboxRecord): void {
    this.bytes += sizeOf(rec)
    this.enforceCap()
    for (const l of this.listeners) l()
  }

  /** Oldest records not in `skip`, at most `limit`, expired ones dropped. */
  peek(limit: number, skip: ReadonlySet<number>): OutboxRecord[] {
    if (limit <= 0) return []
    const now = this.opts.clock.now()
    const out: OutboxRecord[] = []
    if (this.dbRows > 0) {
      for (const row of this.st.peek.all(JSON.stringify([...skip, ...this.pendingAcks]), limit) as Row[]) out.push(fromRow(row))
    }
    for (const rec of this.mem) {
      if (out.length >= limit * 2) break
      if (!skip.has(rec.seq) && !this.pendingAcks.has(rec.seq)) out.push(rec)
    }
    out.sort((a, b) => a.seq - b.seq)
    const live: OutboxRecord[] = []
    for (const rec of out) {
      if (rec.expires !== undefined && rec.expires <= now) this.ack(rec.seq)
      else if (live.length < limit) live.push(rec)
    }
    return live
  }

  /** The broker has the message: forget it. Deletes are batched. */
  ack(seq: number): void {
    const i = this.memIndex(seq)
    if (i >= 0) {
      const [rec] = this.mem.splice(i, 1)
      this.bytes -= sizeOf(rec!)
      return
    }
    this.pendingAcks.add(seq)
    if (this.pendingAcks.size >= 128) this.guard('delete acknowledged messages', () => this.flushAcks())
  }

  /** Writes everything held in memory and all pending deletes (shutdown, tests, and
   * when the disk has room again). A disk that will not take them is reported, not
   * thrown: the acknowledged rows are deleted later (or sent again after a restart,
   * which consumers de-duplicate by id). */
  flush(): void {
    this.guard('delete acknowledged messages', () => this.flushAcks())
    this.flushMemory()
  }

  depth(): number {
    return this.dbRows - this.pendingAcks.size + this.mem.length
  }

  sizeBytes(): number {
    return this.bytes
  }

  /** When the oldest message still waiting for the broker's acknowledgement was queued
   * (ms), undefined when none waits. Cheap enough for every telemetry sample: the head
   * of the in-memory telemetry and the first rows of the table by seq (its rowid), at
   * most one more than the acknowledgements whose deletes are still batched (normally
   * under 128), never a scan. */
  oldestCreated(): number | undefined {
    let oldest: { seq: number; created: number } | undefined = this.mem[0]
    if (this.dbRows > 0) {
      for (const row of this.st.head.all(this.pendingAcks.size + 1) as Array<{ seq: number; created: number }>) {
        if (this.pendingAcks.has(row.seq)) continue
        if (!oldest || row.seq < oldest.seq) oldest = row
        break
      }
    }
    return oldest?.created
  }

  onEnqueue(listener: () => void): () => void {
    this.listeners.add(listener)
    return () => this.listeners.delete(listener)
  }

  close(): void {
    if (this.timer) clearInterval(this.timer)
    this.timer = undefined
    this.flush()
  }

  private tick(): void {
    const now = this.opts.clock.now()
    if (this.pendingAcks.size > 0 && now - this.lastAckFlush >= (this.opts.ackBatchMs ?? 1000)) this.guard('delete acknowledged messages', () => this.flushAcks())
    const first = this.mem[0]
    if (first && now - first.created >= this.opts.lazyWriteMs) this.flushMemory()
    this.guard('drop expired messages', () => this.dropExpired(now))
  }

  /** Runs a write of the outbox's own (a timer's, an acknowledgement's): a full disk is
   * reported and waited out, never thrown out of a timer or a broker callback. */
  private guard(what: string, fn: () => void): void {
    try {
      fn()
    } catch (err) {
      if (this.opts.onStorageError?.(err, `outbox: ${what}`)) return
      throw err
    }
  }

  private memIndex(seq: number): number {
    // mem is sorted by seq and short: binary search.
    let lo = 0
    let hi = this.mem.length - 1
    while (lo <= hi) {
      const mid = (lo + hi) >> 1
      const s = this.mem[mid]!.seq
      if (s === seq) return mid
      if (s < seq) lo = mid + 1
      else hi = mid - 1
    }
    return -1
  }

  private flushAcks(): void {
    this.lastAckFlush = this.opts.clock.now()
    if (this.pendingAcks.size === 0) return
    const seqs = [...this.pendingAcks]
    // Cleared only once the deletes commit: a failed transaction leaves them pending.
    this.tx(() => {
      for (const seq of seqs) this.deleteRow(seq)
    })
    for (const seq of seqs) this.pendingAcks.delete(seq)
  }

  private deleteRow(seq: number): void {
    const row = this.st.del.get(seq) as { size: number } | undefined
    if (!row) return
    this.dbRows--
    this.bytes -= row.size
  }

  private flushMemory(): void {
    if (this.mem.length === 0) return
    const recs = this.mem.splice(0, this.mem.length)
    try {
      this.writeRows(recs)
    } catch (err) {
      // Telemetry that cannot be stored (disk full) is dropped, not fatal: it is the
      // one class whose loss is acceptable.
      for (const r of recs) this.bytes -= sizeOf(r)
      this.opts.onEvict?.(MsgClass.telemetry, recs.length)
      if (!(err instanceof CairnError)) throw err
    }
  }

  private writeRows(recs: readonly OutboxRecord[]): void {
    try {
      this.tx(() => {
        for (const r of recs) this.insertRow(r)
      })
      this.dbRows += recs.length
    } catch (err) {
      this.opts.onStorageError?.(err, 'outbox: store a message')
      const code = (err as { code?: string }).code ?? ''
      throw new CairnError('STATE_DIR', `outbox: cannot store message (${code || (err as Error).message})`, { cause: err })
    }
  }

  private insertRow(r: OutboxRecord): void {
    this.st.insert.run(r.seq, r.id, r.cls, r.topic, r.payload, r.props ? JSON.stringify(r.props) : null, r.retain ? 1 : 0, r.created, r.expires ?? null)
  }

  private dropExpired(now: number): void {
    if (this.dbRows === 0) return
    const mustKeepCutoff = now - this.opts.mustKeepDays * 86_400_000
    const rows = this.st.expired.all(now, mustKeepCutoff) as Array<{ seq: number; topic: string; payload: Buffer }>
    if (rows.length > 0) this.deleteRows(rows)
  }

  private enforceCap(): void {
    if (this.bytes <= this.opts.maxBytes) return
    // Memory telemetry is the newest; evict stored telemetry (oldest) first.
    for (const cls of [MsgClass.telemetry, MsgClass.event, MsgClass.reply]) {
      let evicted = 0
      while (this.bytes > this.opts.maxBytes) {
        const rows = this.dbRows > 0 ? (this.st.oldestOfClass.all(cls, 64) as Array<{ seq: number; topic: string; payload: Buffer }>) : []
        if (rows.length > 0) {
          const need = this.bytes - this.opts.maxBytes
          let freed = 0
          const take: typeof rows = []
          for (const r of rows) {
            if (freed >= need) break
            take.push(r)
            freed += sizeOf(r)
          }
          try {
            this.deleteRows(take)
          } catch (err) {
            if (this.opts.onStorageError?.(err, 'outbox: evict old messages')) return
            throw err
          }
          evicted += take.length
          continue
        }
        if (cls === MsgClass.telemetry && this.mem.length > 0) {
          const rec = this.mem.shift()!
          this.bytes -= sizeOf(rec)
          evicted++
          continue
        }
        break
      }
      if (evicted > 0) this.opts.onEvict?.(cls, evicted)
      if (this.bytes <= this.opts.maxBytes) return
    }
  }

  private deleteRows(rows: ReadonlyArray<{ seq: number }>): void {
    this.tx(() => {
      for (const r of rows) {
        this.pendingAcks.delete(r.seq)
        this.deleteRow(r.seq)
      }
    })
  }

  private tx(fn: () => void): void {
    this.db.transaction(fn)()
  }
}

function fromRow(row: Row): OutboxRecord {
  return {
    seq: row.seq,
    id: row.id,
    cls: row.cls as MsgClass,
    topic: row.topic,
    payload: row.payload,
    retain: row.retain === 1,
    created: row.created,
    ...(row.props ? { props: JSON.parse(row.props) as PublishProps } : {}),
    ...(row.expires !== null ? { expires: row.expires } : {}),
  }
}
