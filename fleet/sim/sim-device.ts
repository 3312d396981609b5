// One simulated device of `cairn sim`. It runs the device's own proof code
// (agent/proof/device-proofs.ts: the heartbeat schedule, the beacon rule, the checks on
// challenges and fetch requests, the signing) with parts sized for thousands of devices
// in one process: the newest few heartbeats and the replay store in memory, and an
// "outbox" that publishes at once on the device's own MQTT connection (clean session,
// QoS 1). Misbehaviour goes through DeviceProofs' fault hooks, so a cheating device
// differs from an honest one only where it cheats.
//
// fleet/sim/ is the one part of fleet/ allowed to import agent/ (agent/proof/ and
// agent/core/): simulated devices run the device's code, not a copy of it.

import { createPrivateKey, createPublicKey, generateKeyPairSync, randomBytes, type KeyObject } from 'node:crypto'
import type { IClientOptions, MqttClient } from 'mqtt'
import type { Clock } from '../../protocol/clock.js'
import { CairnError, errorBody } from '../../protocol/errors.js'
import { base32Encode } from '../../protocol/base32.js'
import type { KeyPair } from '../../protocol/keys.js'
import type { Logger } from '../../protocol/log.js'
import { connectMqtt } from '../../protocol/mqtt-client.js'
import type { Beacon } from '../../protocol/proof-format.js'
import { sha256Hex } from '../../protocol/hash.js'
import { deviceTopics, proofTopics } from '../../protocol/topics.js'
import { SimPresence, type TelemetryFault } from './sim-presence.js'
import { MemoryReplayGuard } from '../../protocol/replay-guard.js'
import { packetLimitFor } from '../../agent/core/mqtt-link.js'
import { DeviceProofs, MAX_PROOF_REQUEST_BYTES, type ProofFaults, type ProofOutbox } from '../../agent/proof/device-proofs.js'
import { MemoryProofLog } from '../../agent/proof/proof-log.js'

/** Heartbeats kept per device for fetch requests and replays (memory, not a log): the
 * newest one and the 8 before it. */
const HELD_HEARTBEATS = 9

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
  /** Telemetry samples acknowledged by the broker (with telemetryPeriodS). */
  telemetry: number
  refused: number
}

export const zeroCounts = (): DeviceCounts => ({
  connects: 0,
  beacons: 0,
  heartbeats: 0,
  acked: 0,
  failed: 0,
  equivocations: 0,
  forks: 0,
  forgedBeacons: 0,
  replays: 0,
  fetched: 0,
  challenges: 0,
  telemetry: 0,
  refused: 0,
})

/** One device's faults: equivocate, fork, forge and replay act on heartbeat seq 1 and
 * every n-th after it. */
export interface Faults {
  equivocate?: number
  fork?: number
  forge?: number
  replay?: number
  clockMs: number
  offline?: { ms: number; atMs: number | undefined }
  /** what its telemetry (and, for update-failed, its updater) reports wrong (the fleet service's alerts) */
  telemetry?: TelemetryFault[]
}

/** What every device of one sim shares. */
export interface Shared {
  o: { brokerUrl: string; fleet: string; periodS: number; jitterMs: number; skewMs: number; keepaliveS: number; owner: string | null; mqtt: IClientOptions; telemetryPeriodS: number }
  validators: readonly KeyObject[]
  beacons: BeaconCache
  clock: Clock
  random: () => number
  /** DeviceProofs' logger: silent, a sim of thousands would drown in per-device lines. */
  log: Logger
  refused: Map<string, number>
  fatal(err: Error): void
  firstConnect(): void
}

/** Checks each distinct beacon payload once per process. Every simulated device still
 * receives each beacon on its own connection and applies the beacon rule to its own
 * state; only the parse and the ed25519 verification (the device's own check, run by
 * the first device that receives it), identical for all devices of a process, are
 * shared. A real fleet pays that once per device, so the sim's CPU is not N times an
 * agent's. */
export class BeaconCache {
  verified = 0
  private readonly seen = new Map<string, { ok: true; env: Beacon } | { ok: false; error: CairnError }>()

  check(payload: Buffer, verify: (payload: Buffer) => Beacon): Beacon {
    const key = sha256Hex(payload)
    let hit = this.seen.get(key)
    if (!hit) {
      try {
        hit = { ok: true, env: verify(payload) }
      } catch (err) {
        if (!(err instanceof CairnError)) throw err
        hit = { ok: false, error: err }
      }
      this.verified++
      if (this.seen.size >= 256) this.seen.delete(this.seen.keys().next().value!)
      this.seen.set(key, hit)
    }
    if (!hit.ok) throw hit.error
    return hit.env
  }
}

