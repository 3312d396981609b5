// `cairn fleet serve`, wired: the MQTT consumer (its fleet's status, telemetry and events,
// each acknowledged only once stored, on MQTT 5 and 3.1.1 alike), the store, the
// rollup/retention timer and the HTTP API on loopback. Several processes on one store
// split the broker's messages through a shared subscription; per-device state is right
// whichever process gets which message, because presence is ordered by the device's own
// key (docs/console.md, "Several processes").

import type { FastifyInstance } from 'fastify'
import type { IClientOptions, MqttClient } from 'mqtt'
import type { Clock } from '../../protocol/clock.js'
import type { Logger } from '../../protocol/log.js'
import { connectMqtt } from '../../protocol/mqtt-client.js'
import { fileURLToPath } from 'node:url'
import { readFileSync } from 'node:fs'
import { sha256Hex } from '../../protocol/hash.js'
import { DEFAULT_ALERT_RULES, type AlertRules } from './alerts.js'
import { ChangeFeed } from './change-feed.js'
import { CommandDesk, MAX_REPLY_BYTES, isReplyTopic, replyFilter } from './commands.js'
import type { FleetStore, Retention } from './fleet-store.js'
import { CairnError } from '../../protocol/errors.js'
import { buildApi } from './http-api.js'
import { FleetIngest, type Attempt, MAX_PACKET_BYTES, ingestFilters } from './ingest.js'
import { listReleases } from '../../ota/release-list.js'
import { ReleaseWatch } from './releases.js'
import { PauseWatch } from './rollouts.js'
import { MAX_SIGNED_BYTES, SignedIngest, signedFilters, signedTopic } from './signed-ingest.js'

const DEFAULT_RETENTION: Retention = { rawMs: 48 * 3_600_000, minuteMs: 30 * 86_400_000, hourMs: 365 * 86_400_000 }

export interface FleetServiceOptions {
  brokerUrl: string
  /** credentials, TLS, protocol version (brokerClientOptions) */
  mqtt: IClientOptions
  fleet: string
  store: FleetStore
  clock: Clock
  log: Logger
  listen: { host: string; port: number }
  /** MQTT shared-subscription group; null: a plain subscription (this process sees all) */
  shareGroup: string | null
  /** distinguishes processes sharing a store and a group */
  instance: string
  retention?: Retention
  maintainEveryMs?: number
  alertRules?: AlertRules
  /** the built console; default: dist/console from the sources, console/ beside the bundle */
  consoleDir?: string
  /** key ids that may send commands through the service; none: any that verifies (each
   * device checks its own list of trusted operators either way) */
  operatorKeys?: readonly string[]
  /** accounts (auth.ts): `always` when listening beyond loopback; Secure cookies behind TLS */
  auth?: { always: boolean; secureCookies: boolean; sessionMs?: number }
  tls?: { cert: Buffer; key: Buffer }
  trustProxy?: boolean
  /** the validators whose attestations are kept (key ids); none: no attestation is kept */
  validators?: readonly string[]
  /** the release repository to follow (releases.ts): its URL, trusted root, where its
   * verified metadata is kept, and how often it is read */
  releases?: { url: string; root: string; metadataDir: string; everyMs: number }
}

/** Where `npm run build` puts the console: beside the bundle (dist/console), or the
 * repository's dist/console when the service runs from its sources. */
export function defaultConsoleDir(): string {
  return fileURLToPath(import.meta.url.endsWith('.ts') ? new URL('../../dist/console/', import.meta.url) : new URL('./console/', import.meta.url))
}

export class FleetService {
  readonly ingest: FleetIngest
  readonly commands: CommandDesk
  readonly signed: SignedIngest
  readonly pause: PauseWatch
  readonly releases: ReleaseWatch | null
  readonly changes = new ChangeFeed()
  private client: MqttClient | undefined
  private api: FastifyInstance | undefined
  private timer: NodeJS.Timeout | undefined
  private stopped = false

