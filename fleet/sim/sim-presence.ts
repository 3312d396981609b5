// A simulated device's presence and telemetry, as the agent publishes them (the retained
// status with its Will, a sample every period), for `cairn sim --telemetry-period`: so a
// fleet service sees simulated devices as it sees agents. The numbers drift like a real
// board's (a random walk per device); boards are a mix of Pi 4, Pi 5 and Jetson Orin.
// Every Pi has a status LED (its telemetry's `io`), and one Pi in four also lends a relay
// output and a sensor input to a local API client (Node-RED); a Jetson has none.

import type { IClientOptions, MqttClient } from 'mqtt'
import type { Clock } from '../../protocol/clock.js'
import { newId } from '../../protocol/ids.js'
import { publicKeyPem, type KeyPair } from '../../protocol/keys.js'
import type { StatusMessage, TelemetryMessage } from '../../protocol/messages.js'
import type { deviceTopics } from '../../protocol/topics.js'
import { VERSION } from '../../protocol/version.js'

const BOARDS = [
  { kind: 'rpi4', model: 'Raspberry Pi 4 Model B Rev 1.4' },
  { kind: 'rpi5', model: 'Raspberry Pi 5 Model B Rev 1.0' },
  { kind: 'jetson-orin', model: 'NVIDIA Jetson Orin Nano Developer Kit' },
] as const

/** What a device's telemetry (and, for update-failed, its updater) reports wrong. */
export type TelemetryFault = 'hot' | 'under-voltage' | 'disk-full' | 'update-failed' | 'backlog'

/** backlog: how far behind its outbox is at the start (an hour of one message a second), and
 * how fast it grows; a row's typical size against the outbox cap; the most it holds (the
 * default outbox cap of 32 MiB, in such rows). */
const BACKLOG = { startMs: 3_600_000, perS: 1, rowBytes: 600, maxQueued: 55_000 }

/** A Pi's GPIO: the status LED on BCM 17 showing 'online' (the agent's pattern: on for
 * 2850 ms, then a 150 ms wink); on the Pis that lend lines, a relay a flow switches every
 * `relayMs` and a door sensor (pulled up: 1 while closed) open for the last `doorOpenMs`
 * of every `doorMs`. */
const GPIO = { led: 17, ledOnMs: 2850, ledPeriodMs: 3000, relay: 22, relayMs: 60_000, door: 23, doorMs: 300_000, doorOpenMs: 40_000 }

export class SimPresence {
  private readonly board: (typeof BOARDS)[number]
  private readonly since: number
  private conn = 0
  private timer: NodeJS.Timeout | undefined
  /** update-failed: its rolled-back release reported (once, on its first connection) */
  private updateReported = false
  private tempC: number
  private load: number

  constructor(
    private readonly o: {
      index: number
      key: KeyPair
      fleet: string
      topics: ReturnType<typeof deviceTopics>
      periodS: number
      clock: Clock
      random: () => number
      mqttVersion: 4 | 5
      /** what the samples report wrong */
      faults: readonly TelemetryFault[]
      /** a sample acknowledged by the broker (QoS 1) */
      onTelemetryAcked?: () => void
    },
  ) {
    this.board = BOARDS[o.index % BOARDS.length]!
    this.since = o.clock.now()
    this.tempC = o.faults.includes('hot') ? 84 : 40 + o.random() * 15
    this.load = o.random()
  }

  /** The Will for a new connection (made as the agent makes it: when the connection opens). */
  will(): NonNullable<IClientOptions['will']> {
    this.conn = this.o.clock.now()
    return { topic: this.o.topics.status, payload: this.status('offline', 'connection-lost'), qos: 1, retain: true }
  }

  online(client: MqttClient): void {
    client.publish(this.o.topics.status, this.status('online'), { qos: 1, retain: true })
    if (this.o.faults.includes('update-failed') && !this.updateReported) {
      // as an agent's updater reports a release that failed its health check
      this.updateReported = true
      const ts = this.o.clock.now()
      const data = { version: '9.9.9-sim', from: VERSION, reason: 'health-check-failed', slot: 'b' }
      client.publish(this.o.topics.event, JSON.stringify({ v: 1, id: newId(ts), device: this.o.key.keyId, ts, kind: 'ota.rolled-back', data }), { qos: 1 })
    }
    clearInterval(this.timer)
    this.timer = setInterval(() => {
      if (client.connected) client.publish(this.o.topics.telemetry, this.sample(), { qos: 1 }, err => err || this.o.onTelemetryAcked?.())
    }, this.o.periodS * 1000)
  }

  offline(reason: 'shutdown'): [string, Buffer, { qos: 1; retain: true }] {
    return [this.o.topics.status, this.status('offline', reason), { qos: 1, retain: true }]
  }

