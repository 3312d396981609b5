// The telemetry loop: samples the hardware every telemetry.periodS, queues the sample
// on the telemetry topic (lowest outbox class: the first dropped when the outbox is
// full), mirrors the values into /metrics and tells on-device observers. The newest
// sample is kept for the parts that read it (heartbeats, task heat checks, uptime).
// Each message also carries the outbox backlog (for the fleet's backlog alert) and, when
// the agent has any, its GPIO lines and status LED (`io`, from whoever composes the agent).

import type { TelemetrySample } from '../../hw/index.js'
import type { Clock } from '../../protocol/clock.js'
import { newId } from '../../protocol/ids.js'
import type { Logger } from '../../protocol/log.js'
import type { TelemetryMessage } from '../../protocol/messages.js'
import type { LocalBus } from './local-bus.js'
import type { Metrics } from './metrics.js'
import { MsgClass, type Outbox } from './outbox.js'

export interface TelemetryLoopOptions {
  deviceId: string
  topic: string
  clock: Clock
  log: Logger
  outbox: Outbox
  metrics: Metrics
  bus: LocalBus
  periodS(): number
  sample(): Promise<TelemetrySample>
  /** The GPIO lines and status LED to report (agent/agent.ts passes the device UI's),
   * undefined when there is nothing: the message then has no `io`. Called once a sample,
   * so it must answer from memory. */
  io?(): TelemetryMessage['io']
}

export class TelemetryLoop {
  private timer: NodeJS.Timeout | undefined
  private stopped = false
  private last: TelemetrySample | undefined

  constructor(private readonly o: TelemetryLoopOptions) {}

  /** The newest sample taken, if any. */
  get lastSample(): TelemetrySample | undefined {
    return this.last
  }

  /** The first sample at once, then one per period. */
  start(): void {
    this.schedule(0)
  }

  /** The period changed: the next sample comes one new period from now. */
  reschedule(): void {
    if (!this.stopped) this.schedule(this.o.periodS() * 1000)
  }

  stop(): void {
    this.stopped = true
    if (this.timer) clearTimeout(this.timer)
  }

  private schedule(delayMs: number): void {
    if (this.timer) clearTimeout(this.timer)
    this.timer = setTimeout(() => {
      void this.sampleOnce().then(() => {
        if (!this.stopped) this.schedule(this.o.periodS() * 1000)
      })
    }, delayMs)
  }

  private async sampleOnce(): Promise<void> {
    const o = this.o
    try {
      const sample = await o.sample()
      this.last = sample
      // Read before this message is queued: it does not count itself (see backlog()).
      const outbox = backlog(o.outbox)
      const io = o.io?.()
      const msg: TelemetryMessage = { v: 1, id: newId(o.clock.now()), device: o.deviceId, ts: o.clock.now(), sample, outbox, ...(io ? { io } : {}) }
      o.outbox.enqueue({ id: msg.id, cls: MsgClass.telemetry, topic: o.topic, payload: Buffer.from(JSON.stringify(msg)) })
      mirrorTelemetry(o.metrics, sample)
      o.bus.emit('telemetry', sample, msg.ts)
    } catch (err) {
      o.log.error({ err }, 'telemetry sample failed')
    }
  }
}

/** The outbox backlog, read BEFORE this sample is queued: `queued` counts the messages
 * waiting ahead of it, not the sample itself, so an idle, connected device reports 0
 * (not 1) and a sample never counts itself as waiting. */
function backlog(outbox: Outbox): NonNullable<TelemetryMessage['outbox']> {
  const oldestTs = outbox.oldestCreated()
  return { queued: outbox.depth(), bytes: outbox.sizeBytes(), ...(oldestTs !== undefined ? { oldestTs } : {}) }
}

function mirrorTelemetry(m: Metrics, s: TelemetrySample): void {
  const set = (name: string, v: number | undefined, labels?: Record<string, string>) => {
    if (v !== undefined && Number.isFinite(v)) m.set(name, v, labels)
  }
  set('cairn_cpu_percent', s.cpu?.percent)
  set('cairn_load1', s.load?.[0])
  set('cairn_memory_used_percent', s.memory?.usedPercent)
  set('cairn_uptime_seconds', s.uptimeS)
  m.clear('cairn_thermal_celsius')
  for (const z of s.thermal ?? []) set('cairn_thermal_celsius', z.celsius, { zone: z.zone, type: z.type })
  if (s.throttle) set('cairn_throttled', s.throttle.now.throttled ? 1 : 0)
  if (s.throttle) set('cairn_under_voltage', s.throttle.now.underVoltage ? 1 : 0)
  set('cairn_gpu_load_percent', s.gpu?.loadPercent)
  set('cairn_fan_rpm', s.fan?.rpm)
  set('cairn_power_watts', s.power?.totalWatts)
}
