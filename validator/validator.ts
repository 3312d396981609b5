// `cairn validator`: one process of a validator. Every process consumes heartbeats
// (through a shared subscription when the broker has them) into the shared store;
// the one holding the lease also publishes the slot beacons, sends challenges and
// signs the attestations once an epoch is over.

import { randomBytes, randomUUID } from 'node:crypto'
import type { IClientOptions, IPublishPacket, MqttClient } from 'mqtt'
import type { Clock } from '../protocol/clock.js'
import type { Envelope } from '../protocol/envelope.js'
import { signEnvelope } from '../protocol/envelope.js'
import { CairnError, errorBody } from '../protocol/errors.js'
import { newId } from '../protocol/ids.js'
import type { KeyPair } from '../protocol/keys.js'
import type { Logger } from '../protocol/log.js'
import { ensureStateDir } from '../protocol/identity.js'
import { connectMqtt } from '../protocol/mqtt-client.js'
import { validatorTopics } from '../protocol/topics.js'
import { attestEpoch } from './attest.js'
import { asJson, encodeProof, messageHash, ProofType, type ScoreParams } from '../protocol/proof-format.js'
import { EpochTally, type EpochSummary, type IngestResult } from './epoch-tally.js'
import { epochOf, ProofIngest, type BatchResult } from './ingest.js'
import { checkParams, epochBounds } from './score.js'
import { claimInstance, getMeta, holdLease, openValidatorDb, pinParams, releaseInstance, releaseLease, setMeta, type VDb } from './validator-store.js'

export interface ValidatorOptions {
  brokerUrl: string
  mqtt: IClientOptions
  fleet: string
  stateDir: string
  key: KeyPair
  params: ScoreParams
  /** Distinct per process sharing one store; part of the MQTT client id. */
  instance: string
  /** Shared-subscription group, or null for a plain subscription (single process). */
  shareGroup: string | null
  challengesPerEpoch: number
  challengeTimeoutMs: number
  /** Heartbeats, challenges and beacons older than this are deleted (attestations and
   * evidence are kept). An export needs the raw records, so export before then. */
  retentionDays?: number
  clock: Clock
  log: Logger
  random?: () => number
}

export interface ValidatorStats {
  received: number
  heartbeats: number
  duplicates: number
  responses: number
  rejected: number
  /** Storage errors (retried before acknowledging). */
  storeErrors: number
  evidence: number
  beacons: number
  challenges: number
  attestations: number
  leader: boolean
}

const LEASE = 'leader'
/** Largest MQTT packet the validator accepts (MQTT 5 maximum packet size). */
const MAX_PACKET = 65_536
const PRUNE_BATCH = 5000
/** Messages at the store at once (MqttConnectOptions.inFlight); a broker hands out no
 * more than its own in-flight limit anyway (Mosquitto: 20 by default). */
const IN_FLIGHT = 256

export class Validator {
  readonly id: string
  readonly db: VDb
  private client: MqttClient | undefined
  private readonly ingest: ProofIngest
  private readonly topics
  private readonly token = randomUUID()
  private readonly stats: ValidatorStats = {
    received: 0,
    heartbeats: 0,
    duplicates: 0,
    responses: 0,
    rejected: 0,
    storeErrors: 0,
    evidence: 0,
    beacons: 0,
    challenges: 0,
    attestations: 0,
    leader: false,
  }
  private timer: NodeJS.Timeout | undefined
  private stopped = false
  private lastChallengeSlot = -1
  private readonly leaseMs: number
  private attesting = false
  private lastPrune = 0
  private readonly tally = new EpochTally()
  /** Received, not yet stored: the next flush takes them all in one transaction. */
  private pending: Array<{ packet: IPublishPacket; ack: (err?: Error) => void; attempt: number }> = []
  private flushScheduled = false

  constructor(private readonly o: ValidatorOptions) {
    checkParams(o.params)
    this.id = o.key.keyId
    this.topics = validatorTopics(o.fleet, this.id)
    // Made as the agent makes its own: private to the validator's user.
    ensureStateDir(o.stateDir)
    this.db = openValidatorDb(o.stateDir)
    this.leaseMs = Math.max(3000, Math.min(30_000, o.params.slotMs))
    try {
      pinParams(this.db, o.params, this.id, o.fleet)
      claimInstance(this.db, o.instance, this.token, o.clock.now(), this.leaseMs * 2)
    } catch (err) {
      this.db.close()
      throw err
    }
    this.ingest = new ProofIngest({ db: this.db, fleet: o.fleet, key: o.key, params: o.params })
    // The first start never attests epochs from before the validator existed.
    if (getMeta(this.db, 'attested') === undefined) setMeta(this.db, 'attested', String(this.epochOf(o.clock.now()) - 1))
  }

