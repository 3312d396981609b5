// The device side of uptime proofs. Signs a hash-chained heartbeat every period and
// soon after each new genuine validator beacon, answers validator challenges at once,
// and republishes stored heartbeats a validator asks for again. Every message from a
// validator passes the signed-inbound gate (protocol/signed-inbound.ts) first.
//
// The fleet simulator (fleet/sim/) runs this same code for each simulated device, with
// its log in memory (proof-log.ts) and fault hooks that make chosen devices cheat; the
// agent passes no hooks.
//
// Crash safety: a heartbeat's row in the log (which is also the chain head) and its
// outbox record are written in one SQLite transaction before the link may publish it.
// After a crash or kill -9 the next heartbeat reads its seq from the log, so two
// different heartbeats with one seq are never signed.

import type { KeyObject } from 'node:crypto'
import { randomInt } from 'node:crypto'
import type { Clock } from '../../protocol/clock.js'
import type { Config } from '../config/config-schema.js'
import { signEnvelope, type ClockChecks } from '../../protocol/envelope.js'
import { CairnError, errorBody } from '../../protocol/errors.js'
import { newId } from '../../protocol/ids.js'
import { keyIdOf, type KeyPair } from '../../protocol/keys.js'
import type { Logger } from '../../protocol/log.js'
import type { Metrics } from '../core/metrics.js'
import { MsgClass, type NewMessage } from '../core/outbox.js'
import { RefusalLog } from '../../protocol/refusal-log.js'
import type { ReplayStore } from '../../protocol/replay-guard.js'
import { readSignedInbound } from '../../protocol/signed-inbound.js'
import type { Db } from '../core/state-db.js'
import { proofTopics } from '../../protocol/topics.js'
import { asJson, checkBody, encodeProof, messageHash, ProofType, telemetryDigest, ZERO_HASH, type Beacon, type BeaconRef, type HeartbeatBody, type ResponseBody } from '../../protocol/proof-format.js'
import { sqliteProofLog, type ProofLog } from './proof-log.js'
import { sha256Hex } from '../../protocol/hash.js'

/** Heartbeats stay valid evidence forever; exp only bounds how long a relay may hold one. */
const HEARTBEAT_TTL_MS = 24 * 3600_000
const MAX_FETCH = 1000
const MAX_CHALLENGE_TTL_MS = 10 * 60_000
/** Beacons, challenges and fetch requests are a few hundred bytes; larger ones are refused unread. */
export const MAX_PROOF_REQUEST_BYTES = 8192

/** What DeviceProofs needs of the outbox (the agent's Outbox; the simulator's port
 * publishes at once). */
export interface ProofOutbox {
  enqueue(msg: NewMessage): unknown
  enqueueBatch(msgs: readonly NewMessage[]): unknown
  /** `make` runs inside the store's transaction, so the heartbeat log row it writes
   * and the outbox record commit together. */
  enqueueWith(make: () => NewMessage): unknown
}

/** Ways to make a device misbehave, for the fleet simulator's fraud drills
 * (fleet/sim/). The agent passes none, and every hook is skipped. */
export interface ProofFaults {
  /** Rewrites a heartbeat body just before it is signed (a fork, a forged beacon citation). */
  heartbeatBody?(body: HeartbeatBody): HeartbeatBody
  /** Runs once a heartbeat is stored and queued (an equivocating twin, a replayed old heartbeat). */
  afterBeat?(beat: { body: HeartbeatBody; now: number }): void
}

