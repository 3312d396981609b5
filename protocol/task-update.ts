// A device's task update (accepted, started, progress, done, failed, cancelled,
// rejected), signed with the device key in the one envelope (type `task.update`), so
// nobody who can publish on the update topic can speak for the device: a forged
// "rejected" cannot end a dispatcher's wait, a forged "accepted" cannot hide a lost
// request. Bound to the dispatcher (sub = the key id that signed the request) and to the
// device (iss). Specified in docs/tasks.md ("Updates"), with a test vector.

import type { Json } from './canonical.js'
import { signEnvelope, type Envelope } from './envelope.js'
import type { CairnError } from './errors.js'
import { newId } from './ids.js'
import { isKeyId, type KeyPair } from './keys.js'
import { readSignedInbound } from './signed-inbound.js'
import { checkTaskBody, TaskMsg, type TaskUpdate, type TaskUpdateBody } from './task-format.js'

/** An update is worth reading for minutes: what reads it waits for it. */
const UPDATE_MIN_TTL_MS = 60_000
/** The longest a reader accepts (an update stored in an outbox until its task's deadline). */
const UPDATE_MAX_TTL_MS = 7 * 86_400_000

export interface SignTaskUpdate {
  fleet: string
  /** The key id that signed the request, when it named a well-formed one. */
  to: string | null
  now: number
  /** Until when the update is worth delivering (at least a minute from now). */
  exp?: number
  /** The update's own id (test vectors); a fresh one by default. */
  id?: string
}

export function signTaskUpdate(device: KeyPair, body: TaskUpdateBody, o: SignTaskUpdate): Envelope {
  const exp = Math.min(Math.max(o.exp ?? 0, o.now + UPDATE_MIN_TTL_MS), o.now + UPDATE_MAX_TTL_MS)
  return signEnvelope(device, {
    type: TaskMsg.update,
    id: o.id ?? newId(o.now),
    fleet: o.fleet,
    sub: o.to !== null && isKeyId(o.to) ? o.to : '*',
    iat: o.now,
    exp,
    body: body as unknown as Json,
  })
}

export interface ReadTaskUpdate {
  fleet: string
  /** The device that was asked: its id is its key id. */
  device: string
  /** The dispatcher who signed the request. */
  dispatcher: string
  now: number
  /** Tolerated clock difference between the reader and the device. */
  skewMs: number
  maxBytes: number
}

/** The update, if the asked device signed it for this dispatcher; otherwise why not. */
export function readTaskUpdate(payload: Buffer, o: ReadTaskUpdate): { ok: true; update: TaskUpdate; env: Envelope } | { ok: false; error: CairnError } {
  const r = readSignedInbound(payload, {
    what: TaskMsg.update,
    maxBytes: o.maxBytes,
    fleet: o.fleet,
    sub: o.dispatcher,
    trusted: keyId => keyId === o.device,
    expectType: t => t === TaskMsg.update,
    clock: { now: o.now, maxTtlMs: UPDATE_MAX_TTL_MS, skewMs: o.skewMs },
    body: env => void checkTaskBody(env, TaskMsg.update),
  })
  if (!r.ok) return { ok: false, error: r.error }
  return { ok: true, update: { ...(r.env.body as TaskUpdateBody), id: r.env.id, device: r.env.iss, ts: r.env.iat }, env: r.env }
}
