// `cairn sim`: many simulated devices in one process, for load tests and fraud drills.
// Each device has its own ed25519 key, its own MQTT connection (clean session, QoS 1)
// and its own heartbeat chain, and signs real heartbeats with the agent's own format
// code (format.ts, envelope.ts), on the agent's schedule (device-proofs.ts): one soon
// after each new genuine beacon, one per period when no beacon came. Only the storage
// differs: the chain lives in memory, not SQLite. Chosen devices can misbehave
// (equivocate, fork, replay, forge beacons, run a wrong clock, drop offline) so the
// validator's fraud checks can be exercised against real traffic.

import { createPrivateKey, createPublicKey, generateKeyPairSync, randomBytes } from 'node:crypto'
import { Value } from '@sinclair/typebox/value'
import mqtt, { type IClientOptions, type MqttClient } from 'mqtt'
import { systemClock, type Clock } from '../../protocol/clock.js'
import { signEnvelope, verifyEnvelope } from '../../protocol/envelope.js'
import { noDelay } from '../../agent/core/mqtt-link.js'
import { errorBody } from '../../protocol/errors.js'
import { newId } from '../../protocol/ids.js'
import { base32Encode } from '../../protocol/base32.js'
import type { KeyPair } from '../../protocol/keys.js'
import type { Logger } from '../../protocol/log.js'
import { proofTopics } from '../../protocol/topics.js'
import {
  asJson,
  ChallengeBodySchema,
  checkProof,
  encodeProof,
  FetchBodySchema,
  messageHash,
  ProofType,
  telemetryDigest,
  ZERO_HASH,
  type BeaconRef,
  type HeartbeatBody,
  type ResponseBody,
} from '../../protocol/proof-format.js'
import { sha256Hex } from '../../protocol/hash.js'

// The same limits as device-proofs.ts, so a sim device refuses what an agent refuses.
const HEARTBEAT_TTL_MS = 24 * 3600_000
const MAX_FETCH = 1000
const MAX_CHALLENGE_TTL_MS = 10 * 60_000
/** Heartbeats kept per device for fetch requests and replays (memory, not a log). */
const RING = 8

export const MisbehaviourKinds = ['equivocate', 'replay', 'clock', 'offline', 'fork', 'forge-beacon'] as const
export type MisbehaviourKind = (typeof MisbehaviourKinds)[number]

export interface Misbehaviour {
  kind: MisbehaviourKind
  /** A fraction of the devices (0 < f <= 1, at least one device) or one device index. */
  who: { fraction: number } | { index: number }
  /** equivocate, fork, forge-beacon, replay: act on heartbeat seq 1 and every `arg`-th
   * after it (default 5). clock: offset in seconds. offline: seconds offline. */
  arg?: number
  /** offline: seconds after the first connection (default: random within two periods). */
  at?: number
}

interface Faults {
  equivocate?: number
  fork?: number
  forge?: number
  replay?: number
  clockMs: number
  offline?: { ms: number; atMs: number | undefined }
}

export interface SimOptions {
  devices: number
  brokerUrl: string
  fleet: string
  /** Trusted validator key ids. */
  validators: readonly string[]
  /** Connection options (protocol version, credentials, TLS); id and session are the sim's. */
  mqtt?: IClientOptions
  periodS?: number
  /** New connections per second. */
  rampPerS?: number
  /** Longest delay between a new beacon and the heartbeat citing it (capped at 0.3 slot, as in the agent). */
  jitterMs?: number
  /** Tolerated clock difference for challenges issued "in the future" (the agent's commands.skewS). */
  skewMs?: number
  owner?: string | null
  keepaliveS?: number
  misbehave?: readonly Misbehaviour[]
  clock?: Clock
  random?: () => number
  log?: Logger
  /** Called once with an error that stops the ramp (EMFILE: out of file descriptors). */
  onFatal?: (err: Error) => void
}

export interface DeviceCounts {
  connects: number
  beacons: number
  /** Heartbeats signed and published (an equivocation's twin included, replays not). */
  heartbeats: number
  /** Of those, acknowledged by the broker (PUBACK). */
  acked: number
  failed: number
  equivocations: number
  forks: number
  forgedBeacons: number
  replays: number
  fetched: number
  /** Challenge responses acknowledged by the broker. */
  challenges: number
  refused: number
}

