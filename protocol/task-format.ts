// The task protocol's messages: signed requests and cancels (dispatcher -> device),
// signed updates and the signed receipt (device -> dispatcher). All are the one signing
// envelope (protocol/envelope.ts) with a `task.*` type; this module fixes each body's schema, the hash that binds a receipt to
// its request, and the receipt's wire form. Specified byte for byte in docs/tasks.md.
//
// Receipt wire form = JCS(envelope, sig included), as for proofs: its hash is SHA-256
// of the payload, and the signed bytes are the payload with `,"sig":"…"` removed.

import { createHash } from 'node:crypto'
import { Type, type Static, type TSchema } from '@sinclair/typebox'
import { Value } from '@sinclair/typebox/value'
import { canonicalJson, type Json } from './canonical.js'
import { EnvelopeSchema, ID_PATTERN, verifySignatureOnly, type Envelope } from './envelope.js'
import { CairnError, ErrorCodes } from './errors.js'
import { isKeyId, publicKeyFromKeyId } from './keys.js'

export const TaskMsg = {
  request: 'task.request',
  cancel: 'task.cancel',
  receipt: 'task.receipt',
  update: 'task.update',
} as const
export type TaskMsgType = (typeof TaskMsg)[keyof typeof TaskMsg]

const TASK_TYPES = ['inference', 'cache'] as const
const TASK_STATES = ['queued', 'running', 'done', 'failed', 'cancelled', 'rejected'] as const
export type TaskState = (typeof TASK_STATES)[number]

/** Receipts stay valid evidence forever; exp only bounds how long a relay may hold one. */
export const RECEIPT_TTL_MS = 30 * 86_400_000
export const MAX_PRIORITY = 100

const Hash = Type.String({ pattern: '^[0-9a-f]{64}$', description: 'SHA-256, lowercase hex' })
const KeyId = Type.String({ pattern: '^[a-z2-7]{52}$', description: 'key id: lowercase base32 of the raw ed25519 public key' })
const Ms = Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER, description: 'ms since the Unix epoch' })
const TaskId = Type.String({ pattern: ID_PATTERN, description: 'task id chosen by the dispatcher; a device runs each id at most once' })
const TaskTypeSchema = Type.Union(TASK_TYPES.map(t => Type.Literal(t)))
const ErrorSchema = Type.Object({ code: Type.Union(ErrorCodes.map(c => Type.Literal(c))), message: Type.String({ maxLength: 1000 }) }, { additionalProperties: false })

const TaskRequestBodySchema = Type.Object(
  {
    task: TaskId,
    type: TaskTypeSchema,
    params: Type.Unknown({ description: 'type-specific parameters (docs/tasks.md, docs/inference.md, docs/cache.md); the executor validates them' }),
    deadline: { ...Ms, description: 'the result is useless after this (ms since the Unix epoch); the task is cut off then' },
    priority: Type.Integer({ minimum: 0, maximum: MAX_PRIORITY, description: 'higher runs first; equal priorities run in arrival order' }),
  },
  { additionalProperties: false },
)
export type TaskRequestBody = Static<typeof TaskRequestBodySchema>

const TaskCancelBodySchema = Type.Object({ task: TaskId }, { additionalProperties: false })

const BlobSchema = Type.Object(
  {
    name: Type.String({ maxLength: 256 }),
    sha256: Hash,
    bytes: Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER }),
  },
  { additionalProperties: false },
)

export const TaskReceiptBodySchema = Type.Object(
  {
    task: TaskId,
    type: TaskTypeSchema,
    request: { ...Hash, description: 'SHA-256 of JCS(the task.request envelope, sig included): binds the receipt to the exact request' },
    dispatcher: { ...KeyId, description: 'key that signed the request (the device itself for a local task)' },
    local: Type.Boolean({ description: 'requested on the device (local API), not by a dispatcher' }),
    outcome: Type.Union([Type.Literal('done'), Type.Literal('failed'), Type.Literal('cancelled')]),
    error: Type.Union([ErrorSchema, Type.Null()], { description: 'why it failed or was cancelled; null when done' }),
    inputs: Type.Array(BlobSchema, { maxItems: 256, description: 'what went in, by content hash' }),
    model: Type.Union([Type.Object({ ...BlobSchema.properties, format: Type.String({ maxLength: 64 }) }, { additionalProperties: false }), Type.Null()]),
    outputs: Type.Array(BlobSchema, { maxItems: 256, description: 'what came out, by content hash' }),
    result: Type.Unknown({ description: 'the result returned (labels, object ids...), bounded by tasks.maxResultBytes; null when none' }),
    backend: Type.Union([Type.String({ maxLength: 64 }), Type.Null()], { description: 'what ran it: wasm, cpu, tensorflow, cuda, http...' }),
    timings: Type.Record(Type.String({ pattern: '^[a-z][a-zA-Z0-9]{0,31}$' }), Type.Number({ minimum: 0 }), { description: 'phases in ms (fetch, load, decode, infer...)' }),
    resources: Type.Object(
      {
        peakRssBytes: Type.Optional(Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER })),
        cpuMs: Type.Optional(Type.Number({ minimum: 0 })),
        bytesFetched: Type.Optional(Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER })),
      },
      { additionalProperties: false },
    ),
    received: { ...Ms, description: 'when the device accepted the request' },
    started: Type.Union([Ms, Type.Null()], { description: 'when it started running; null if it never ran' }),
    finished: Ms,
    attempts: Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER, description: 'times the work was started (more than 1 only for idempotent types resumed after a restart)' }),
  },
  { additionalProperties: false },
)
export type TaskReceiptBody = Static<typeof TaskReceiptBodySchema>