interface DeviceProofsCommon {
  identity: KeyPair
  fleet: string
  outbox: ProofOutbox
  clock: Clock
  config: Pick<Config['proof'], 'periodS' | 'jitterMs' | 'owner' | 'retentionDays'>
  /** Trusted validator public keys. */
  validators: readonly KeyObject[]
  replay: ReplayStore
  skewMs: number
  /** Digest input: the newest telemetry sample, if any. */
  telemetry: () => unknown
  log: Logger
  metrics: Pick<Metrics, 'inc'>
  onEvent?: (kind: string, data: Record<string, unknown>) => void
  /** Publishes at once (QoS 1) when connected; rejects otherwise. Challenge responses go
   * this way: their round trip is a liveness signal, so it should measure the device and
   * the network, not an fsync of the SD card. They fall back to the outbox. */
  publishNow?: (topic: string, payload: Buffer) => Promise<void>
  random?: (maxExclusive: number) => number
  /** Lets a process holding many simulated devices check each distinct beacon once
   * (`verify` is this device's own check); the agent leaves it out. */
  verifyBeacon?: (payload: Buffer, verify: (payload: Buffer) => Beacon) => Beacon
  faults?: ProofFaults
}

/** The log lives in the agent's state file (`db`), or is given (`proofLog`). */
export type DeviceProofsOptions = DeviceProofsCommon & ({ db: Db; proofLog?: undefined } | { proofLog: ProofLog; db?: undefined })

export class DeviceProofs {
  private readonly refusals: RefusalLog
  private readonly validators: ReadonlySet<string>
  private readonly topics
  private readonly st: ProofLog
  private timer: NodeJS.Timeout | undefined
  private pendingBeat: NodeJS.Timeout | undefined
  private pruneTimer: NodeJS.Timeout | undefined
  /** After a beacon-triggered heartbeat, the period timer waits this long at least, so it
   * never fires just before the next beacon (two heartbeats in one slot). */
  private beaconGapMs = 0
  private stopped = true

  constructor(private readonly o: DeviceProofsOptions) {
    this.refusals = new RefusalLog(o.log, 'proof message')
    this.validators = new Set(o.validators.map(k => keyIdOf(k)))
    this.topics = proofTopics(o.fleet, o.identity.keyId)
    this.st = o.proofLog ?? sqliteProofLog(o.db)
  }

  /** MQTT filters this part needs (the link subscribes on every connection). */
  filters(): string[] {
    return [this.topics.beaconFilter, this.topics.challenge, this.topics.fetch]
  }

  start(): void {
    this.stopped = false
    this.schedule(this.o.config.periodS * 1000)
    this.pruneTimer = setInterval(() => this.prune(), 3600_000)
    this.pruneTimer.unref()
    this.prune()
  }

  stop(): void {
    this.stopped = true
    clearTimeout(this.timer)
    clearTimeout(this.pendingBeat)
    clearInterval(this.pruneTimer)
  }

  head(): { seq: number; hash: string } | undefined {
    return this.st.head()
  }

  /** Handles an incoming message if it is on one of this part's topics. */
  handle(topic: string, payload: Buffer): boolean {
    try {
      if (topic.startsWith(this.topics.beaconPrefix)) this.onBeacon(topic.slice(this.topics.beaconPrefix.length), payload)
      else if (topic === this.topics.challenge) this.onChallenge(payload)
      else if (topic === this.topics.fetch) this.onFetch(payload)
      else return false
    } catch (err) {
      const { code, message } = errorBody(err)
      this.o.metrics.inc('cairn_proof_refused_total', { code })
      this.refusals.refused(code, { topic, msg: message })
      if (!(err instanceof CairnError)) throw err
    }
    return true
  }

  /** Signs the next heartbeat and queues it; durable before anything is published. */
  beat(): { seq: number; hash: string } {
    const now = this.o.clock.now()
    const tel = this.o.telemetry()
    const beacons = this.st
      .beacons()
      .filter(b => this.validators.has(b.validator))
      .map((b): BeaconRef => ({ v: b.validator, slot: b.slot, h: b.hash }))
    let out: { seq: number; hash: string; body: HeartbeatBody } | undefined
    this.o.outbox.enqueueWith(() => {
      const head = this.head()
      let body: HeartbeatBody = {
        seq: head ? head.seq + 1 : 0,
        prev: head ? head.hash : ZERO_HASH,
        beacons,
        // Through JSON first: the sample may hold undefined fields, which JCS refuses.
        tel: tel === undefined ? null : telemetryDigest(JSON.parse(JSON.stringify(tel))),
        owner: this.o.config.owner ?? null,
        period: this.o.config.periodS,
      }
      if (this.o.faults?.heartbeatBody) body = this.o.faults.heartbeatBody(body)
      const { id, payload } = this.signHeartbeat(body, now)
      const hash = sha256Hex(payload)
      this.st.append(body.seq, hash, now, payload)
      out = { seq: body.seq, hash, body }
      return { id, cls: MsgClass.mustKeep, topic: this.topics.proof, payload }
    })
    this.o.metrics.inc('cairn_heartbeats_total')
    this.o.log.debug({ seq: out!.seq }, 'heartbeat signed')
    this.o.faults?.afterBeat?.({ body: out!.body, now })
    return { seq: out!.seq, hash: out!.hash }
  }

