// What the fleet service takes from its fleet's tree: each device's status (presence,
// identity), telemetry (the numbers it keeps of a sample) and events. None of it is
// signed, so all of it is untrusted: the topic must name the device the payload names,
// the payload is size-capped before it is parsed and checked against the protocol's
// schema, and only then stored. Refusals are counted (RefusalLog), never stored.

import { TypeCompiler } from '@sinclair/typebox/compiler'
import type { Clock } from '../../protocol/clock.js'
import type { Logger } from '../../protocol/log.js'
import { PAYLOAD_SCHEMAS, type EventMessage, type StatusMessage, type TelemetryMessage } from '../../protocol/messages.js'
import { RefusalLog } from '../../protocol/refusal-log.js'
import { TOPIC_ROOT } from '../../protocol/topics.js'
import type { TelemetrySample } from '../../hw/schema.js'
import { PHASE_OF, type FleetStore, type IngestItem, type MetricValues, type PresenceKey } from './fleet-store.js'

const KINDS = ['status', 'telemetry', 'event'] as const
type Kind = (typeof KINDS)[number]

/** Far above what an agent sends (a status with a PEM key is ~1 KiB, a Pi 5 sample ~2 KiB). */
const MAX_BYTES: Record<Kind, number> = { status: 16 * 1024, telemetry: 64 * 1024, event: 16 * 1024 }
/** The largest message the service accepts at all (its MQTT Maximum Packet Size, plus the topic). */
export const MAX_PACKET_BYTES = Math.max(...Object.values(MAX_BYTES)) + 1024

const checks = {
  status: TypeCompiler.Compile(PAYLOAD_SCHEMAS.status!),
  telemetry: TypeCompiler.Compile(PAYLOAD_SCHEMAS.telemetry!),
  event: TypeCompiler.Compile(PAYLOAD_SCHEMAS.event!),
}

/** The subscriptions: the three kinds for every device of the fleet. */
export function ingestFilters(fleet: string): string[] {
  return KINDS.map(k => `${TOPIC_ROOT}/${fleet}/+/${k}`)
}

const SLASH = 0x2f

/** `cairn/v1/<fleet>/<device>/<kind>`, read in place (every message comes through here). */
export function parseTopic(topic: string, fleet: string): { device: string; kind: Kind } | null {
  const start = TOPIC_ROOT.length + fleet.length + 2
  if (!topic.startsWith(TOPIC_ROOT) || !topic.startsWith(fleet, TOPIC_ROOT.length + 1) || fleet.includes('/')) return null
  if (topic.charCodeAt(TOPIC_ROOT.length) !== SLASH || topic.charCodeAt(start - 1) !== SLASH) return null
  const end = topic.indexOf('/', start)
  if (end < 0) return null
  const kind = topic.slice(end + 1)
  return kind === 'status' || kind === 'telemetry' || kind === 'event' ? { device: topic.slice(start, end), kind } : null
}

export interface IngestStats {
  stored: Record<Kind, number>
  refused: number
  transitions: number
}

export type IngestResult = 'stored' | 'refused' | 'ignored'

/** The most messages stored in one transaction. */
const MAX_BATCH = 500
/** Error codes of a store that fails as a whole (SQLite's; a server database's would be
 * added with its store): a batch that meets one is not written message by message. */
const STORE_WIDE = /^SQLITE_(BUSY|LOCKED|FULL|IOERR|READONLY|CANTOPEN|NOMEM|CORRUPT)/

/** One message's tries, across its caller's retries: whether one of them failed. */
export interface Attempt {
  failed: boolean
}

export class FleetIngest {
  readonly stats: IngestStats = { stored: { status: 0, telemetry: 0, event: 0 }, refused: 0, transitions: 0 }
  private readonly refusals: RefusalLog
  /** Checked messages waiting for the next write: all that came in one turn of the event
   * loop go in one transaction (several are in flight: MqttConnectOptions.inFlight). */
  private pending: Array<{ item: IngestItem; seq: number; attempt: Attempt | undefined; resolve: (changed: boolean) => void; reject: (err: Error) => void }> = []
  private failingCount = 0
  private scheduled = false
  private flushing = false
  /** the last message handed to a write, and the last whose write is over */
  private seq = 0
  private writtenSeq = 0
  private drainWaiters: Array<{ seq: number; resolve: () => void }> = []