export interface SimDeviceStats extends DeviceCounts {
  index: number
  id: string
  faults: string[]
  connected: boolean
}

export interface SimStats {
  devices: number
  started: number
  connected: number
  everConnected: number
  offline: number
  /** Distinct beacon payloads this process checked (each once, shared by all devices). */
  beaconsVerified: number
  totals: DeviceCounts
  refusedByCode: Record<string, number>
  perDevice?: SimDeviceStats[]
}

export interface Sim {
  readonly devices: readonly SimDevice[]
  /** Resolves once every device has connected at least once. */
  readonly ready: Promise<void>
  stats(opts?: { perDevice?: boolean }): SimStats
  /** Stops timers, waits (bounded) for in-flight acknowledgements, disconnects. */
  stop(): Promise<SimStats>
}

type BeaconCheck = { ok: true; iss: string; slot: number; slotMs: number; hash: string } | { ok: false; code: string }

/** Checks each distinct beacon payload once per process. Every simulated device still
 * receives each beacon on its own connection and keeps its own newest slot per
 * validator; only the JSON parse and the ed25519 verification, identical for all
 * devices of a process, are shared. A real fleet pays that once per device, so the
 * sim's CPU is not N times an agent's. */
class BeaconCache {
  verified = 0
  private readonly seen = new Map<string, BeaconCheck>()
  constructor(
    private readonly fleet: string,
    private readonly validators: ReadonlySet<string>,
  ) {}

  check(payload: Buffer): BeaconCheck {
    const key = sha256Hex(payload)
    const hit = this.seen.get(key)
    if (hit) return hit
    let r: BeaconCheck
    try {
      const env = checkProof(payload, ProofType.beacon, { fleet: this.fleet, signer: k => this.validators.has(k) })
      r = { ok: true, iss: env.iss, slot: env.body.slot, slotMs: env.body.slotMs, hash: messageHash(env) }
    } catch (err) {
      r = { ok: false, code: errorBody(err).code }
    }
    this.verified++
    if (this.seen.size >= 256) this.seen.delete(this.seen.keys().next().value!)
    this.seen.set(key, r)
    return r
  }
}

interface Shared {
  o: Required<Pick<SimOptions, 'brokerUrl' | 'fleet' | 'periodS' | 'jitterMs' | 'skewMs' | 'keepaliveS'>> & { owner: string | null; mqtt: IClientOptions }
  validators: ReadonlySet<string>
  beacons: BeaconCache
  clock: Clock
  random: () => number
  refused: Map<string, number>
  fatal(err: Error): void
  firstConnect(): void
}

export class SimDevice {
  readonly key: KeyPair
  readonly id: string
  readonly counts: DeviceCounts = { connects: 0, beacons: 0, heartbeats: 0, acked: 0, failed: 0, equivocations: 0, forks: 0, forgedBeacons: 0, replays: 0, fetched: 0, challenges: 0, refused: 0 }
  connected = false
  offline = false
  private client: MqttClient | undefined
  private readonly topics
  private head: { seq: number; hash: string } | undefined
  private readonly beacons = new Map<string, BeaconRef>()
  private readonly ring: Array<{ seq: number; payload: Buffer }> = []
  private readonly answered = new Map<string, number>()
  private timer: NodeJS.Timeout | undefined
  private pendingBeat: NodeJS.Timeout | undefined
  private offlineTimer: NodeJS.Timeout | undefined
  private stopped = true
  private everConnected = false

  constructor(
    readonly index: number,
    private readonly faults: Faults,
    private readonly s: Shared,
  ) {
    this.key = newDeviceKey()
    this.id = this.key.keyId
    this.topics = proofTopics(s.o.fleet, this.id)
  }