  constructor(private readonly o: FleetServiceOptions) {
    this.ingest = new FleetIngest({ store: o.store, fleet: o.fleet, clock: o.clock, log: o.log.child({ mod: 'ingest' }), onChange: (device, what) => this.changes.notify(device, what) })
    this.signed = new SignedIngest({
      store: o.store,
      fleet: o.fleet,
      clock: o.clock,
      log: o.log.child({ mod: 'signed' }),
      validators: new Set(o.validators ?? []),
      onChange: device => this.changes.notify(device, 'event'),
    })
    const r = o.releases
    this.releases = r
      ? new ReleaseWatch({
          url: r.url,
          source: `${r.url} root ${sha256Hex(readFileSync(r.root)).slice(0, 16)}`,
          list: () => listReleases({ metadataUrl: `${r.url.replace(/\/+$/, '')}/metadata`, metadataDir: r.metadataDir, trustedRoot: r.root, fetchTimeoutMs: 30_000, fetchRetries: 1 }),
          store: o.store,
          clock: o.clock,
          log: o.log.child({ mod: 'releases' }),
          everyMs: r.everyMs,
          onChange: () => this.changes.notifyReleases(),
        })
      : null
    this.pause = new PauseWatch({ fleet: o.fleet, clock: o.clock, operators: o.operatorKeys && o.operatorKeys.length > 0 ? new Set(o.operatorKeys) : null })
    const v5 = o.mqtt.protocolVersion !== 4
    this.commands = new CommandDesk({
      store: o.store,
      fleet: o.fleet,
      clock: o.clock,
      log: o.log.child({ mod: 'commands' }),
      operators: o.operatorKeys && o.operatorKeys.length > 0 ? new Set(o.operatorKeys) : null,
      onChange: device => this.changes.notify(device, 'command'),
      ready: () => this.client !== undefined,
      publish: (topic, payload, p) => {
        if (!this.client) throw new Error('not started')
        // On MQTT 5 the device answers on the response topic with the correlation data; a
        // 3.1.1 device answers on its reply topic, which is the same topic here.
        const properties = {
          ...(p.responseTopic ? { responseTopic: p.responseTopic } : {}),
          ...(p.correlation ? { correlationData: Buffer.from(p.correlation) } : {}),
          messageExpiryInterval: p.expirySeconds,
        }
        this.client.publish(topic, payload, { qos: 1, retain: p.retain ?? false, ...(v5 ? { properties } : {}) }, err => err && this.o.log.warn({ err, topic }, 'a command was not published'))
      },
    })
  }