export class SimDevice {
  readonly key: KeyPair
  readonly id: string
  readonly counts: DeviceCounts = zeroCounts()
  connected = false
  offline = false
  private client: MqttClient | undefined
  private readonly proofTopic: string
  private readonly proofs: DeviceProofs
  private readonly held = new MemoryProofLog(HELD_HEARTBEATS)
  private offlineTimer: NodeJS.Timeout | undefined
  private readonly presence: SimPresence | undefined
  private stopped = true
  private everConnected = false

  constructor(
    readonly index: number,
    private readonly faults: Faults,
    private readonly s: Shared,
  ) {
    this.key = newDeviceKey()
    this.id = this.key.keyId
    this.proofTopic = proofTopics(s.o.fleet, this.id).proof
    this.presence =
      s.o.telemetryPeriodS > 0
        ? new SimPresence({
            index,
            key: this.key,
            fleet: s.o.fleet,
            topics: deviceTopics(s.o.fleet, this.id),
            periodS: s.o.telemetryPeriodS,
            clock: s.clock,
            random: s.random,
            mqttVersion: s.o.mqtt.protocolVersion === 4 ? 4 : 5,
            faults: faults.telemetry ?? [],
            onTelemetryAcked: () => this.counts.telemetry++,
          })
        : undefined
    // The device's own clock: a `clock` fault makes it wrong.
    const clock: Clock = { now: () => s.clock.now() + faults.clockMs }
    this.proofs = new DeviceProofs({
      proofLog: this.held,
      identity: this.key,
      fleet: s.o.fleet,
      outbox: this.outbox(),
      clock,
      config: { periodS: s.o.periodS, jitterMs: s.o.jitterMs, retentionDays: 14, ...(s.o.owner !== null ? { owner: s.o.owner } : {}) },
      validators: s.validators,
      replay: new MemoryReplayGuard(s.o.skewMs),
      skewMs: s.o.skewMs,
      telemetry: () => ({ ts: clock.now(), load: Math.round(s.random() * 1000) / 1000 }),
      log: s.log,
      metrics: {
        inc: (name, labels) => {
          if (name === 'cairn_beacons_total') this.counts.beacons++
          else if (name === 'cairn_proof_refused_total') this.refuse(labels?.code ?? 'INTERNAL')
        },
      },
      publishNow: (topic, payload) => this.publishNow(topic, payload),
      random: max => Math.floor(s.random() * max),
      verifyBeacon: (payload, verify) => s.beacons.check(payload, verify),
      ...(this.hasProofFaults() ? { faults: this.proofFaults() } : {}),
    })
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
    out.push(...(f.telemetry ?? []))
    return out
  }

  start(): void {
    this.stopped = false
    this.connect()
    this.proofs.start()
  }

  async stop(graceMs = 10_000): Promise<void> {
    this.stopped = true
    this.proofs.stop()
    clearTimeout(this.offlineTimer)
    this.presence?.stop()
    // as an agent stopping cleanly: offline (shutdown), retained, before the connection
    // ends; a broker that does not acknowledge it within the grace (hung, or gone since
    // the check) must not hold the stop: the Will says offline then
    if (this.presence && this.client?.connected) {
      let timer: NodeJS.Timeout | undefined
      await Promise.race([this.client.publishAsync(...this.presence.offline('shutdown')).catch(() => undefined), new Promise(r => (timer = setTimeout(r, graceMs)))])
      clearTimeout(timer)
    }
    await this.disconnect(graceMs)
  }