  /** Connects and begins. Resolves once subscribed. */
  async start(): Promise<void> {
    const clientId = `cairn-val-${this.id.slice(0, 16)}-${this.o.instance}`.slice(0, 64)
    const filter = this.o.shareGroup ? `$share/${this.o.shareGroup}/${this.topics.proofFilter}` : this.topics.proofFilter
    const persistent = this.o.shareGroup === null
    const client = connectMqtt({
      url: this.o.brokerUrl,
      base: this.o.mqtt,
      clientId,
      // A single process keeps a persistent session, so heartbeats published while it
      // restarts wait at the broker (mind its queue limits: docs/validator.md). In a
      // share group the session ends with the connection: brokers keep handing an
      // offline member its round-robin share, which would strand heartbeats there
      // while the other processes run. Anything missed is fetched from the device's log.
      clean: !persistent,
      sessionExpiryS: persistent ? 86_400 : 0,
      maximumPacketSize: MAX_PACKET,
      reconnectPeriodMs: 1000,
      resubscribe: false,
      // Every message is acknowledged only once stored (or refused for good), in MQTT 5
      // and 3.1.1 alike: a storage error (the store busy past its timeout) retries,
      // holding the PUBACK.
      beforeAck: (packet, ack) => this.enqueue(packet, ack, 0),
      // read on while storing: what arrives in one turn of the event loop is stored in
      // one transaction (flush), each PUBACK still after its message is stored, in order
      inFlight: IN_FLIGHT,
    })
    this.client = client
    client.on('error', err => this.o.log.warn({ err }, 'broker error'))
    client.on('offline', () => this.o.log.warn('broker connection lost'))
    await new Promise<void>((resolve, reject) => {
      const onFirst = () => {
        client.subscribe(filter, { qos: 1 }, (err, granted) => {
          if (err) return reject(err)
          if (granted?.some(g => g.qos > 2)) return reject(new Error(`broker refused the subscription to ${filter}`))
          resolve()
        })
      }
      client.once('connect', onFirst)
      client.once('error', reject)
    })
    client.on('connect', () => client.subscribe(filter, { qos: 1 }))
    this.o.log.info({ validator: this.id, fleet: this.o.fleet, filter, instance: this.o.instance }, 'validator started')
    this.loop()
  }

  async stop(): Promise<void> {
    if (this.stopped) return
    this.stopped = true
    clearTimeout(this.timer)
    const partial = this.tally.flush()
    if (partial) this.report(partial)
    releaseLease(this.db, LEASE, this.token)
    releaseInstance(this.db, this.o.instance, this.token)
    await new Promise<void>(r => (this.client ? this.client.end(false, {}, () => r()) : r()))
    this.db.close()
  }

  snapshot(): ValidatorStats {
    return { ...this.stats }
  }

  /** Sends a challenge to one device now (the leader also does this at random). */
  challenge(device: string): Envelope {
    const now = this.o.clock.now()
    const env = signEnvelope(this.o.key, {
      type: ProofType.challenge,
      id: newId(now),
      fleet: this.o.fleet,
      sub: device,
      iat: now,
      exp: now + this.o.challengeTimeoutMs,
      body: { nonce: randomBytes(32).toString('hex') },
    })
    this.db.prepare('INSERT INTO challenges (id, device, sent, deadline, payload) VALUES (?, ?, ?, ?, ?)').run(env.id, device, now, env.exp, Buffer.from(JSON.stringify(env)))
    this.publish(this.topics.challenge(device), encodeProof(env), false)
    this.stats.challenges++
    return env
  }

  private enqueue(packet: IPublishPacket, ack: (err?: Error) => void, attempt: number): void {
    if (this.stopped) return // no ack: the broker hands it out again
    this.pending.push({ packet, ack, attempt })
    if (this.flushScheduled) return
    this.flushScheduled = true
    setImmediate(() => this.flush())
  }

  /** Everything queued since the last flush, in one store transaction (ProofIngest.handleBatch
   * judges each message in arrival order, as one after another). */
  private flush(): void {
    this.flushScheduled = false
    const batch = this.pending.splice(0)
    if (this.stopped || batch.length === 0) return
    const payloads = batch.map(b => ({ topic: b.packet.topic, payload: typeof b.packet.payload === 'string' ? Buffer.from(b.packet.payload) : b.packet.payload }))
    const results = this.ingest.handleBatch(payloads, () => this.o.clock.now())
    batch.forEach((b, i) => this.settle(b, this.onResult(b.packet.topic, results[i]!)))
  }