  stop(): void {
    clearInterval(this.timer)
  }

  private status(state: 'online' | 'offline', reason?: StatusMessage['reason']): Buffer {
    const now = this.o.clock.now()
    const msg: StatusMessage = {
      v: 1,
      id: newId(now),
      device: this.o.key.keyId,
      fleet: this.o.fleet,
      state,
      ...(reason ? { reason } : {}),
      ts: now,
      since: this.since,
      conn: this.conn,
      version: VERSION,
      board: this.board.kind,
      model: this.board.model,
      mqtt: this.o.mqttVersion,
      publicKey: publicKeyPem(this.o.key.publicKey),
    }
    return Buffer.from(JSON.stringify(msg))
  }

  private sample(): Buffer {
    const r = this.o.random
    const hot = this.o.faults.includes('hot')
    this.tempC = Math.min(95, Math.max(hot ? 82 : 30, this.tempC + (r() - 0.5) * 2))
    this.load = Math.max(0, this.load + (r() - 0.5) * 0.2)
    const now = this.o.clock.now()
    const round = (n: number) => Math.round(n * 100) / 100
    const msg: TelemetryMessage = {
      v: 1,
      id: newId(now),
      device: this.o.key.keyId,
      ts: now,
      sample: {
        board: { ...this.board, arch: 'aarch64' },
        uptimeS: round((now - this.since) / 1000),
        load: [round(this.load), round(this.load * 0.9), round(this.load * 0.8)],
        memory: { totalBytes: 4_294_967_296, availableBytes: 2_147_483_648, usedPercent: 50 },
        disk: this.o.faults.includes('disk-full')
          ? [{ path: '/', totalBytes: 31_914_983_424, freeBytes: 900_000_000, availableBytes: 0, usedPercent: 97.2 }]
          : [{ path: '/', totalBytes: 31_914_983_424, freeBytes: 20_000_000_000, availableBytes: 18_000_000_000, usedPercent: 37.3 }],
        thermal: [{ zone: 'thermal_zone0', type: 'cpu-thermal', celsius: round(this.tempC) }],
        // a Pi's firmware flags (vcgencmd get_throttled): soft temperature limit when hot, under-voltage on a weak supply
        ...(this.board.kind === 'jetson-orin'
          ? {}
          : {
              throttle: {
                source: 'vcgencmd' as const,
                raw: `0x${((this.o.faults.includes('under-voltage') ? 0x1 : 0) | (hot ? 0x8 : 0)).toString(16)}`,
                now: { underVoltage: this.o.faults.includes('under-voltage'), armFreqCapped: false, throttled: false, softTempLimit: hot },
              },
            }),
      },
      outbox: this.backlog(now),
      ...this.io(now),
    }
    return Buffer.from(JSON.stringify(msg))
  }

  /** The GPIO an agent reports: on a Pi, the status LED showing 'online' and its line; on
   * one Pi in four (index a multiple of 4) also a local API client's output and input
   * lines; none on a Jetson (no LED configured). Levels follow the sim's clock. */
  private io(now: number): Pick<TelemetryMessage, 'io'> {
    if (this.board.kind === 'jetson-orin') return {}
    const t = Math.max(0, now - this.since)
    const lines: NonNullable<TelemetryMessage['io']>['lines'] = [{ pin: GPIO.led, holder: 'led', direction: 'out', value: t % GPIO.ledPeriodMs < GPIO.ledOnMs ? 1 : 0 }]
    if (this.o.index % 4 === 0) {
      lines.push(
        { pin: GPIO.relay, holder: 'local-api', direction: 'out', value: Math.floor(t / GPIO.relayMs) % 2 === 0 ? 0 : 1 },
        { pin: GPIO.door, holder: 'local-api', direction: 'in', value: t % GPIO.doorMs >= GPIO.doorMs - GPIO.doorOpenMs ? 0 : 1 },
      )
    }
    return { io: { led: { pin: GPIO.led, shown: 'online', source: 'agent' }, lines } }
  }

  /** The outbox backlog an agent reports with each sample: none (each sample is
   * acknowledged before the next), or with `backlog` one that has been stuck since an
   * hour before the sim started and grows by a message a second. */
  private backlog(now: number): NonNullable<TelemetryMessage['outbox']> {
    if (!this.o.faults.includes('backlog')) return { queued: 0, bytes: 0 }
    const queued = Math.min(BACKLOG.maxQueued, Math.floor(((BACKLOG.startMs + Math.max(0, now - this.since)) / 1000) * BACKLOG.perS))
    return { queued, bytes: queued * BACKLOG.rowBytes, oldestTs: this.since - BACKLOG.startMs }
  }
}
