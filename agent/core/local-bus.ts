// In-process fan-out of what the agent does, for on-device observers (the local API,
// Node-RED through it, the status LED). Nothing here crosses the network: MQTT
// publishing stays with the outbox. Listeners must be quick and must not throw.

import { EventEmitter } from 'node:events'
import type { TelemetrySample } from '../../hw/index.js'

export interface LocalEvent {
  /** e.g. agent.started, proof.heartbeat, task.accepted, ota.staged, link.up */
  kind: string
  ts: number
  data: Record<string, unknown>
}

export interface LocalEvents {
  telemetry: [sample: TelemetrySample, ts: number]
  event: [LocalEvent]
}

export class LocalBus extends EventEmitter<LocalEvents> {
  constructor() {
    super({ captureRejections: false })
    // Every local-API client adds listeners; the API caps its own client count.
    this.setMaxListeners(0)
  }
}
