// Serve receipts: what the cache server sent, per object, aggregated over a period and
// signed by the device key (type `cache.served`, the one envelope of protocol/envelope.ts),
// queued as a must-keep outbox record on cairn/v1/<fleet>/<device>/cache/served.
//
// Counters live in the agent's state.db (not the cache index) so that closing a period
// and queueing its receipt are one transaction: a crash gives either the receipt and
// fresh counters or neither, never a receipt twice. Requests are added in memory and
// written every `flushMs` and on stop, so a crash loses at most that window's counts.
// docs/cache.md specifies the body byte for byte and says what a receipt does not prove.

import { Type, type Static } from '@sinclair/typebox'
import { Value } from '@sinclair/typebox/value'
import { canonicalJson, type Json } from '../../protocol/canonical.js'
import type { Clock } from '../../protocol/clock.js'
import { signEnvelope, verifyEnvelope, type Envelope } from '../../protocol/envelope.js'
import { CairnError } from '../../protocol/errors.js'
import { newId } from '../../protocol/ids.js'
import type { KeyPair } from '../../protocol/keys.js'
import type { Logger } from '../../protocol/log.js'
import { MsgClass, type Outbox } from '../core/outbox.js'
import type { Db } from '../core/state-db.js'
import { cacheServedTopic } from '../../protocol/topics.js'
import type { ServedRecord } from './http-server.js'

const SERVED_TYPE = 'cache.served'
/** A receipt stays valid evidence forever; exp only bounds how long a relay may hold it. */
const SERVED_TTL_MS = 7 * 86_400_000
/** A period closes early when this many distinct objects were served (bounds the payload). */
const MAX_OBJECTS_PER_RECEIPT = 1000

const Hex64 = Type.String({ pattern: '^[0-9a-f]{64}$' })
const Count = Type.Integer({ minimum: 0 })
export const ServedBodySchema = Type.Object(
  {
    seq: Type.Integer({ minimum: 0, description: "this device's receipt number: 0, 1, 2, … with no gaps" }),
    start: Type.Integer({ minimum: 0, description: 'period start, ms since the Unix epoch (inclusive)' }),
    end: Type.Integer({ minimum: 0, description: 'period end, ms since the Unix epoch (exclusive)' }),
    objects: Type.Array(
      Type.Object(
        {
          sha256: Hex64,
          bytes: { ...Count, description: 'body bytes the socket accepted for this object' },
          requests: { ...Count, description: 'responses with a body or a range of it (200, 206; GET and HEAD)' },
          ranges: { ...Count, description: 'of which 206 partial responses' },
        },
        { additionalProperties: false },
      ),
      { maxItems: MAX_OBJECTS_PER_RECEIPT, description: 'sorted by sha256' },
    ),
    totals: Type.Object(
      {
        bytes: Count,
        requests: Count,
        ranges: Count,
        notModified: { ...Count, description: '304 answers (no body)' },
        unsatisfiable: { ...Count, description: '416 answers (no body)' },
      },
      { additionalProperties: false },
    ),
  },
  { additionalProperties: false, $id: 'https://cairn.dev/schemas/cache-served.json', title: 'cache.served body' },
)
export type ServedBody = Static<typeof ServedBodySchema>

type Acc = { bytes: number; requests: number; ranges: number }

export interface ServeReceiptsOptions {
  db: Db
  identity: KeyPair
  fleet: string
  outbox: Outbox
  clock: Clock
  periodS: number
  log?: Logger
  /** Counters reach the database at least this often (default 10 s, never more than the period). */
  flushMs?: number
  onPublished?: (env: Envelope) => void
}

export class ServeReceipts {
  private readonly pending = new Map<string, Acc>()
  private pendingNotModified = 0
  private pendingUnsatisfiable = 0
  private readonly st
  private periodTimer: NodeJS.Timeout | undefined
  private flushTimer: NodeJS.Timeout | undefined
  private readonly topic: string
  private dbCount: number
  private stopped = false

