// The retained status message (`…/<device>/status`): who the device is, what runs, and
// whether it is online. Published online on every connection, offline by the Will (a
// fresh one, with a new id, for every connection) and on a clean stop. Features add
// their fields (the OTA slot, Cairn OS, the task queue) through the extension port.

import type { KeyObject } from 'node:crypto'
import type { Board } from '../../hw/index.js'
import type { Clock } from '../../protocol/clock.js'
import { newId } from '../../protocol/ids.js'
import { publicKeyPem } from '../../protocol/keys.js'
import type { StatusMessage } from '../../protocol/messages.js'
import type { StatusFields } from './extension.js'

export interface StatusOptions {
  deviceId: string
  fleet: string
  version: string
  board: Board
  publicKey: KeyObject
  mqttVersion: 4 | 5
  clock: Clock
  startedAt: number
  /** When the current broker connection was opened (its Will was made then): `conn`. */
  connectionOpenedAt(): number | undefined
  uptimeS(): number | undefined
  /** What features add, asked at each message. */
  fields(): StatusFields
  problems(): NonNullable<StatusMessage['problems']>
}

export function statusMessage(o: StatusOptions, state: 'online' | 'offline', reason?: StatusMessage['reason']): Buffer {
  const uptimeS = o.uptimeS()
  const f = o.fields()
  const problems = o.problems()
  const conn = o.connectionOpenedAt()
  const msg: StatusMessage = {
    v: 1,
    id: newId(o.clock.now()),
    device: o.deviceId,
    fleet: o.fleet,
    state,
    ...(reason ? { reason } : {}),
    ts: o.clock.now(),
    since: o.startedAt,
    ...(conn !== undefined ? { conn } : {}),
    version: o.version,
    ...(f.slot !== undefined ? { slot: f.slot } : {}),
    ...(f.os !== undefined ? { os: f.os } : {}),
    board: o.board.kind,
    model: o.board.model,
    ...(uptimeS !== undefined ? { uptimeS } : {}),
    mqtt: o.mqttVersion,
    publicKey: publicKeyPem(o.publicKey),
    ...(problems.length > 0 ? { problems } : {}),
    ...(f.tasks !== undefined ? { tasks: f.tasks } : {}),
  }
  return Buffer.from(JSON.stringify(msg))
}