  constructor(
    private readonly o: {
      store: FleetStore
      fleet: string
      clock: Clock
      log: Logger
      /** Told when a device's presence changed (the live stream). */
      onChange?: (device: string, what: Kind) => void
    },
  ) {
    this.refusals = new RefusalLog(o.log, 'device message')
  }

  /** Stores one message; resolves once it is stored (the caller acknowledges then). A
   * store error rejects: the message is not acknowledged and comes again. */
  async handle(topic: string, payload: Buffer, attempt?: Attempt): Promise<IngestResult> {
    const where = parseTopic(topic, this.o.fleet)
    if (!where) return 'ignored'
    // A retained status that was cleared (an empty payload) is no message about the device.
    if (payload.length === 0) return 'ignored'
    if (payload.length > MAX_BYTES[where.kind]) return this.refuse(topic, 'TOO_LARGE', { bytes: payload.length, max: MAX_BYTES[where.kind] })
    let msg: unknown
    try {
      msg = JSON.parse(payload.toString('utf8'))
    } catch {
      return this.refuse(topic, 'BAD_JSON')
    }
    const check = checks[where.kind]
    if (!check.Check(msg)) {
      const first = check.Errors(msg).First()
      return this.refuse(topic, 'BAD_REQUEST', { path: first?.path, problem: first?.message })
    }
    if ((msg as { device: string }).device !== where.device) return this.refuse(topic, 'WRONG_TARGET', { device: (msg as { device: string }).device.slice(0, 64) })
    const now = this.o.clock.now()
    let item: IngestItem
    if (where.kind === 'status') {
      const s = msg as StatusMessage
      item = {
        kind: 'status',
        record: {
          device: s.device,
          id: s.id,
          state: s.state,
          ...(s.reason !== undefined ? { reason: s.reason } : {}),
          key: presenceKey(s),
          receivedAt: now,
          board: s.board,
          model: s.model,
          version: s.version,
          ...(s.slot !== undefined ? { slot: s.slot } : {}),
          ...(s.os !== undefined ? { osVersion: s.os.version, osSlot: s.os.slot } : {}),
          problems: (s.problems ?? []).map(p => p.code),
        },
      }
    } else if (where.kind === 'telemetry') {
      const m = msg as TelemetryMessage
      const outbox = m.outbox ? { outbox: { queued: m.outbox.queued, bytes: m.outbox.bytes, oldestTs: m.outbox.oldestTs ?? null } } : {}
      const io = m.io ? { io: JSON.stringify(m.io) } : {}
      item = { kind: 'telemetry', record: { device: m.device, id: m.id, ts: m.ts, receivedAt: now, values: metricsOf(m.sample), ...outbox, ...io } }
    } else {
      const e = msg as EventMessage
      // an updater's event: the agent's, or the OS updater's (target: "os", a release of its own)
      const phase = Object.hasOwn(PHASE_OF, e.kind) ? PHASE_OF[e.kind] : undefined
      const version = (e.data as { version?: unknown } | null)?.version
      const target = (e.data as { target?: unknown }).target === 'os' ? ('os' as const) : ('agent' as const)
      const ota = phase ? { ota: { phase, version: typeof version === 'string' ? version.slice(0, 64) : null, target } } : {}
      item = { kind: 'event', record: { device: e.device, id: e.id, ts: e.ts, kind: e.kind, data: JSON.stringify(e.data), ...ota } }
    }
    const changed = await this.write(item, attempt)
    if (changed) this.stats.transitions++
    this.o.onChange?.(where.device, where.kind)
    this.stats.stored[where.kind]++
    return 'stored'
  }

  private refuse(topic: string, code: string, detail: Record<string, unknown> = {}): IngestResult {
    this.stats.refused++
    this.refusals.refused(code, { topic: topic.slice(0, 200), ...detail })
    return 'refused'
  }

  /** Resolves once the item's transaction commits; rejects with its error (the whole
   * batch failed, and each message is retried on its own). */
  private write(item: IngestItem, attempt: Attempt | undefined): Promise<boolean> {
    const written = new Promise<boolean>((resolve, reject) => this.pending.push({ item, seq: ++this.seq, attempt, resolve, reject }))
    if (!this.scheduled && !this.flushing) {
      // else the running flush takes it too
      this.scheduled = true
      setImmediate(this.flushSoon)
    }
    return written
  }
  /** setImmediate's callback, made once. */
  private readonly flushSoon = (): void => void this.flush()