  constructor(private readonly o: ServeReceiptsOptions) {
    const db = o.db
    this.topic = cacheServedTopic(o.fleet, o.identity.keyId)
    this.st = {
      period: db.prepare<[], { seq: number; start: number; not_modified: number; unsatisfiable: number }>('SELECT seq, start, not_modified, unsatisfiable FROM cache_served_period WHERE id = 1'),
      initPeriod: db.prepare<[number]>('INSERT OR IGNORE INTO cache_served_period (id, seq, start, not_modified, unsatisfiable) VALUES (1, 0, ?, 0, 0)'),
      addPeriod: db.prepare<[number, number]>('UPDATE cache_served_period SET not_modified = not_modified + ?, unsatisfiable = unsatisfiable + ? WHERE id = 1'),
      nextPeriod: db.prepare<[number]>('UPDATE cache_served_period SET seq = seq + 1, start = ?, not_modified = 0, unsatisfiable = 0 WHERE id = 1'),
      rollEmpty: db.prepare<[number]>('UPDATE cache_served_period SET start = ? WHERE id = 1'),
      add: db.prepare<[string, number, number, number]>(
        'INSERT INTO cache_served (sha256, bytes, requests, ranges) VALUES (?, ?, ?, ?) ON CONFLICT (sha256) DO UPDATE SET bytes = bytes + excluded.bytes, requests = requests + excluded.requests, ranges = ranges + excluded.ranges',
      ),
      rows: db.prepare<[], { sha256: string } & Acc>('SELECT sha256, bytes, requests, ranges FROM cache_served ORDER BY sha256'),
      count: db.prepare<[], { n: number }>('SELECT COUNT(*) AS n FROM cache_served'),
      clear: db.prepare('DELETE FROM cache_served'),
    }
    this.st.initPeriod.run(o.clock.now())
    this.dbCount = this.st.count.get()!.n
  }

  /** Counts one response (the cache server's onServed). */
  record(r: ServedRecord): void {
    if (r.status === 304) this.pendingNotModified++
    else if (r.status === 416) this.pendingUnsatisfiable++
    else {
      const a = this.pending.get(r.sha256) ?? { bytes: 0, requests: 0, ranges: 0 }
      a.bytes += r.bytes
      a.requests++
      if (r.status === 206) a.ranges++
      this.pending.set(r.sha256, a)
      // dbCount + pending over-counts (an object may be in both); distinct() is exact.
      if (this.pending.size + this.dbCount >= MAX_OBJECTS_PER_RECEIPT) this.guarded('publish', () => this.distinct() >= MAX_OBJECTS_PER_RECEIPT && this.publish())
    }
  }

  start(): void {
    const flushMs = Math.min(this.o.flushMs ?? 10_000, this.o.periodS * 1000)
    this.flushTimer = setInterval(() => this.guarded('flush', () => this.flush()), flushMs)
    this.flushTimer.unref()
    this.schedule()
  }

  /** Runs a timer's or a response's work: a failing database (disk full) is logged and
   * retried later, and never becomes an uncaught exception that takes the agent down.
   * Counts not yet written stay in memory (flush clears them only once committed). */
  private guarded(what: string, fn: () => unknown): void {
    try {
      fn()
    } catch (err) {
      this.o.log?.error({ err }, `cache serve receipts: ${what} failed, retrying later`)
      if (what === 'publish') this.schedule(Math.min(60_000, this.o.periodS * 1000))
    }
  }

  /** Writes the counters and stops the timers; the open period continues after a restart. */
  stop(): void {
    this.stopped = true
    clearInterval(this.flushTimer)
    clearTimeout(this.periodTimer)
    this.flush()
  }

  /** Writes the in-memory counters to the database. */
  flush(): void {
    if (this.pending.size === 0 && this.pendingNotModified === 0 && this.pendingUnsatisfiable === 0) return
    this.o.db.transaction(() => this.flushInTx())()
    this.clearPending()
  }

  /** The open period as it stands (counters written and pending). */
  current(): ServedBody {
    this.flush()
    return this.body(this.o.clock.now())
  }

