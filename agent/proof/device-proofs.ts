// The device side of uptime proofs. Signs a hash-chained heartbeat every period and
// soon after each new genuine validator beacon, answers validator challenges at once,
// and republishes stored heartbeats a validator asks for again.
//
// Crash safety: a heartbeat's row in the log (which is also the chain head) and its
// outbox record are written in one SQLite transaction before the link may publish it.
// After a crash or kill -9 the next heartbeat reads its seq from the log, so two
// different heartbeats with one seq are never signed.

import type { KeyObject } from 'node:crypto'
import { randomInt } from 'node:crypto'
import type { Clock } from '../../protocol/clock.js'
import type { Config } from '../config/config-schema.js'
import { signEnvelope, verifyEnvelope } from '../../protocol/envelope.js'
import { CairnError, errorBody } from '../../protocol/errors.js'
import { newId } from '../../protocol/ids.js'
import { keyIdOf, type KeyPair } from '../../protocol/keys.js'
import type { Logger } from '../../protocol/log.js'
import type { Metrics } from '../core/metrics.js'
import { MsgClass, type Outbox } from '../core/outbox.js'
import type { ReplayGuard } from '../../protocol/replay-guard.js'
import type { Db } from '../core/state-db.js'
import { proofTopics } from '../../protocol/topics.js'
import { asJson, checkBody, checkProof, encodeProof, messageHash, ProofType, telemetryDigest, ZERO_HASH, type BeaconRef, type HeartbeatBody, type ResponseBody } from '../../protocol/proof-format.js'
import { sha256Hex } from '../../protocol/hash.js'

/** Heartbeats stay valid evidence forever; exp only bounds how long a relay may hold one. */
const HEARTBEAT_TTL_MS = 24 * 3600_000
const MAX_FETCH = 1000
const MAX_CHALLENGE_TTL_MS = 10 * 60_000
/** Beacons, challenges and fetch requests are a few hundred bytes. */
const MAX_REQUEST_BYTES = 8192

export interface DeviceProofsOptions {
  db: Db
  identity: KeyPair
  fleet: string
  outbox: Outbox
  clock: Clock
  config: Config['proof']
  /** Trusted validator public keys. */
  validators: readonly KeyObject[]
  replay: ReplayGuard
  skewMs: number
  /** Digest input: the newest telemetry sample, if any. */
  telemetry: () => unknown
  log: Logger
  metrics: Metrics
  onEvent?: (kind: string, data: Record<string, unknown>) => void
  /** Publishes at once (QoS 1) when connected; rejects otherwise. Challenge responses go
   * this way: their round trip is a liveness signal, so it should measure the device and
   * the network, not an fsync of the SD card. They fall back to the outbox. */
  publishNow?: (topic: string, payload: Buffer) => Promise<void>
  random?: (maxExclusive: number) => number
}

export class DeviceProofs {
  private readonly validators: ReadonlySet<string>
  private readonly topics
  private readonly st
  private timer: NodeJS.Timeout | undefined
  private pendingBeat: NodeJS.Timeout | undefined
  private pruneTimer: NodeJS.Timeout | undefined
  private lastBeatAt = 0
  /** After a beacon-triggered heartbeat, the period timer waits this long at least, so it
   * never fires just before the next beacon (two heartbeats in one slot). */
  private beaconGapMs = 0
  private stopped = true

  constructor(private readonly o: DeviceProofsOptions) {
    this.validators = new Set(o.validators.map(k => keyIdOf(k)))
    this.topics = proofTopics(o.fleet, o.identity.keyId)
    this.st = {
      head: o.db.prepare('SELECT seq, hash FROM heartbeats ORDER BY seq DESC LIMIT 1'),
      insert: o.db.prepare('INSERT INTO heartbeats (seq, hash, created, payload) VALUES (?, ?, ?, ?)'),
      range: o.db.prepare('SELECT seq, payload FROM heartbeats WHERE seq BETWEEN ? AND ? ORDER BY seq'),
      prune: o.db.prepare('DELETE FROM heartbeats WHERE created < ? AND seq < (SELECT MAX(seq) FROM heartbeats)'),
      beacons: o.db.prepare('SELECT validator, slot, hash FROM beacons ORDER BY validator'),
      beacon: o.db.prepare('SELECT slot FROM beacons WHERE validator = ?'),
      saveBeacon: o.db.prepare('INSERT INTO beacons (validator, slot, hash, received) VALUES (?, ?, ?, ?) ON CONFLICT (validator) DO UPDATE SET slot = excluded.slot, hash = excluded.hash, received = excluded.received'),
    }
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
    return this.st.head.get() as { seq: number; hash: string } | undefined
  }

  /** Handles an incoming message if it is on one of this part's topics. */
  handle(topic: string, payload: Buffer): boolean {
    try {
      if (payload.length > MAX_REQUEST_BYTES && (topic.startsWith(this.topics.beaconPrefix) || topic === this.topics.challenge || topic === this.topics.fetch)) {
        throw new CairnError('TOO_LARGE', `${payload.length} bytes on ${topic} (at most ${MAX_REQUEST_BYTES})`)
      }
      if (topic.startsWith(this.topics.beaconPrefix)) this.onBeacon(topic.slice(this.topics.beaconPrefix.length), payload)
      else if (topic === this.topics.challenge) this.onChallenge(payload)
      else if (topic === this.topics.fetch) this.onFetch(payload)
      else return false
    } catch (err) {
      const { code, message } = errorBody(err)
      this.o.metrics.inc('cairn_proof_refused_total', { code })
      this.o.log.warn({ topic, code, err: message }, 'proof message refused')
      if (!(err instanceof CairnError)) throw err
    }
    return true
  }