  private settle(b: { packet: IPublishPacket; ack: (err?: Error) => void; attempt: number }, result: IngestResult): void {
    const closed = this.tally.add(this.epochOf(this.o.clock.now()), result, b.attempt === 0)
    if (closed) this.report(closed)
    // QoS 0 carries no promise to keep: nothing to hold back or retry.
    if (result !== 'store-error' || b.packet.qos === 0) return b.ack()
    // Not stored, not refused: try again with backoff; past ~30 s drop the connection
    // without acknowledging, so the broker redelivers it (or another group member gets it).
    if (b.attempt >= 8) {
      this.o.log.error({ topic: b.packet.topic }, 'cannot store a heartbeat; reconnecting without acknowledging it')
      this.client?.stream.destroy()
      return
    }
    setTimeout(() => this.enqueue(b.packet, b.ack, b.attempt + 1), 100 * 2 ** b.attempt)
  }

  /** Counts one message's result; 'store-error' is worth retrying. */
  private onResult(topic: string, res: BatchResult): IngestResult {
    this.stats.received++
    if (res.ok) {
      const out = res.outcome
      if (out.kind === 'heartbeat') {
        if (out.verdict === 'duplicate') this.stats.duplicates++
        else this.stats.heartbeats++
        this.publishEvidence(out.device, out.evidence)
        if (out.fetch) this.fetch(out.device, out.fetch.from, out.fetch.to)
        return out.verdict === 'duplicate' ? 'duplicate' : 'stored'
      }
      if (out.kind === 'response') {
        if (out.recorded) this.stats.responses++
        this.publishEvidence(out.device, out.evidence)
        return 'response'
      }
      return 'ignored'
    }
    const err = res.error
    if (!(err instanceof CairnError)) {
      this.stats.storeErrors++
      this.o.log.warn({ topic, err }, 'store error; will retry')
      return 'store-error'
    }
    this.stats.rejected++
    const { code, message } = errorBody(err)
    this.o.log.debug({ topic, code, err: message }, 'proof message refused')
    return { refused: code }
  }

  /** One line per epoch and process; a warning when proof messages came but no heartbeat
   * was stored (every one refused, or the store failing), since its devices then score 0. */
  private report(s: EpochSummary): void {
    if (s.received > 0 && s.stored === 0) this.o.log.warn({ ...s, instance: this.o.instance }, 'proof messages received but no heartbeat stored this epoch')
    else this.o.log.info({ ...s, instance: this.o.instance }, 'epoch ingest summary')
  }

  private publishEvidence(device: string, evidence: readonly Envelope[]): void {
    for (const ev of evidence) {
      this.stats.evidence++
      this.o.log.warn({ device, kind: (ev.body as { kind: string }).kind, id: ev.id }, 'fraud evidence recorded')
      this.publish(this.topics.evidence, encodeProof(ev), false)
    }
  }

  private fetch(device: string, from: number, to: number): void {
    const now = this.o.clock.now()
    const env = signEnvelope(this.o.key, { type: ProofType.fetch, id: newId(now), fleet: this.o.fleet, sub: device, iat: now, exp: now + 60_000, body: { from, to } })
    this.o.log.info({ device, from, to }, 'asking a device for missing heartbeats')
    this.publish(this.topics.fetch(device), encodeProof(env), false)
  }

  private publish(topic: string, payload: Buffer, retain: boolean): void {
    this.client?.publish(topic, payload, { qos: 1, retain }, err => {
      if (err && !this.stopped) this.o.log.warn({ topic, err }, 'publish failed')
    })
  }

  private epochOf(ms: number): number {
    return epochOf(this.o.params, ms)
  }

  private loop(): void {
    if (this.stopped) return
    try {
      this.tick()
    } catch (err) {
      this.o.log.error({ err }, 'validator maintenance failed')
    }
    // Wake at the next slot boundary, or sooner to keep the lease fresh.
    const now = this.o.clock.now()
    const toSlot = this.o.params.slotMs - (now % this.o.params.slotMs)
    this.timer = setTimeout(() => this.loop(), Math.max(5, Math.min(toSlot + 2, this.leaseMs / 3)))
  }

  /** One round of leader duties; exposed for tests. */
  tick(): void {
    const now = this.o.clock.now()
    const closed = this.tally.roll(this.epochOf(now))
    if (closed) this.report(closed)
    claimInstance(this.db, this.o.instance, this.token, now, this.leaseMs * 2)
    const leader = holdLease(this.db, LEASE, this.token, now, this.leaseMs)
    if (leader !== this.stats.leader) this.o.log.info({ instance: this.o.instance }, leader ? 'this process now leads (beacons, challenges, attestations)' : 'another process leads')
    this.stats.leader = leader
    if (!leader || !this.client?.connected) return
    const slot = Math.floor(now / this.o.params.slotMs)
    this.beacon(slot, now)
    if (slot !== this.lastChallengeSlot) {
      this.lastChallengeSlot = slot
      this.randomChallenges(now)
    }
    this.attestDue(now)
    if (now - this.lastPrune >= 3600_000) {
      this.lastPrune = now
      this.prune(now)
    }
  }