  private connect(): void {
    const o = this.s.o
    const client = connectMqtt({
      url: o.brokerUrl,
      base: o.mqtt,
      clientId: `cairn-sim-${this.id.slice(0, 20)}`,
      clean: true,
      keepaliveS: o.keepaliveS,
      // Spread reconnects so a broker restart is not met by every device at once.
      reconnectPeriodMs: 1000 + Math.floor(this.s.random() * 4000),
      connectTimeoutMs: 30_000,
      maximumPacketSize: packetLimitFor(MAX_PROOF_REQUEST_BYTES),
      resubscribe: false,
      ...(this.presence ? { will: this.presence.will() } : {}),
    })
    this.client = client
    client.on('connect', () => {
      // mqtt.js can complete a reconnect already under way after end() (seen after
      // EMFILE); a connection this device no longer owns is closed at once.
      if (this.client !== client) return void client.end(true)
      this.connected = true
      this.counts.connects++
      client.subscribe(this.proofs.filters(), { qos: 1 })
      this.presence?.online(client)
      if (!this.everConnected) {
        this.everConnected = true
        this.s.firstConnect()
        this.planOffline()
      }
    })
    client.on('close', () => {
      this.connected = false
      // mqtt.js reconnects with the options it was given: a fresh Will (a new conn) for the
      // next connection, or its online status would sort before this connection's Will
      if (this.presence) client.options.will = this.presence.will()
    })
    client.on('error', err => {
      if ((err as NodeJS.ErrnoException).code === 'EMFILE') this.s.fatal(err)
      else this.refuse(`mqtt:${(err as NodeJS.ErrnoException).code ?? 'error'}`)
    })
    client.on('message', (topic, payload) => {
      try {
        this.proofs.handle(topic, payload)
      } catch (err) {
        this.refuse(errorBody(err).code)
      }
    })
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

  /** An `offline` fault: the device goes dark (no connection, no heartbeats) for a while. */
  private planOffline(): void {
    const off = this.faults.offline
    if (!off) return
    const at = off.atMs ?? Math.floor(this.s.random() * 2 * this.s.o.periodS * 1000)
    this.offlineTimer = setTimeout(() => {
      if (this.stopped) return
      this.offline = true
      this.proofs.stop()
      // dark as a device whose power or network went: the socket dies without a
      // DISCONNECT, so the broker publishes the Will
      if (this.presence) {
        this.presence.stop()
        this.client?.stream.destroy()
      }
      void this.disconnect(1000)
      this.offlineTimer = setTimeout(() => {
        if (this.stopped) return
        this.offline = false
        this.connect()
        this.proofs.start()
      }, off.ms)
    }, at)
  }

  private refuse(code: string): void {
    this.counts.refused++
    this.s.refused.set(code, (this.s.refused.get(code) ?? 0) + 1)
  }

  /** DeviceProofs' outbox, publishing at once. Each method has one use there. */
  private outbox(): ProofOutbox {
    return {
      // A heartbeat, signed and logged.
      enqueueWith: make => this.publishHeartbeat(make().payload),
      // A challenge response that could not be published at once.
      enqueue: msg => this.publish(msg.payload, ok => ok && this.counts.challenges++),
      // Heartbeats a validator asked for again.
      enqueueBatch: msgs => {
        for (const m of msgs) {
          this.publish(m.payload, () => undefined)
          this.counts.fetched++
        }
      },
    }
  }

  private hasProofFaults(): boolean {
    const f = this.faults
    return f.equivocate !== undefined || f.fork !== undefined || f.forge !== undefined || f.replay !== undefined
  }

  private proofFaults(): ProofFaults {
    const f = this.faults
    const due = (every: number | undefined, seq: number) => every !== undefined && seq >= 1 && (seq - 1) % every === 0
    return {
      heartbeatBody: body => {
        let b = body
        const cited = b.beacons[0]
        if (due(f.forge, b.seq) && cited) {
          b = { ...b, beacons: [{ ...cited, h: randomHex() }, ...b.beacons.slice(1)] }
          this.counts.forgedBeacons++
        }
        if (due(f.fork, b.seq)) {
          b = { ...b, prev: randomHex() }
          this.counts.forks++
        }
        return b
      },
      afterBeat: ({ body, now }) => {
        if (due(f.equivocate, body.seq)) {
          // Same seq and prev, different content: two statements for one link of the chain.
          this.publishHeartbeat(this.proofs.signHeartbeat({ ...body, tel: randomHex() }, now).payload)
          this.counts.equivocations++
        }
        // The oldest heartbeat held, once two came before this one.
        const held = this.held.held()
        if (due(f.replay, body.seq) && held.length >= 3) {
          this.publish(held[0]!.payload, () => undefined)
          this.counts.replays++
        }
      },
    }
  }

  private publishHeartbeat(payload: Buffer): void {
    this.counts.heartbeats++
    this.publish(payload, ok => (ok ? this.counts.acked++ : this.counts.failed++))
  }

  private publish(payload: Buffer, done: (ok: boolean) => void): void {
    const c = this.client
    if (!c) return done(false)
    c.publish(this.proofTopic, payload, { qos: 1 }, err => done(!err))
  }

  private publishNow(topic: string, payload: Buffer): Promise<void> {
    return new Promise((resolve, reject) => {
      const c = this.client
      if (!c) return reject(new Error('offline'))
      c.publish(topic, payload, { qos: 1 }, err => {
        if (err) return reject(err)
        this.counts.challenges++
        resolve()
      })
    })
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