  /** Closes the open period now: signs and queues its receipt (none when nothing was
   * served, the period just restarts) and starts the next period. */
  publish(): Envelope | undefined {
    const now = this.o.clock.now()
    let env: Envelope | undefined
    this.flush()
    const p = this.st.period.get()!
    if (this.st.count.get()!.n === 0 && p.not_modified === 0 && p.unsatisfiable === 0) {
      this.st.rollEmpty.run(now)
    } else {
      // flush() above emptied `pending`; nothing records in between (all synchronous).
      this.o.outbox.enqueueWith(() => {
        const body = this.body(now)
        env = signEnvelope(this.o.identity, { type: SERVED_TYPE, id: newId(now), fleet: this.o.fleet, sub: '*', iat: now, exp: now + SERVED_TTL_MS, body: body as unknown as Json })
        this.st.clear.run()
        this.st.nextPeriod.run(now)
        this.dbCount = 0
        return { id: env.id, cls: MsgClass.mustKeep, topic: this.topic, payload: Buffer.from(canonicalJson(env), 'utf8') }
      })
      this.o.log?.info({ seq: (env!.body as ServedBody).seq, bytes: (env!.body as ServedBody).totals.bytes }, 'cache serve receipt queued')
      this.o.onPublished?.(env!)
    }
    this.schedule()
    return env
  }

  private distinct(): number {
    this.flush()
    this.dbCount = this.st.count.get()!.n
    return this.dbCount
  }

  private flushInTx(): void {
    for (const [sha, a] of this.pending) this.st.add.run(sha, a.bytes, a.requests, a.ranges)
    this.st.addPeriod.run(this.pendingNotModified, this.pendingUnsatisfiable)
  }

  private clearPending(): void {
    this.pending.clear()
    this.pendingNotModified = 0
    this.pendingUnsatisfiable = 0
  }

  private body(end: number): ServedBody {
    const p = this.st.period.get()!
    const objects = this.st.rows.all().map(r => ({ sha256: r.sha256, bytes: r.bytes, requests: r.requests, ranges: r.ranges }))
    const sum = (k: keyof Acc) => objects.reduce((s, x) => s + x[k], 0)
    return { seq: p.seq, start: p.start, end, objects, totals: { bytes: sum('bytes'), requests: sum('requests'), ranges: sum('ranges'), notModified: p.not_modified, unsatisfiable: p.unsatisfiable } }
  }

  private schedule(retryMs?: number): void {
    clearTimeout(this.periodTimer)
    if (this.stopped) return
    // A period that ended while the agent was down closes at once.
    const due = retryMs ?? Math.max(0, this.st.period.get()!.start + this.o.periodS * 1000 - this.o.clock.now())
    this.periodTimer = setTimeout(() => this.guarded('publish', () => this.publish()), due)
    this.periodTimer.unref()
  }
}

export interface VerifyServedOptions {
  fleet: string
  /** The device id (= its key id) the receipt must be signed by. */
  device: string
  /** Verification time; for an old receipt, pass its iat. Default now. */
  now?: number
}

/** Checks a cache.served receipt (parsed JSON): envelope, device signature, body schema. */
export function verifyServeReceipt(input: unknown, o: VerifyServedOptions): Envelope & { body: ServedBody } {
  const env = verifyEnvelope(input, {
    trusted: (keyId, type) => keyId === o.device && type === SERVED_TYPE,
    fleet: o.fleet,
    sub: '*',
    allowBroadcast: true,
    now: o.now ?? Date.now(),
    maxTtlMs: SERVED_TTL_MS,
    skewMs: 300_000,
    expectType: t => t === SERVED_TYPE,
  })
  if (!Value.Check(ServedBodySchema, env.body)) {
    const first = [...Value.Errors(ServedBodySchema, env.body)][0]
    throw new CairnError('BAD_REQUEST', `cache.served body: ${first ? `${first.path || '/'} ${first.message}` : 'invalid'}`)
  }
  const b = env.body
  if (b.totals.bytes !== b.objects.reduce((s, x) => s + x.bytes, 0)) throw new CairnError('BAD_REQUEST', 'cache.served body: totals.bytes is not the sum of the objects')
  return env as Envelope & { body: ServedBody }
}