  faultNames(): string[] {
    const f = this.faults
    const out: string[] = []
    if (f.equivocate) out.push(`equivocate/${f.equivocate}`)
    if (f.fork) out.push(`fork/${f.fork}`)
    if (f.forge) out.push(`forge-beacon/${f.forge}`)
    if (f.replay) out.push(`replay/${f.replay}`)
    if (f.clockMs) out.push(`clock${f.clockMs > 0 ? '+' : ''}${f.clockMs / 1000}s`)
    if (f.offline) out.push(`offline/${f.offline.ms / 1000}s`)
    return out
  }

  /** The device's own clock (a `clock` fault makes it wrong). */
  now(): number {
    return this.s.clock.now() + this.faults.clockMs
  }

  start(): void {
    this.stopped = false
    this.connect()
    this.schedule(this.s.o.periodS * 1000)
  }

  async stop(graceMs = 10_000): Promise<void> {
    this.stopped = true
    this.clearTimers()
    clearTimeout(this.offlineTimer)
    await this.disconnect(graceMs)
  }

  private connect(): void {
    const o = this.s.o
    const client = mqtt.connect(o.brokerUrl, {
      ...o.mqtt,
      clientId: `cairn-sim-${this.id.slice(0, 20)}`,
      clean: true,
      keepalive: o.keepaliveS,
      // Spread reconnects so a broker restart is not met by every device at once.
      reconnectPeriod: 1000 + Math.floor(this.s.random() * 4000),
      connectTimeout: 30_000,
      resubscribe: false,
    })
    this.client = client
    client.on('connect', () => {
      noDelay(client)
      // mqtt.js can complete a reconnect already under way after end() (seen after
      // EMFILE); a connection this device no longer owns is closed at once.
      if (this.client !== client) return void client.end(true)
      this.connected = true
      this.counts.connects++
      client.subscribe([this.topics.beaconFilter, this.topics.challenge, this.topics.fetch], { qos: 1 })
      if (!this.everConnected) {
        this.everConnected = true
        this.s.firstConnect()
        this.planOffline()
      }
    })
    client.on('close', () => (this.connected = false))
    client.on('error', err => {
      if ((err as NodeJS.ErrnoException).code === 'EMFILE') this.s.fatal(err)
      else this.refuse(`mqtt:${(err as NodeJS.ErrnoException).code ?? 'error'}`)
    })
    client.on('message', (topic, payload) => this.onMessage(topic, payload))
  }

  private disconnect(graceMs: number): Promise<void> {
    const c = this.client
    this.client = undefined
    this.connected = false
    if (!c) return Promise.resolve()
    return new Promise<void>(resolve => {
      // end(false) waits for in-flight publishes, which only a live connection can
      // finish; a dead broker must not hang stop().
      if (!c.connected) return void c.end(true, {}, () => resolve())
      const force = setTimeout(() => c.end(true, {}, () => resolve()), graceMs)
      c.end(false, {}, () => {
        clearTimeout(force)
        resolve()
      })
    })
  }

  private clearTimers(): void {
    clearTimeout(this.timer)
    clearTimeout(this.pendingBeat)
    this.pendingBeat = undefined
  }

  private planOffline(): void {
    const off = this.faults.offline
    if (!off) return
    const at = off.atMs ?? Math.floor(this.s.random() * 2 * this.s.o.periodS * 1000)
    this.offlineTimer = setTimeout(() => {
      if (this.stopped) return
      this.offline = true
      this.clearTimers()
      void this.disconnect(1000)
      this.offlineTimer = setTimeout(() => {
        if (this.stopped) return
        this.offline = false
        this.connect()
        this.schedule(this.s.o.periodS * 1000)
      }, off.ms)
    }, at)
  }

  private refuse(code: string): void {
    this.counts.refused++
    this.s.refused.set(code, (this.s.refused.get(code) ?? 0) + 1)
  }

  private onMessage(topic: string, payload: Buffer): void {
    try {
      if (topic.startsWith(this.topics.beaconPrefix)) this.onBeacon(topic.slice(this.topics.beaconPrefix.length), payload)
      else if (topic === this.topics.challenge) this.onChallenge(payload)
      else if (topic === this.topics.fetch) this.onFetch(payload)
    } catch (err) {
      this.refuse(errorBody(err).code)
    }
  }

