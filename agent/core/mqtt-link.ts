// The device's connection to its fleet broker (mqtt.js): MQTT 5 or 3.1.1, TLS and
// credentials, reconnect with exponential backoff and jitter, a Will that marks the
// device offline, and the drain that moves the outbox to the broker with a bounded
// number of unacknowledged publishes.

import type { IClientPublishOptions, IPublishPacket, MqttClient } from 'mqtt'
import type { Config } from '../config/config-schema.js'
import { brokerClientOptions, connectMqtt } from '../../protocol/mqtt-client.js'
import { publishProperties, type PublishProps } from '../../protocol/mqtt-props.js'
import type { Logger } from '../../protocol/log.js'
import type { Metrics } from './metrics.js'
import { CLASS_NAMES, type Outbox, type OutboxRecord } from './outbox.js'

export interface LinkOptions {
  broker: Config['broker']
  clientId: string
  will: () => { topic: string; payload: Buffer }
  outbox: Outbox
  maxInflight: number
  log: Logger
  metrics: Metrics
  /** Called on every (re)connection, before the outbox drains. */
  onConnect(link: MqttLink, info: { sessionPresent: boolean }): Promise<void> | void
  /** A QoS 1 message is acknowledged to the broker only when this returns, or when the
   * promise it returns settles. */
  onMessage(topic: string, payload: Buffer, packet: IPublishPacket): void | Promise<void>
  /** MQTT 5 Maximum Packet Size (packetLimitFor). */
  maximumPacketSize: number
  random?: () => number
}

const PREFETCH = 256

// Reason codes after which a publish is dropped rather than retried: the broker will
// refuse it the same way every time.
const PERMANENT_REFUSALS = new Set([0x87, 0x90, 0x95, 0x99])

/** Headroom over the largest accepted payload for the topic and properties of a packet. */
const PACKET_HEADROOM = 64 * 1024

/** The MQTT 5 Maximum Packet Size for the agent: the largest payload any of its parts
 * accepts (commands.maxPayloadBytes, tasks.maxRequestBytes, proof requests) plus
 * headroom. A payload a little over a limit still arrives and is answered TOO_LARGE; a
 * far larger one is dropped by the broker and never reaches the device. */
export function packetLimitFor(...payloadLimits: number[]): number {
  return Math.max(0, ...payloadLimits) + PACKET_HEADROOM
}

export class MqttLink {
  private client: MqttClient | undefined
  private readonly inflight = new Set<number>()
  // Records read ahead from the outbox, so the drain queries SQLite once per batch
  // rather than once per acknowledgement.
  private prefetched: OutboxRecord[] = []
  private prefetchPos = 0
  private receiveMaximum = 65535
  private attempt = 0
  private reconnectTimer: NodeJS.Timeout | undefined
  private retryTimer: NodeJS.Timeout | undefined
  private stopping = false
  private generation = 0
  private pumping = false
  /** settle() calls under way (or held): no new records go out meanwhile. */
  private settling = 0
  private ready = false
  private unsubscribeOutbox: (() => void) | undefined

  constructor(private readonly opts: LinkOptions) {}

  get connected(): boolean {
    return this.ready && this.client?.connected === true
  }

  get mqttVersion(): 4 | 5 {
    return this.opts.broker.mqttVersion
  }

  start(): void {
    this.unsubscribeOutbox = this.opts.outbox.onEnqueue(() => this.pump())
    this.connect()
  }

