// A device's reply to a command, signed with the device key in the one envelope
// (type `reply`), so a broker, or anyone who can publish on the reply topic, cannot put
// words in a device's mouth ("operator-revoke: ok" from a device that never ran it).
// Bound to the command (body.cmd = its id), to the operator who signed it (sub = their
// key id) and to the device (iss = its key id, which is its device id). Specified byte
// for byte in docs/protocol.md ("Replies"), with a test vector.

import { Type, type Static } from '@sinclair/typebox'
import { Value } from '@sinclair/typebox/value'
import type { Json } from './canonical.js'
import { ID_PATTERN, signEnvelope, type Envelope } from './envelope.js'
import { CairnError, ErrorCodes } from './errors.js'
import { newId } from './ids.js'
import { isKeyId, type KeyPair } from './keys.js'
import { readSignedInbound } from './signed-inbound.js'

export const REPLY_TYPE = 'reply'
/** A reply is evidence for minutes, not days: what reads it waits for it. */
const REPLY_MIN_TTL_MS = 60_000
/** The longest a reader accepts (a reply stored in an outbox through an outage). */
const REPLY_MAX_TTL_MS = 7 * 86_400_000

const Cmd = Type.Union([Type.String({ pattern: ID_PATTERN }), Type.Null()], { description: 'id of the command this answers; null when the command could not be read' })
export const ReplyBodySchema = Type.Union(
  [
    Type.Object({ cmd: Cmd, status: Type.Literal('ok'), data: Type.Unknown() }, { additionalProperties: false }),
    Type.Object(
      {
        cmd: Cmd,
        status: Type.Literal('error'),
        error: Type.Object({ code: Type.Union(ErrorCodes.map(c => Type.Literal(c))), message: Type.String({ maxLength: 2000 }) }, { additionalProperties: false }),
      },
      { additionalProperties: false },
    ),
  ],
  { $id: 'https://cairn.dev/schemas/reply.json', title: 'reply (the body of a signed envelope of type reply)' },
)
type ReplyBody = Static<typeof ReplyBodySchema>

/** What a command came to, as its sender reads it once the signature checked out. */
export type ReplyMessage = { id: string | null; status: 'ok'; data: unknown } | { id: string | null; status: 'error'; error: { code: string; message: string } }

export interface SignReply {
  fleet: string
  /** The key id of the command's signer, when the command named a well-formed one. */
  to: string | null
  now: number
  /** The command's own expiry: the reply lives at least as long (and at least a minute). */
  exp?: number | undefined
  /** The reply's own id (test vectors); a fresh one by default. */
  id?: string
}

export function signReply(device: KeyPair, reply: ReplyMessage, o: SignReply): Envelope {
  const { id, ...rest } = reply
  const body = { cmd: id, ...rest } as ReplyBody
  const exp = Math.max(o.exp ?? 0, o.now + REPLY_MIN_TTL_MS)
  return signEnvelope(device, { type: REPLY_TYPE, id: o.id ?? newId(o.now), fleet: o.fleet, sub: o.to !== null && isKeyId(o.to) ? o.to : '*', iat: o.now, exp, body: body as unknown as Json })
}

export interface ReadReply {
  fleet: string
  /** The device that was asked: its id is its key id. */
  device: string
  /** The operator who signed the command. */
  operator: string
  /** The command's id. */
  cmd: string
  now: number
  /** Tolerated clock difference between the reader and the device. */
  skewMs: number
  maxBytes: number
}

/** The reply, if it is the asked device's signed answer to this command; otherwise why not. */
export function readReply(payload: Buffer, o: ReadReply): { ok: true; reply: ReplyMessage; env: Envelope } | { ok: false; error: CairnError } {
  const r = readSignedInbound(payload, {
    what: 'reply',
    maxBytes: o.maxBytes,
    fleet: o.fleet,
    sub: o.operator,
    trusted: keyId => keyId === o.device,
    expectType: t => t === REPLY_TYPE,
    clock: { now: o.now, maxTtlMs: REPLY_MAX_TTL_MS, skewMs: o.skewMs },
    body: env => {
      if (!Value.Check(ReplyBodySchema, env.body)) throw new CairnError('BAD_REQUEST', 'reply: body is not a reply')
      if ((env.body as ReplyBody).cmd !== o.cmd) throw new CairnError('WRONG_TARGET', 'reply: answers another command')
    },
  })
  if (!r.ok) return { ok: false, error: r.error }
  const { cmd, ...rest } = r.env.body as ReplyBody
  return { ok: true, reply: { id: cmd, ...rest } as ReplyMessage, env: r.env }
}