/** Device -> dispatcher on …/task/update: the body of a signed envelope of type
 * task.update (iss = the device, sub = the dispatcher). Signed so that nobody who can
 * publish there (a broker, another client) can speak for the device: a forged
 * `rejected` or `accepted` is refused like a forged receipt. */
const TaskUpdateBodySchema = Type.Object(
  {
    task: Type.Union([TaskId, Type.Null()], { description: 'the task, null when the request could not be read' }),
    request: Type.Union([Type.String({ pattern: ID_PATTERN }), Type.Null()], { description: 'id of the request (or cancel) envelope this answers, when known' }),
    event: Type.Union(['accepted', 'rejected', 'started', 'progress', 'done', 'failed', 'cancelled'].map(e => Type.Literal(e))),
    state: Type.Optional(
      Type.Union(
        TASK_STATES.map(s => Type.Literal(s)),
        { description: "the task's stored state (e.g. for a DUPLICATE)" },
      ),
    ),
    error: Type.Optional(ErrorSchema),
    progress: Type.Optional(Type.Number({ minimum: 0, maximum: 1 })),
    note: Type.Optional(Type.String({ maxLength: 200 })),
    position: Type.Optional(Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER, description: 'tasks ahead of this one in the queue, at acceptance' })),
    receipt: Type.Optional({ ...Hash, description: 'hash of the receipt (done/failed/cancelled); the receipt itself is on …/task/receipt' }),
  },
  { additionalProperties: false, $id: 'https://cairn.dev/schemas/task-update.json', title: 'task update (the body of a signed envelope of type task.update)' },
)
export type TaskUpdateBody = Static<typeof TaskUpdateBodySchema>
/** An update as a reader sees it once its signature checked out: the body, with the
 * envelope's id (consumers de-duplicate on it), signer and signing time. */
export type TaskUpdate = TaskUpdateBody & { id: string; device: string; ts: number }

export const TASK_BODY_SCHEMAS = {
  [TaskMsg.request]: TaskRequestBodySchema,
  [TaskMsg.cancel]: TaskCancelBodySchema,
  [TaskMsg.receipt]: TaskReceiptBodySchema,
  [TaskMsg.update]: TaskUpdateBodySchema,
} satisfies Record<TaskMsgType, TSchema>

export type TaskEnvelope<B> = Omit<Envelope, 'body'> & { body: B }
export type TaskRequest = TaskEnvelope<TaskRequestBody>
export type TaskReceipt = TaskEnvelope<TaskReceiptBody>

/** SHA-256(JCS(m)), lowercase hex: a request's hash as a receipt cites it. */
export function taskMessageHash(env: Envelope | TaskEnvelope<unknown>): string {
  return createHash('sha256').update(canonicalJson(env)).digest('hex')
}

/** The wire form of a receipt: canonical JSON of the whole envelope. */
export function encodeTaskMessage(env: Envelope | TaskEnvelope<unknown>): Buffer {
  return Buffer.from(canonicalJson(env), 'utf8')
}

/** Checks the body of an envelope whose signature was verified elsewhere. */
export function checkTaskBody<T extends TaskMsgType>(env: Envelope, type: T): TaskEnvelope<Static<(typeof TASK_BODY_SCHEMAS)[T]>> {
  if (env.type !== type) throw new CairnError('BAD_REQUEST', `expected ${type}, got ${env.type}`)
  const schema = TASK_BODY_SCHEMAS[type]
  if (!Value.Check(schema, env.body)) {
    const first = [...Value.Errors(schema, env.body)][0]
    throw new CairnError('BAD_REQUEST', `${type}: body${first ? `${first.path} ${first.message}` : ' invalid'}`)
  }
  return env as TaskEnvelope<Static<(typeof TASK_BODY_SCHEMAS)[T]>>
}