  /** One fresh mqtt.js client per connection attempt. Reusing a client across
   * reconnects (client.reconnect()) swaps in empty message stores and strands the
   * callbacks of publishes that were in flight; a new client per attempt, plus a
   * generation check on every callback, keeps no state from a dead connection. The
   * outbox still holds every unacknowledged record and sends it again. */
  private connect(): void {
    const o = this.opts
    const gen = ++this.generation
    const client = connectMqtt({
      url: o.broker.url,
      base: brokerClientOptions(o.broker),
      clientId: o.clientId,
      // Persistent session: commands published while the device is offline wait at the broker.
      clean: false,
      sessionExpiryS: o.broker.sessionExpiryS,
      maximumPacketSize: o.maximumPacketSize,
      reconnectPeriodMs: 0, // we reconnect ourselves, with backoff and jitter
      resubscribe: false,
      will: { ...o.will(), qos: 1, retain: true },
      // The broker's copy is acknowledged (PUBACK) only once the handler is done, on
      // MQTT 5 and 3.1.1 alike: a command whose reply is committed, a task request
      // whose row is. A crash before that leaves the message unacknowledged, and the
      // broker delivers it again to the next session.
      beforeAck: (packet, ack) => {
        if (gen !== this.generation) return // a dead client: acknowledge nothing
        const topic = packet.topic
        const payload = Buffer.isBuffer(packet.payload) ? packet.payload : Buffer.from(packet.payload)
        let done: void | Promise<void> = undefined
        try {
          done = o.onMessage(topic, payload, packet)
        } catch (err) {
          o.log.error({ err, topic }, 'message handler failed')
        }
        Promise.resolve(done)
          .catch((err: unknown) => o.log.error({ err, topic }, 'message handler failed'))
          .finally(() => ack())
      },
    })
    this.client = client
    client.on('connect', connack => {
      if (gen !== this.generation) return
      this.attempt = 0
      this.receiveMaximum = connack.properties?.receiveMaximum ?? 65535
      o.log.info({ sessionPresent: connack.sessionPresent, receiveMaximum: this.receiveMaximum }, 'connected to broker')
      void this.afterConnect(gen, connack.sessionPresent)
    })
    client.on('error', err => o.log.warn({ err }, 'broker connection error'))
    client.on('close', () => this.connectionClosed(gen))
  }

  private connectionClosed(gen: number): void {
    if (gen !== this.generation || this.stopping) return
    this.generation++ // every callback of the dead client is now stale
    const wasReady = this.ready
    this.ready = false
    this.inflight.clear() // still in the outbox: sent again on the next connection
    this.prefetched = []
    this.prefetchPos = 0
    const dead = this.client
    this.client = undefined
    dead?.removeAllListeners('close')
    dead?.end(true)
    if (wasReady) this.opts.log.warn('broker connection lost')
    this.scheduleReconnect()
  }

  private async afterConnect(gen: number, sessionPresent: boolean): Promise<void> {
    try {
      await this.opts.onConnect(this, { sessionPresent })
      if (gen !== this.generation) return
      this.ready = true
      this.pump()
    } catch (err) {
      if (gen !== this.generation) return
      this.opts.log.error({ err }, 'connection set-up failed; reconnecting')
      this.connectionClosed(gen)
    }
  }

