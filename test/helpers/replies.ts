// Reading a device's signed replies and task updates from the wire, as tests see them:
// the envelope's signature checked against the device's key (its id), then the body as
// the command's sender or the task's dispatcher reads it.

import { EnvelopeSchema, verifySignatureOnly, type Envelope } from '../../protocol/envelope.js'
import { publicKeyFromKeyId } from '../../protocol/keys.js'
import { Value } from '@sinclair/typebox/value'
import type { TaskUpdate } from '../../protocol/task-format.js'
import { readTaskUpdate } from '../../protocol/task-update.js'

export interface OpenedReply {
  id: string | null
  status: 'ok' | 'error'
  data?: unknown
  error?: { code: string; message: string }
  /** who the reply is addressed to: the command's signer, or * */
  to: string
  /** the body as signed (for schema checks) */
  body: Record<string, unknown>
}

/** The reply if `json` is an envelope of type reply that `device` signed; else undefined. */
export function openReply(json: unknown, device: string): OpenedReply | undefined {
  if (!Value.Check(EnvelopeSchema, json)) return undefined
  const env = json as Envelope
  if (env.type !== 'reply' || env.iss !== device) return undefined
  if (!verifySignatureOnly(env, publicKeyFromKeyId(device))) return undefined
  const body = env.body as { cmd: string | null; status: 'ok' | 'error'; data?: unknown; error?: { code: string; message: string } }
  return {
    id: body.cmd,
    status: body.status,
    ...(body.data !== undefined ? { data: body.data } : {}),
    ...(body.error ? { error: body.error } : {}),
    to: env.sub,
    body: env.body as Record<string, unknown>,
  }
}

/** A task update as `device` signed it (for whoever it names as its addressee); throws,
 * failing the test, if it is anything else. */
export function verifiedUpdate(payload: Buffer, device: string, fleet: string): TaskUpdate {
  const sub = (JSON.parse(payload.toString('utf8')) as { sub?: unknown } | null)?.sub
  const r = readTaskUpdate(payload, { fleet, device, dispatcher: typeof sub === 'string' ? sub : '', now: Date.now(), skewMs: 60_000, maxBytes: 1 << 20 })
  if (!r.ok) throw new Error(`task update not signed by the device: ${r.error.code}: ${r.error.message}: ${payload.toString('utf8').slice(0, 300)}`)
  return r.update
}