  /** One flush at a time (a store whose writes wait, as a server database's do, must not
   * commit batches out of order), each batch in one transaction; a batch that fails is
   * written again message by message, so one that cannot be stored holds up only itself. */
  private async flush(): Promise<void> {
    this.scheduled = false
    this.flushing = true
    try {
      while (this.pending.length > 0) {
        const batch = this.pending.splice(0, MAX_BATCH)
        try {
          const changed = await this.o.store.ingest(batch.map(b => b.item))
          for (let i = 0; i < batch.length; i++) batch[i]!.resolve(changed[i] ?? false)
        } catch (err) {
          // the store as a whole failing (busy, full, read-only): all of it waits and is
          // tried again; anything else, message by message, to find the one that fails
          const whole = STORE_WIDE.test(String((err as { code?: unknown }).code ?? ''))
          for (const b of batch) {
            try {
              if (whole) throw err
              b.resolve((await this.o.store.ingest([b.item]))[0] ?? false)
            } catch (e) {
              // counted before anyone waiting on drained() is let go
              if (b.attempt && !b.attempt.failed) {
                b.attempt.failed = true
                this.failingCount++
              }
              b.reject(e as Error)
            }
          }
        }
        this.writtenSeq = batch[batch.length - 1]!.seq
        this.drainWaiters = this.drainWaiters.filter(w => (w.seq <= this.writtenSeq ? (w.resolve(), false) : true))
      }
    } finally {
      this.flushing = false
    }
  }

  /** Messages whose write failed and that their callers are trying again (each counted
   * once, through its Attempt, until `recovered`). */
  get failing(): number {
    return this.failingCount
  }

  /** An attempt that failed is stored at last, or given up (the service stopping). */
  recovered(attempt: Attempt): void {
    if (!attempt.failed) return
    attempt.failed = false
    this.failingCount--
  }

  /** Resolves once every message handed to `handle` before this call has been written
   * or has failed (then `failing` counts it until its caller stores it): a message that
   * depends on the registry (a signed receipt or attestation names a device) waits for
   * the statuses that came before it, and for nothing that comes after. */
  drained(): Promise<void> {
    const seq = this.seq
    if (seq <= this.writtenSeq) return Promise.resolve()
    return new Promise(resolve => this.drainWaiters.push({ seq, resolve }))
  }

  close(): void {
    this.refusals.flush()
  }
}

/** (since, conn, offline after online, ts): docs/protocol.md, status. An agent from
 * before `conn` orders by ts within its process. */
export function presenceKey(s: Pick<StatusMessage, 'since' | 'conn' | 'state' | 'ts'>): PresenceKey {
  return [s.since ?? 0, s.conn ?? 0, s.state === 'offline' ? 1 : 0, s.ts]
}

/** The numbers the service keeps of a sample: the hottest zone, the root disk (else the
 * fullest), the sum over interfaces, throttling and under-voltage now as 0/1. */
export function metricsOf(s: TelemetrySample): MetricValues {
  const finite = (n: number | undefined) => (n !== undefined && Number.isFinite(n) ? n : null)
  const disks = s.disk ?? []
  const disk = disks.find(d => d.path === '/') ?? [...disks].sort((a, b) => b.usedPercent - a.usedPercent)[0]
  const temps = (s.thermal ?? []).map(z => z.celsius).filter(Number.isFinite)
  const sum = (xs: Array<number | undefined>) => (xs.some(x => x !== undefined) ? xs.reduce<number>((a, x) => a + (x ?? 0), 0) : null)
  const flag = (b: boolean | undefined) => (b === undefined ? null : b ? 1 : 0)
  return {
    load1: finite(s.load?.[0]),
    cpuPercent: finite(s.cpu?.percent),
    memPercent: finite(s.memory?.usedPercent),
    diskPercent: finite(disk?.usedPercent),
    tempC: temps.length > 0 ? Math.max(...temps) : null,
    rxBps: sum((s.net ?? []).map(n => n.rxBytesPerS)),
    txBps: sum((s.net ?? []).map(n => n.txBytesPerS)),
    throttled: s.throttle ? flag(s.throttle.now.throttled === true || s.throttle.now.armFreqCapped === true || s.throttle.now.softTempLimit === true) : null,
    underVoltage: s.throttle ? flag(s.throttle.now.underVoltage) : null,
    fanRpm: finite(s.fan?.rpm),
    powerW: finite(s.power?.totalWatts),
    gpuPercent: finite(s.gpu?.loadPercent),
  }
}