  private scheduleReconnect(): void {
    if (this.reconnectTimer) return
    const { reconnectMinMs, reconnectMaxMs } = this.opts.broker
    const ceiling = Math.min(reconnectMaxMs, reconnectMinMs * 2 ** Math.min(this.attempt, 20))
    // "Equal jitter": half fixed, half random, so a fleet that lost its broker at the
    // same moment does not come back in lockstep.
    const delay = Math.round(ceiling / 2 + (this.opts.random ?? Math.random)() * (ceiling / 2))
    this.attempt++
    this.opts.metrics.inc('cairn_mqtt_reconnects_total')
    this.opts.log.info({ delayMs: delay, attempt: this.attempt }, 'reconnecting')
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = undefined
      if (!this.stopping) this.connect()
    }, delay)
  }

  /** Subscribe (QoS 1) and wait for the SUBACK. */
  subscribe(filter: string): Promise<void> {
    return new Promise((resolve, reject) => {
      const client = this.client
      if (!client) return reject(new Error('not started'))
      client.subscribe(filter, { qos: 1 }, (err, granted) => {
        if (err) return reject(err)
        const bad = granted?.find(g => g.qos > 2)
        if (bad) return reject(new Error(`subscription to ${filter} refused (reason ${bad.qos})`))
        resolve()
      })
    })
  }

  /** Publish directly, outside the outbox (retained status): resolves on PUBACK. */
  publishNow(topic: string, payload: Buffer, opts: IClientPublishOptions): Promise<void> {
    return new Promise((resolve, reject) => {
      const client = this.client
      if (!client?.connected) return reject(new Error('not connected'))
      client.publish(topic, payload, opts, err => (err ? reject(err) : resolve()))
    })
  }

  /** QoS 0 at once, never queued (refusals, progress): dropped when not connected. MQTT 5
   * properties (the request's correlation data) go along on an MQTT 5 connection only. */
  publishQuick(topic: string, payload: Buffer, props: PublishProps | undefined): void {
    const properties = publishProperties(props, this.mqttVersion)
    this.publishNow(topic, payload, { qos: 0, ...(properties ? { properties } : {}) }).catch(() => undefined)
  }

  inflightCount(): number {
    return this.inflight.size
  }

  /** Moves outbox records to the broker while connected, keeping at most
   * min(maxInflight, broker receive-maximum) unacknowledged. */
  pump(): void {
    if (this.pumping || this.stopping || this.settling > 0 || !this.connected) return
    this.pumping = true
    try {
      const cap = Math.min(this.opts.maxInflight, this.receiveMaximum)
      while (this.connected && this.inflight.size < cap) {
        if (this.prefetchPos >= this.prefetched.length) {
          this.prefetched = this.opts.outbox.peek(PREFETCH, this.inflight)
          this.prefetchPos = 0
          if (this.prefetched.length === 0) break
        }
        this.send(this.prefetched[this.prefetchPos++]!)
      }
    } finally {
      this.pumping = false
    }
  }

  private send(rec: OutboxRecord): void {
    const client = this.client!
    this.inflight.add(rec.seq)
    const properties = publishProperties(rec.props, this.mqttVersion)
    const opts: IClientPublishOptions = { qos: 1, retain: rec.retain, ...(properties ? { properties } : {}) }
    const gen = this.generation
    client.publish(rec.topic, rec.payload, opts, (err, packet) => {
      // A callback from a closed connection: its record is sent again on the next one.
      if (gen !== this.generation) return
      this.inflight.delete(rec.seq)
      const reason = (packet as { reasonCode?: number } | undefined)?.reasonCode ?? (err as { code?: number } | undefined)?.code
      if (!err) {
        this.opts.outbox.ack(rec.seq)
        this.opts.metrics.inc('cairn_messages_sent_total', { class: CLASS_NAMES[rec.cls] })
        this.pump()
      } else if (typeof reason === 'number' && PERMANENT_REFUSALS.has(reason)) {
        this.opts.log.error({ topic: rec.topic, id: rec.id, reason }, 'broker refused message permanently; dropped')
        this.opts.outbox.ack(rec.seq)
        this.opts.metrics.inc('cairn_messages_refused_total')
        this.pump()
      } else {
        // Quota exceeded, a passing broker problem, or the client going away: try again
        // shortly rather than at once, so an error that repeats cannot spin.
        this.retryTimer ??= setTimeout(() => {
          this.retryTimer = undefined
          this.prefetched = []
          this.prefetchPos = 0
          this.pump()
        }, 1000)
      }
    })
  }

  /** Waits until what is in flight is acknowledged (or the time is up), sending nothing
   * new meanwhile: with a backlog in the outbox the window would otherwise refill as fast
   * as it empties, and a stop would wait out the whole timeout (6 s for a SIGTERM during
   * a 20,000-record drain, test/agent/faults.test.ts). Records not yet sent stay in the
   * outbox. `hold`: the caller is about to stop the link; do not resume sending. */
  async settle(timeoutMs: number, o: { hold?: boolean } = {}): Promise<boolean> {
    const until = Date.now() + timeoutMs
    this.settling++
    try {
      while (this.inflight.size > 0 && Date.now() < until && this.connected) await new Promise(r => setTimeout(r, 20))
      return this.inflight.size === 0
    } finally {
      if (!o.hold) this.settling--
      this.pump()
    }
  }

  /** Publishes the final status (if connected) and disconnects cleanly. */
  async stop(final?: { topic: string; payload: Buffer }): Promise<void> {
    this.unsubscribeOutbox?.()
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer)
    if (this.retryTimer) clearTimeout(this.retryTimer)
    const client = this.client
    const wasConnected = this.connected
    this.stopping = true
    this.ready = false
    if (!client) return
    if (final && wasConnected)
      await atMost(
        2000,
        this.publishNow(final.topic, final.payload, { qos: 1, retain: true }).catch(() => undefined),
      )
    // A clean DISCONNECT (no Will) when connected; never wait on a dead connection.
    await atMost(3000, new Promise<void>(resolve => client.end(!client.connected, {}, () => resolve())))
    if (!client.disconnected) client.end(true)
  }
}

/** Waits for `p`, or `ms` at most, and leaves no timer behind: a pending one would keep a
 * stopped agent's process alive until it fired (3 s after every SIGTERM). */
async function atMost(ms: number, p: Promise<unknown>): Promise<void> {
  let timer: NodeJS.Timeout | undefined
  try {
    await Promise.race([p, new Promise(r => (timer = setTimeout(r, ms)))])
  } finally {
    clearTimeout(timer)
  }
}