  // ------------------------------------------------------------ heartbeats

  private schedule(delayMs: number): void {
    if (this.stopped || this.offline) return
    clearTimeout(this.timer)
    this.timer = setTimeout(() => this.tick(), delayMs)
  }

  private tick(): void {
    clearTimeout(this.pendingBeat)
    this.pendingBeat = undefined
    this.beat()
    this.schedule(this.s.o.periodS * 1000)
  }

  private onBeacon(validatorInTopic: string, payload: Buffer): void {
    if (payload.length === 0) return
    const b = this.s.beacons.check(payload)
    if (!b.ok) return this.refuse(b.code)
    if (b.iss !== validatorInTopic) return this.refuse('WRONG_TARGET')
    const known = this.beacons.get(b.iss)
    if (known && known.slot >= b.slot) return
    this.beacons.set(b.iss, { v: b.iss, slot: b.slot, h: b.hash })
    this.counts.beacons++
    if (this.pendingBeat || this.stopped || this.offline) return
    const jitter = Math.min(this.s.o.jitterMs, Math.floor((b.slotMs * 3) / 10))
    this.pendingBeat = setTimeout(() => this.tick(), Math.floor(this.s.random() * (jitter + 1)))
  }

  /** Signs and publishes the next heartbeat, misbehaving where this device's faults say. */
  beat(): void {
    const now = this.now()
    const f = this.faults
    const seq = this.head ? this.head.seq + 1 : 0
    const due = (every: number | undefined) => every !== undefined && seq >= 1 && (seq - 1) % every === 0
    const beacons = [...this.beacons.values()].filter(b => this.s.validators.has(b.v)).sort((a, b) => (a.v < b.v ? -1 : 1))
    if (due(f.forge) && beacons[0]) {
      beacons[0] = { ...beacons[0], h: randomHex() }
      this.counts.forgedBeacons++
    }
    const forked = due(f.fork)
    if (forked) this.counts.forks++
    const body: HeartbeatBody = {
      seq,
      prev: forked ? randomHex() : (this.head?.hash ?? ZERO_HASH),
      beacons,
      tel: telemetryDigest({ ts: now, load: Math.round(this.s.random() * 1000) / 1000 }),
      owner: this.s.o.owner,
      period: this.s.o.periodS,
    }
    const payload = this.signHeartbeat(body, now)
    this.head = { seq, hash: sha256Hex(payload) }
    this.publishHeartbeat(payload)
    if (due(f.equivocate)) {
      // Same seq and prev, different content: two statements for one link of the chain.
      this.publishHeartbeat(this.signHeartbeat({ ...body, tel: randomHex() }, now))
      this.counts.equivocations++
    }
    if (due(f.replay) && this.ring.length >= 2) {
      this.publish(this.ring[0]!.payload, () => undefined)
      this.counts.replays++
    }
    this.ring.push({ seq, payload })
    if (this.ring.length > RING) this.ring.shift()
  }

  private signHeartbeat(body: HeartbeatBody, now: number): Buffer {
    const env = signEnvelope(this.key, { type: ProofType.heartbeat, id: newId(now), fleet: this.s.o.fleet, sub: '*', iat: now, exp: now + HEARTBEAT_TTL_MS, body: asJson(body) })
    return encodeProof(env)
  }

  private publishHeartbeat(payload: Buffer): void {
    this.counts.heartbeats++
    this.publish(payload, ok => (ok ? this.counts.acked++ : this.counts.failed++))
  }

  private publish(payload: Buffer, done: (ok: boolean) => void): void {
    const c = this.client
    if (!c) return done(false)
    c.publish(this.topics.proof, payload, { qos: 1 }, err => done(!err))
  }

  // ------------------------------------------------------------ validator requests