  /** A heartbeat's wire bytes (canonical JSON, so its hash is SHA-256 of the payload). */
  signHeartbeat(body: HeartbeatBody, now: number): { id: string; payload: Buffer } {
    const env = signEnvelope(this.o.identity, { type: ProofType.heartbeat, id: newId(now), fleet: this.o.fleet, sub: '*', iat: now, exp: now + HEARTBEAT_TTL_MS, body: asJson(body) })
    return { id: env.id, payload: encodeProof(env) }
  }

  private schedule(delayMs: number): void {
    if (this.stopped) return
    clearTimeout(this.timer)
    this.timer = setTimeout(() => this.tick(), delayMs)
  }

  private tick(fromBeacon = false): void {
    clearTimeout(this.pendingBeat)
    this.pendingBeat = undefined
    try {
      this.beat()
    } catch (err) {
      this.o.log.error({ err }, 'heartbeat not stored')
      this.o.onEvent?.('proof.failed', { message: (err as Error).message })
    }
    this.schedule(fromBeacon ? Math.max(this.o.config.periodS * 1000, this.beaconGapMs) : this.o.config.periodS * 1000)
  }

  private onBeacon(validatorInTopic: string, payload: Buffer): void {
    if (payload.length === 0) return // a cleared retained beacon
    // Only trusted validators' beacons are read at all: a retained junk message under
    // another id must not cost a parse on every reconnect.
    if (!this.validators.has(validatorInTopic)) throw new CairnError('UNTRUSTED_KEY', 'beacon from a validator this device does not trust')
    const env = this.o.verifyBeacon ? this.o.verifyBeacon(payload, p => this.readBeacon(p)) : this.readBeacon(payload)
    if (env.iss !== validatorInTopic) throw new CairnError('WRONG_TARGET', 'beacon published under another validator id')
    const known = this.st.beacon(env.iss)
    const now = this.o.clock.now()
    // Old or repeated (a retained copy): ignored, unless the known one lies in the
    // future by this clock (a validator clock that jumped ahead once must not freeze
    // the device's citations until that time comes round).
    const knownInFuture = known !== undefined && known.slot * env.body.slotMs > now + this.o.skewMs
    if (known && known.slot >= env.body.slot && !knownInFuture) return
    if (env.body.slot * env.body.slotMs > now + this.o.skewMs) this.o.log.warn({ slot: env.body.slot }, 'beacon is from the future by this device clock')
    this.st.saveBeacon(env.iss, env.body.slot, messageHash(env), now)
    this.o.metrics.inc('cairn_beacons_total')
    // One heartbeat per new beacon, after a random delay so a fleet does not answer in
    // one burst; beacons of several validators in that window share it.
    if (this.pendingBeat || this.stopped) return
    const jitter = Math.min(this.o.config.jitterMs, Math.floor((env.body.slotMs * 3) / 10))
    const delay = jitter > 0 ? (this.o.random ?? randomInt)(jitter + 1) : 0
    // The next beacon-triggered heartbeat comes at most a slot plus the jitter later.
    this.beaconGapMs = env.body.slotMs + jitter + Math.ceil(env.body.slotMs / 10)
    this.pendingBeat = setTimeout(() => this.tick(true), delay)
  }