  /** Drops raw records of whole epochs past retention (never of an unattested epoch),
   * in small transactions so ingest is never locked out for long. Exports of pruned
   * epochs are refused from then on (meta `pruned_before_epoch`). */
  prune(now: number): number {
    const p = this.o.params
    const done = Number(getMeta(this.db, 'attested') ?? '-1')
    const cutoffEpoch = Math.min(epochOf(p, now - (this.o.retentionDays ?? 30) * 86_400_000), done + 1)
    const prunedBefore = Number(getMeta(this.db, 'pruned_before_epoch') ?? '0')
    if (cutoffEpoch <= prunedBefore) return 0
    const b = epochBounds(p, cutoffEpoch)
    setMeta(this.db, 'pruned_before_epoch', String(cutoffEpoch))
    const batches = [
      this.db.prepare(`DELETE FROM heartbeats WHERE (device, seq, hash) IN (SELECT device, seq, hash FROM heartbeats WHERE recv < ? LIMIT ${PRUNE_BATCH})`),
      this.db.prepare(`DELETE FROM challenges WHERE id IN (SELECT id FROM challenges WHERE sent < ? LIMIT ${PRUNE_BATCH})`),
    ]
    let n = 0
    for (const st of batches) {
      for (;;) {
        const k = st.run(b.startMs).changes
        n += k
        if (k < PRUNE_BATCH) break
      }
    }
    n += this.db.prepare('DELETE FROM beacons WHERE slot < ?').run(b.firstSlot).changes
    if (n > 0) this.o.log.info({ deleted: n, beforeEpoch: cutoffEpoch }, 'validator store pruned')
    return n
  }

  /** Exactly one beacon per slot: the row is the claim, whoever inserts it publishes. */
  private beacon(slot: number, now: number): void {
    const { slotMs, epochSlots } = this.o.params
    const env = signEnvelope(this.o.key, {
      type: ProofType.beacon,
      id: newId(now),
      fleet: this.o.fleet,
      sub: '*',
      iat: now,
      exp: (slot + 2) * slotMs + this.o.params.maxAgeMs,
      body: asJson({ slot, slotMs, epochSlots, rand: randomBytes(32).toString('hex') }),
    })
    const wire = encodeProof(env)
    const inserted =
      this.db.prepare('INSERT OR IGNORE INTO beacons (slot, hash, published, payload) VALUES (?, ?, ?, ?)').run(slot, messageHash(env), now, Buffer.from(JSON.stringify(env))).changes === 1
    if (!inserted) return
    this.stats.beacons++
    this.publish(this.topics.beacon, wire, true)
  }

  private randomChallenges(now: number): void {
    const p = this.o.params
    if (this.o.challengesPerEpoch <= 0) return
    const chance = Math.min(1, this.o.challengesPerEpoch / p.epochSlots)
    const rand = this.o.random ?? Math.random
    const devices = this.db.prepare('SELECT device FROM devices WHERE last_seen >= ?').all(now - p.slotMs * p.epochSlots) as Array<{ device: string }>
    for (const { device } of devices) if (rand() < chance) this.challenge(device)
  }

  /** Attests every epoch whose window and challenges are over, a chunk at a time. */
  private attestDue(now: number): void {
    if (this.attesting) return
    const p = this.o.params
    const done = Number(getMeta(this.db, 'attested') ?? '-1')
    const next = done + 1
    const b = epochBounds(p, next)
    if (now < b.endMs + p.maxAgeMs + this.o.challengeTimeoutMs + 1000) return
    const devices = (
      this.db.prepare('SELECT device FROM devices WHERE last_seen >= ? AND first_seen < ? ORDER BY device').all(b.startMs - 86_400_000, b.endMs + p.maxAgeMs) as Array<{ device: string }>
    ).map(r => r.device)
    this.attesting = true
    let i = 0
    const step = () => {
      try {
        if (this.stopped) return
        for (const end = Math.min(devices.length, i + 200); i < end; i++) {
          const { env, created } = attestEpoch(this.db, this.o.key, this.o.fleet, p, devices[i]!, next, this.o.clock.now())
          if (!created) continue
          this.stats.attestations++
          this.publish(this.topics.attestation(devices[i]!), encodeProof(env), true)
        }
        if (i < devices.length) {
          setImmediate(step)
          return
        }
        setMeta(this.db, 'attested', String(next))
        this.o.log.info({ epoch: next, devices: devices.length }, 'epoch attested')
      } catch (err) {
        this.o.log.error({ err, epoch: next }, 'attestation failed')
      }
      this.attesting = false
    }
    step()
  }
}