  /** The agent's checks (device-proofs.ts): signed by a trusted validator, for this
   * device, fresh by this device's clock, not seen before. */
  private admit(payload: Buffer, type: typeof ProofType.challenge | typeof ProofType.fetch) {
    const now = this.now()
    let parsed: unknown
    try {
      parsed = JSON.parse(payload.toString())
    } catch {
      return this.refuse('BAD_JSON')
    }
    const env = verifyEnvelope(parsed, {
      trusted: (k, t) => t === type && this.s.validators.has(k),
      fleet: this.s.o.fleet,
      sub: this.id,
      now,
      maxTtlMs: MAX_CHALLENGE_TTL_MS,
      skewMs: this.s.o.skewMs,
      expectType: t => t === type,
    })
    if (this.answered.has(env.id)) return this.refuse('REPLAY')
    for (const [id, exp] of this.answered) if (exp <= now) this.answered.delete(id)
    this.answered.set(env.id, env.exp)
    return { env, now }
  }

  private onChallenge(payload: Buffer): void {
    const a = this.admit(payload, ProofType.challenge)
    if (!a) return
    const { env, now } = a
    if (!Value.Check(ChallengeBodySchema, env.body)) return this.refuse('BAD_REQUEST')
    const body: ResponseBody = { challenge: env.id, ch: messageHash(env), nonce: env.body.nonce, seq: this.head?.seq ?? null, head: this.head?.hash ?? null }
    const resp = signEnvelope(this.key, { type: ProofType.response, id: newId(now), fleet: this.s.o.fleet, sub: env.iss, iat: now, exp: env.exp, body: asJson(body) })
    this.publish(encodeProof(resp), ok => ok && this.counts.challenges++)
  }

  private onFetch(payload: Buffer): void {
    const a = this.admit(payload, ProofType.fetch)
    if (!a) return
    if (!Value.Check(FetchBodySchema, a.env.body)) return this.refuse('BAD_REQUEST')
    const { from } = a.env.body
    const to = Math.min(a.env.body.to, from + MAX_FETCH - 1)
    for (const r of this.ring) {
      if (r.seq < from || r.seq > to) continue
      this.publish(r.payload, () => undefined)
      this.counts.fetched++
    }
  }
}

/** A fresh ed25519 key pair, made from DER rather than with keys.ts's generateKeyPair.
 * Node 20.20 deadlocked here (seen with gdb: the main thread in ExportJWKEdKey holding
 * the key's mutex, a GC in it running ~KeyGenJob, which locks the same mutex) in about
 * one of eight processes making 5,000 keys: a JWK export of a KeyObject that still
 * shares its key with the generating job. DER output and fresh KeyObjects share nothing
 * with the job, and the key id comes straight from the SPKI bytes. */
function newDeviceKey(): KeyPair {
  const { publicKey: spki, privateKey: pkcs8 } = generateKeyPairSync('ed25519', { publicKeyEncoding: { type: 'spki', format: 'der' }, privateKeyEncoding: { type: 'pkcs8', format: 'der' } })
  // An ed25519 SPKI is a fixed 12-byte header and the 32-byte raw public key.
  return { privateKey: createPrivateKey({ key: pkcs8, format: 'der', type: 'pkcs8' }), publicKey: createPublicKey({ key: spki, format: 'der', type: 'spki' }), keyId: base32Encode(spki.subarray(12)) }
}

function randomHex(): string {
  return randomBytes(32).toString('hex')
}

/** Which devices get which faults: an index names one; a fraction picks that many at
 * random (at least one), preferring devices without a fault yet. */
function assignFaults(n: number, specs: readonly Misbehaviour[], random: () => number): Faults[] {
  const faults: Faults[] = Array.from({ length: n }, () => ({ clockMs: 0 }))
  const taken = new Set<number>()
  for (const m of specs) {
    let picks: number[]
    if ('index' in m.who) {
      if (!Number.isInteger(m.who.index) || m.who.index < 0 || m.who.index >= n) throw new RangeError(`misbehave ${m.kind}: device index ${m.who.index} is not in 0..${n - 1}`)
      picks = [m.who.index]
    } else {
      const want = Math.min(n, Math.max(1, Math.round(m.who.fraction * n)))
      const order = Array.from({ length: n }, (_, i) => i)
      for (let i = n - 1; i > 0; i--) {
        const j = Math.floor(random() * (i + 1))
        ;[order[i], order[j]] = [order[j]!, order[i]!]
      }
      picks = [...order.filter(i => !taken.has(i)), ...order.filter(i => taken.has(i))].slice(0, want)
    }
    for (const i of picks) {
      taken.add(i)
      const f = faults[i]!
      const every = Math.max(1, Math.floor(m.arg ?? 5))
      if (m.kind === 'equivocate') f.equivocate = every
      else if (m.kind === 'fork') f.fork = every
      else if (m.kind === 'forge-beacon') f.forge = every
      else if (m.kind === 'replay') f.replay = every
      else if (m.kind === 'clock') f.clockMs = Math.round((m.arg ?? 0) * 1000)
      else f.offline = { ms: Math.round((m.arg ?? 30) * 1000), atMs: m.at === undefined ? undefined : Math.round(m.at * 1000) }
    }
  }
  return faults
}