  private onChallenge(payload: Buffer): void {
    const now = this.o.clock.now()
    const ch = this.fromValidator(payload, ProofType.challenge, now)
    const head = this.head()
    const body: ResponseBody = { challenge: ch.id, ch: messageHash(ch), nonce: ch.body.nonce, seq: head?.seq ?? null, head: head?.hash ?? null }
    // Expires with the challenge, or a moment from now when this clock already sees
    // the challenge expired (a fast clock within the skew bound).
    const exp = Math.max(ch.exp, now + 1000)
    const env = signEnvelope(this.o.identity, { type: ProofType.response, id: newId(now), fleet: this.o.fleet, sub: ch.iss, iat: now, exp, body: asJson(body) })
    const wire = encodeProof(env)
    const queue = () => this.o.outbox.enqueue({ id: env.id, cls: MsgClass.reply, topic: this.topics.proof, payload: wire, expires: exp })
    const queueSafely = () => {
      try {
        queue()
      } catch (err) {
        this.o.log.error({ err }, 'challenge response could not be queued')
      }
    }
    if (this.o.publishNow) this.o.publishNow(this.topics.proof, wire).catch(queueSafely)
    else queue()
    // After the answer is on its way (answering twice is harmless; never answering a
    // redelivered challenge because its id was taken first is not).
    this.o.replay.admit(ch.id, ch.exp, now)
    this.o.metrics.inc('cairn_challenges_answered_total')
  }

  private onFetch(payload: Buffer): void {
    const now = this.o.clock.now()
    const req = this.fromValidator(payload, ProofType.fetch, now)
    const to = Math.min(req.body.to, req.body.from + MAX_FETCH - 1)
    const rows = this.st.range(req.body.from, to)
    // One transaction (one fsync) for the lot, not one per heartbeat.
    this.o.outbox.enqueueBatch(rows.map(row => ({ id: newId(now), cls: MsgClass.reply, topic: this.topics.proof, payload: row.payload, expires: req.exp })))
    this.o.replay.admit(req.id, req.exp, now)
    this.o.log.info({ from: req.body.from, to, sent: rows.length }, 'validator asked for stored heartbeats')
  }

  /** A beacon of a trusted validator: no clock checks (a beacon is judged by its slot,
   * above) and no replay store (an old or repeated one is simply not newer). */
  private readBeacon(payload: Buffer): Beacon {
    return this.read(payload, ProofType.beacon, { sub: null, clock: null })
  }

  /** A signed request from a trusted validator to this device; one seen before is a
   * REPLAY (the caller admits its id once it has answered). */
  private fromValidator<T extends typeof ProofType.challenge | typeof ProofType.fetch>(payload: Buffer, type: T, now: number) {
    return this.read(payload, type, {
      sub: this.o.identity.keyId,
      // A device clock that runs a little fast must not fail every challenge: the
      // validator judges lateness by its own receive time anyway.
      clock: { now, maxTtlMs: MAX_CHALLENGE_TTL_MS, skewMs: this.o.skewMs, expSkewMs: this.o.skewMs },
      replay: this.o.replay,
    })
  }

  /** The signed-inbound gate for a message a trusted validator of this fleet signed. */
  private read<T extends ProofType>(payload: Buffer, type: T, target: { sub: string | null } & ({ clock: null } | { clock: ClockChecks; replay: ReplayStore })): ReturnType<typeof checkBody<T>> {
    const r = readSignedInbound(payload, {
      what: type,
      maxBytes: MAX_PROOF_REQUEST_BYTES,
      fleet: this.o.fleet,
      trusted: k => this.validators.has(k),
      expectType: t => t === type,
      body: env => checkBody(env, type),
      ...target,
    })
    if (!r.ok) throw r.error
    return r.env as ReturnType<typeof checkBody<T>>
  }

  private prune(): void {
    const cutoff = this.o.clock.now() - this.o.config.retentionDays * 86_400_000
    try {
      const n = this.st.prune(cutoff)
      if (n > 0) this.o.log.info({ pruned: n }, 'heartbeat log pruned')
    } catch (err) {
      // A full disk: the old rows wait for the next hour.
      this.o.log.warn({ err }, 'heartbeat log not pruned')
    }
  }
}