export interface ReceiptCheck {
  /** The device key id that must have signed it. */
  device?: string
  /** The request it must answer: its hash, task id, type and dispatcher must match. */
  request?: Envelope
}

/** Offline check of a receipt (wire bytes or parsed): envelope and body schema,
 * signature by its issuer, and optionally the device and the request it answers.
 * Returns the receipt and the list of what was checked. */
export function checkReceipt(input: Buffer | string | unknown, opts: ReceiptCheck = {}): { receipt: TaskReceipt; checked: string[] } {
  const checked: string[] = []
  let value: unknown = input
  if (Buffer.isBuffer(input) || typeof input === 'string') {
    try {
      value = JSON.parse(input.toString())
    } catch {
      throw new CairnError('BAD_JSON', 'receipt is not JSON')
    }
  }
  if (!Value.Check(EnvelopeSchema, value)) {
    const first = [...Value.Errors(EnvelopeSchema, value)][0]
    throw new CairnError('BAD_REQUEST', `not a signed envelope (${first ? `${first.path || '/'} ${first.message}` : 'invalid'})`)
  }
  const env = checkTaskBody(value, TaskMsg.receipt)
  checked.push('envelope and receipt body match their JSON Schemas')
  if (!isKeyId(env.iss)) throw new CairnError('BAD_REQUEST', 'iss is not a key id')
  if (env.exp <= env.iat) throw new CairnError('BAD_REQUEST', 'exp must be after iat')
  if (env.body.outcome === 'done' && env.body.error !== null) throw new CairnError('BAD_REQUEST', 'a done receipt carries no error')
  if (env.body.outcome !== 'done' && env.body.error === null) throw new CairnError('BAD_REQUEST', `a ${env.body.outcome} receipt names its error`)
  // The envelope's sub is who the receipt is for: it must be the dispatcher in the body,
  // or the body's dispatcher could differ from the envelope's addressee.
  if (env.sub !== env.body.dispatcher) throw new CairnError('BAD_REQUEST', `receipt is addressed to ${env.sub}, but names dispatcher ${env.body.dispatcher}`)
  if (env.body.local && env.body.dispatcher !== env.iss) throw new CairnError('BAD_REQUEST', 'a local receipt names the device itself as its dispatcher')
  if (!verifySignatureOnly(env as Envelope, publicKeyFromKeyId(env.iss))) throw new CairnError('BAD_SIGNATURE', 'receipt signature does not verify')
  checked.push(`ed25519 signature by ${env.iss}`)
  if (opts.device !== undefined) {
    if (env.iss !== opts.device) throw new CairnError('UNTRUSTED_KEY', `signed by ${env.iss}, not by device ${opts.device}`)
    checked.push('signer is the expected device')
  }
  if (opts.request !== undefined) {
    const input = opts.request as unknown
    if (!Value.Check(EnvelopeSchema, input)) {
      const first = [...Value.Errors(EnvelopeSchema, input)][0]
      throw new CairnError('BAD_REQUEST', `the request is not a signed envelope (${first ? `${first.path || '/'} ${first.message}` : 'invalid'})`)
    }
    const req = checkTaskBody(input, TaskMsg.request)
    checked.push('request envelope and body match their JSON Schemas')
    const hash = taskMessageHash(req)
    if (env.body.request !== hash) throw new CairnError('BAD_REQUEST', `receipt cites request ${env.body.request}, not ${hash}`)
    if (req.body.task !== env.body.task || req.body.type !== env.body.type) throw new CairnError('BAD_REQUEST', 'task id or type differ from the request')
    if (req.iss !== env.body.dispatcher) throw new CairnError('BAD_REQUEST', 'dispatcher differs from the request signer')
    if (req.sub !== env.iss) throw new CairnError('BAD_REQUEST', `the request was for ${req.sub}, not for the signer ${env.iss}`)
    if (req.fleet !== env.fleet) throw new CairnError('BAD_REQUEST', `the request was for fleet ${req.fleet}, the receipt is for ${env.fleet}`)
    checked.push(`bound to request ${req.id} (sha256 ${hash}), same task, type, dispatcher, device and fleet`)
    if (!isKeyId(req.iss) || !verifySignatureOnly(req, publicKeyFromKeyId(req.iss))) throw new CairnError('BAD_SIGNATURE', 'request signature does not verify')
    checked.push(`request signature by ${req.iss}`)
  }
  return { receipt: env, checked }
}

export function asJson<T>(v: T): Json {
  return v as unknown as Json
}