export function startSim(opts: SimOptions): Sim {
  if (!Number.isInteger(opts.devices) || opts.devices < 1) throw new RangeError('devices must be a positive integer')
  const random = opts.random ?? Math.random
  const validators = new Set(opts.validators)
  let fatal: Error | undefined
  let everConnected = 0
  let resolveReady!: () => void
  const ready = new Promise<void>(r => (resolveReady = r))
  const shared: Shared = {
    o: {
      brokerUrl: opts.brokerUrl,
      fleet: opts.fleet,
      periodS: opts.periodS ?? 60,
      jitterMs: opts.jitterMs ?? 5000,
      skewMs: opts.skewMs ?? 300_000,
      keepaliveS: opts.keepaliveS ?? 60,
      owner: opts.owner ?? null,
      mqtt: opts.mqtt ?? { protocolVersion: 5 },
    },
    validators,
    beacons: new BeaconCache(opts.fleet, validators),
    clock: opts.clock ?? systemClock,
    random,
    refused: new Map(),
    fatal(err) {
      if (fatal) return
      fatal = err
      clearTimeout(rampTimer)
      opts.log?.error({ err: err.message, started }, 'sim stopped ramping')
      opts.onFatal?.(err)
    },
    firstConnect() {
      if (++everConnected === devices.length) resolveReady()
    },
  }
  const faults = assignFaults(opts.devices, opts.misbehave ?? [], random)
  const devices = faults.map((f, i) => new SimDevice(i, f, shared))

  // Ramp: start devices at rampPerS, in small batches off a timer.
  const rampPerS = opts.rampPerS ?? 200
  const t0 = performance.now()
  let started = 0
  let rampTimer: NodeJS.Timeout | undefined
  const pump = () => {
    const due = Math.min(devices.length, Math.floor(((performance.now() - t0) / 1000) * rampPerS) + 1)
    while (started < due && !fatal) devices[started++]!.start()
    if (started < devices.length && !fatal) rampTimer = setTimeout(pump, 20)
  }
  pump()

  const stats = (o: { perDevice?: boolean } = {}): SimStats => {
    const totals: DeviceCounts = { connects: 0, beacons: 0, heartbeats: 0, acked: 0, failed: 0, equivocations: 0, forks: 0, forgedBeacons: 0, replays: 0, fetched: 0, challenges: 0, refused: 0 }
    let connected = 0
    let offline = 0
    for (const d of devices) {
      for (const k of Object.keys(totals) as Array<keyof DeviceCounts>) totals[k] += d.counts[k]
      if (d.connected) connected++
      if (d.offline) offline++
    }
    const out: SimStats = { devices: devices.length, started, connected, everConnected, offline, beaconsVerified: shared.beacons.verified, totals, refusedByCode: Object.fromEntries(shared.refused) }
    if (o.perDevice) out.perDevice = devices.map(d => ({ index: d.index, id: d.id, faults: d.faultNames(), connected: d.connected, ...d.counts }))
    return out
  }

  let stopping: Promise<SimStats> | undefined
  return {
    devices,
    ready,
    stats,
    stop() {
      stopping ??= (async () => {
        clearTimeout(rampTimer)
        await Promise.all(devices.slice(0, started).map(d => d.stop()))
        return stats()
      })()
      return stopping
    },
  }
}