  /** Signs the next heartbeat and queues it; durable before anything is published. */
  beat(): { seq: number; hash: string } {
    const now = this.o.clock.now()
    const tel = this.o.telemetry()
    const beacons = (this.st.beacons.all() as Array<{ validator: string; slot: number; hash: string }>)
      .filter(b => this.validators.has(b.validator))
      .map((b): BeaconRef => ({ v: b.validator, slot: b.slot, h: b.hash }))
    let out: { seq: number; hash: string } | undefined
    this.o.outbox.enqueueWith(() => {
      const head = this.head()
      const body: HeartbeatBody = {
        seq: head ? head.seq + 1 : 0,
        prev: head ? head.hash : ZERO_HASH,
        beacons,
        // Through JSON first: the sample may hold undefined fields, which JCS refuses.
        tel: tel === undefined ? null : telemetryDigest(JSON.parse(JSON.stringify(tel))),
        owner: this.o.config.owner ?? null,
        period: this.o.config.periodS,
      }
      const env = signEnvelope(this.o.identity, { type: ProofType.heartbeat, id: newId(now), fleet: this.o.fleet, sub: '*', iat: now, exp: now + HEARTBEAT_TTL_MS, body: asJson(body) })
      const payload = encodeProof(env)
      const hash = sha256Hex(payload)
      this.st.insert.run(body.seq, hash, now, payload)
      out = { seq: body.seq, hash }
      return { id: env.id, cls: MsgClass.mustKeep, topic: this.topics.proof, payload }
    })
    this.lastBeatAt = now
    this.o.metrics.inc('cairn_heartbeats_total')
    this.o.log.debug({ seq: out!.seq }, 'heartbeat signed')
    return out!
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
      this.o.log.error({ err: (err as Error).message }, 'heartbeat not stored')
      this.o.onEvent?.('proof.failed', { message: (err as Error).message })
    }
    this.schedule(fromBeacon ? Math.max(this.o.config.periodS * 1000, this.beaconGapMs) : this.o.config.periodS * 1000)
  }

  private onBeacon(validatorInTopic: string, payload: Buffer): void {
    if (payload.length === 0) return // a cleared retained beacon
    // Only trusted validators' beacons are read at all: a retained junk message under
    // another id must not cost a parse on every reconnect.
    if (!this.validators.has(validatorInTopic)) throw new CairnError('UNTRUSTED_KEY', 'beacon from a validator this device does not trust')
    const env = checkProof(payload, ProofType.beacon, { fleet: this.o.fleet, signer: k => this.validators.has(k) })
    if (env.iss !== validatorInTopic) throw new CairnError('WRONG_TARGET', 'beacon published under another validator id')
    const known = this.st.beacon.get(env.iss) as { slot: number; slotMs?: number } | undefined
    const now = this.o.clock.now()
    // Old or repeated (a retained copy): ignored, unless the known one lies in the
    // future by this clock (a validator clock that jumped ahead once must not freeze
    // the device's citations until that time comes round).
    const knownInFuture = known !== undefined && known.slot * env.body.slotMs > now + this.o.skewMs
    if (known && known.slot >= env.body.slot && !knownInFuture) return
    if (env.body.slot * env.body.slotMs > now + this.o.skewMs) this.o.log.warn({ slot: env.body.slot }, 'beacon is from the future by this device clock')
    this.st.saveBeacon.run(env.iss, env.body.slot, messageHash(env), now)
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
    this.o.replay.admit(ch.id, ch.exp, now)
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
        this.o.log.error({ err: (err as Error).message }, 'challenge response could not be queued')
      }
    }
    if (this.o.publishNow) this.o.publishNow(this.topics.proof, wire).catch(queueSafely)
    else queue()
    this.o.metrics.inc('cairn_challenges_answered_total')
  }

  private onFetch(payload: Buffer): void {
    const now = this.o.clock.now()
    const req = this.fromValidator(payload, ProofType.fetch, now)
    this.o.replay.admit(req.id, req.exp, now)
    const to = Math.min(req.body.to, req.body.from + MAX_FETCH - 1)
    const rows = this.st.range.all(req.body.from, to) as Array<{ seq: number; payload: Buffer }>
    // One transaction (one fsync) for the lot, not one per heartbeat.
    this.o.outbox.enqueueBatch(rows.map(row => ({ id: newId(now), cls: MsgClass.reply, topic: this.topics.proof, payload: row.payload, expires: req.exp })))
    this.o.log.info({ from: req.body.from, to, sent: rows.length }, 'validator asked for stored heartbeats')
  }

  /** A signed request from a trusted validator to this device: one signature check. */
  private fromValidator<T extends typeof ProofType.challenge | typeof ProofType.fetch>(payload: Buffer, type: T, now: number) {
    let parsed: unknown
    try {
      parsed = JSON.parse(payload.toString())
    } catch {
      throw new CairnError('BAD_JSON', `${type} is not JSON`)
    }
    const env = verifyEnvelope(parsed, {
      trusted: (k, t) => t === type && this.validators.has(k),
      fleet: this.o.fleet,
      sub: this.o.identity.keyId,
      now,
      maxTtlMs: MAX_CHALLENGE_TTL_MS,
      skewMs: this.o.skewMs,
      // A device clock that runs a little fast must not fail every challenge: the
      // validator judges lateness by its own receive time anyway.
      expSkewMs: this.o.skewMs,
      expectType: t => t === type,
    })
    return checkBody(env, type)
  }

  private prune(): void {
    const cutoff = this.o.clock.now() - this.o.config.retentionDays * 86_400_000
    const n = this.st.prune.run(cutoff).changes
    if (n > 0) this.o.log.info({ pruned: n }, 'heartbeat log pruned')
  }
}
