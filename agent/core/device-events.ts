// The device's events (`…/<device>/event`): each queued durably in the outbox and told
// to on-device observers (the local API, the status LED) through the local bus.

import type { Clock } from '../../protocol/clock.js'
import { newId } from '../../protocol/ids.js'
import type { EventMessage } from '../../protocol/messages.js'
import type { LocalBus } from './local-bus.js'
import { MsgClass, type NewMessage, type Outbox } from './outbox.js'

export interface DeviceEvents {
  /** An event as an outbox record, for a caller that stores it in its own transaction. */
  record(kind: string, data: Record<string, unknown>): NewMessage
  publish(kind: string, data: Record<string, unknown>): void
}

export interface DeviceEventsOptions {
  deviceId: string
  topic: string
  clock: Clock
  outbox: Outbox
  bus: LocalBus
  /** An event the outbox cannot store (full disk): sent once, QoS 0, if connected.
   * Returns false for an error that is not the disk's (then it is thrown). */
  unstored(err: unknown, topic: string, payload: Buffer): boolean
}

export function deviceEvents(o: DeviceEventsOptions): DeviceEvents {
  const message = (kind: string, data: Record<string, unknown>): EventMessage => ({ v: 1, id: newId(o.clock.now()), device: o.deviceId, ts: o.clock.now(), kind, data })
  const recordOf = (msg: EventMessage): NewMessage => ({ id: msg.id, cls: MsgClass.event, topic: o.topic, payload: Buffer.from(JSON.stringify(msg)) })
  return {
    record: (kind, data) => recordOf(message(kind, data)),
    publish: (kind, data) => {
      const msg = message(kind, data)
      const rec = recordOf(msg)
      try {
        o.outbox.enqueue(rec)
      } catch (err) {
        if (!o.unstored(err, rec.topic, rec.payload)) throw err
      }
      o.bus.emit('event', { kind, ts: msg.ts, data })
    },
  }
}