  /** Listening and subscribed; resolves with the API's URL. */
  async start(): Promise<string> {
    this.api = await buildApi({
      store: this.o.store,
      fleet: this.o.fleet,
      clock: this.o.clock,
      stats: () => this.ingest.stats,
      alertRules: this.o.alertRules ?? DEFAULT_ALERT_RULES,
      changes: this.changes,
      consoleDir: this.o.consoleDir ?? defaultConsoleDir(),
      commands: this.commands,
      pause: () => this.pause.state(),
      repository: () => this.releases?.state() ?? null,
      validators: this.o.validators ?? [],
      ...(this.o.auth ? { auth: this.o.auth } : {}),
      ...(this.o.tls ? { tls: this.o.tls } : {}),
      ...(this.o.trustProxy ? { trustProxy: true } : {}),
    })
    const address = await this.api.listen({ host: this.o.listen.host, port: this.o.listen.port })
    const signed = signedFilters(this.o.fleet)
    const shared = [...ingestFilters(this.o.fleet), replyFilter(this.o.fleet), ...signed.shared]
    // retained topics are read by every process: a shared subscription gets no retained message
    const whole = [...signed.whole, this.pause.topic]
    const filters = [...shared.map(f => (this.o.shareGroup ? `$share/${this.o.shareGroup}/${f}` : f)), ...whole]
    const client = connectMqtt({
      url: this.o.brokerUrl,
      base: this.o.mqtt,
      clientId: `cairn-fleet-${this.o.fleet}-${this.o.instance}`.slice(0, 64),
      // as the validator: a share group's session ends with the connection (a persistent
      // member would keep being handed its share while it is away)
      clean: true,
      maximumPacketSize: Math.max(MAX_PACKET_BYTES, MAX_REPLY_BYTES, MAX_SIGNED_BYTES) + 1024,
      reconnectPeriodMs: 1000,
      resubscribe: false,
      beforeAck: (packet, ack) => void this.store(packet.topic, packet.payload as Buffer, ack),
      // read on while storing: what arrives together is stored in one transaction
      // (ingest.ts), each PUBACK still after its message is stored, in order
      inFlight: 256,
    })
    this.client = client
    client.on('error', err => this.o.log.warn({ err }, 'broker error'))
    client.on('offline', () => this.o.log.warn('broker connection lost'))
    await new Promise<void>((resolve, reject) => {
      client.once('connect', () =>
        client.subscribe(filters, { qos: 1 }, (err, granted) => {
          if (err) return reject(err)
          if (granted?.some(g => g.qos > 2)) return reject(new Error(`broker refused a subscription to ${filters.join(', ')}`))
          resolve()
        }),
      )
      client.once('error', reject)
    })
    client.on('connect', () => client.subscribe(filters, { qos: 1 }))
    this.releases?.start()
    const every = this.o.maintainEveryMs ?? 60_000
    const tick = () => {
      this.maintain().catch(err => this.o.log.error({ err }, 'rollup failed'))
      if (!this.stopped) this.timer = setTimeout(tick, every)
    }
    this.timer = setTimeout(tick, every)
    this.o.log.info({ fleet: this.o.fleet, api: address, filters }, 'fleet service started')
    return address
  }

  /** Rolls telemetry up and applies retention now (the timer does this every minute). */
  maintain(): Promise<{ minutes: number; hours: number; deleted: number }> {
    return this.o.store.maintain(this.o.clock.now(), this.o.retention ?? DEFAULT_RETENTION)
  }

  private async store(topic: string, payload: Buffer, ack: (err?: Error) => void): Promise<void> {
    // A store that fails (busy past its timeout, disk full) holds the PUBACK and tries
    // again: the broker keeps the message until it is stored or the connection goes.
    const attempt: Attempt = { failed: false }
    try {
      for (let delay = 200; !this.stopped; delay = Math.min(delay * 2, 10_000)) {
        try {
          if (topic === this.pause.topic) this.pause.handle(payload)
          else if (isReplyTopic(topic, this.o.fleet)) await this.commands.handleReply(topic, payload)
          else if (signedTopic(topic, this.o.fleet)) {
            // it names a device: the statuses that came before it are stored first, and
            // while one of them could not be and is tried again, this waits as well (a
            // device not yet in the registry would be passed over)
            await this.ingest.drained()
            if (this.ingest.failing > 0) throw new CairnError('UNAVAILABLE', 'device messages that came before it are not stored yet')
            await this.signed.handle(topic, payload)
          } else await this.ingest.handle(topic, payload, attempt)
          return ack()
        } catch (err) {
          this.o.log.error({ err, topic: topic.slice(0, 200) }, 'could not store a message; retrying')
          await new Promise(r => setTimeout(r, delay))
        }
      }
    } finally {
      this.ingest.recovered(attempt)
    }
  }

  async stop(): Promise<void> {
    if (this.stopped) return
    this.stopped = true
    clearTimeout(this.timer)
    // A clean DISCONNECT, given a few seconds; then the socket is cut: a broker that is
    // slow or gone must not hold the stop (what was not acknowledged comes again).
    await new Promise<void>(r => {
      const c = this.client
      if (!c) return r()
      const force = setTimeout(() => {
        // end() again while ending does not cut the socket: cut it here
        c.stream?.destroy()
        c.end(true, {}, () => r())
      }, 5_000)
      c.end(false, {}, () => {
        clearTimeout(force)
        r()
      })
    })
    await this.releases?.stop()
    this.changes.close()
    await this.api?.close()
    this.ingest.close()
    await this.o.store.close()
  }
}
