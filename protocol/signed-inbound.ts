// The one gate for signed messages that arrive over MQTT (commands, fleet-wide
// commands, task requests and cancels, beacons, challenges, fetch requests, and the
// heartbeats and responses a validator reads): size cap → parse → envelope shape →
// cheap checks (type, fleet, target, trusted key, lifetime, clock, body schema) →
// signature → replay store. Every receiver calls this; none re-writes a step of it.
//
// It returns, rather than throws, so that a caller can still answer a refusal with
// what is safe to echo from an unauthenticated payload: a well-formed request id, and
// a task request's task id. Clock checks are off (clock: null) only for proof
// messages, whose freshness the receiver judges by its own rule.

import { checkEnvelope, ID_PATTERN, type ClockChecks, type Envelope } from './envelope.js'
import { checkJsonDepth } from './canonical.js'
import { CairnError } from './errors.js'
import { isKeyId } from './keys.js'
import type { ReplayStore } from './replay-guard.js'

export type SignedInboundOptions = InboundChecks & (TimedReplay | { clock: null; replay?: undefined })

interface TimedReplay {
  /** Lifetime and clock checks by the receiver's clock. */
  clock: ClockChecks
  /** Checked after the signature verified: an id seen before is refused as REPLAY. The
   * gate never admits an id: the caller admits it in the same transaction as the effect
   * it guards (the reply, the task row), so a crash between the two leaves neither and
   * the broker's redelivery is processed, not refused. Omitted by callers that must
   * decide something first: a task request whose task id is already known is answered
   * with its stored state (DUPLICATE), so a dispatcher that lost the answer can ask
   * again. A replay store needs the clock checks: they bound how long an id is kept. */
  replay?: ReplayStore
}

interface InboundChecks {
  /** Larger payloads are refused unread. */
  maxBytes: number
  fleet: string
  /** This receiver's id (see EnvelopeChecks.sub); null where the caller judges the target. */
  sub: string | null
  allowBroadcast?: boolean
  /** Is this key allowed to sign this type? Runs before the signature check. */
  trusted(keyId: string, type: string): boolean
  expectType?: (type: string) => boolean
  /** A body schema check that needs no authentication to be worth running first. */
  body?: (env: Envelope) => void
  /** Names the message in refusals, e.g. "payload", "task.request". */
  what?: string
}

/** What may be echoed in a refusal: taken from the payload before anything verified,
 * so only values that match ID_PATTERN (safe in JSON, logs and topics). */
export interface InboundEcho {
  id: string | null
  /** body.task of a task message. */
  task: string | null
  /** The key id the payload claims as its signer (what a refusal may be addressed to). */
  iss: string | null
}

export type SignedInbound = { ok: true; env: Envelope; echo: InboundEcho } | { ok: false; error: CairnError; echo: InboundEcho }

const ID_RE = new RegExp(ID_PATTERN)
const NO_ECHO: InboundEcho = { id: null, task: null, iss: null }

export function readSignedInbound(payload: Buffer, o: SignedInboundOptions): SignedInbound {
  const what = o.what ?? 'payload'
  if (payload.length > o.maxBytes) return refuse(new CairnError('TOO_LARGE', `${what} of ${payload.length} bytes exceeds ${o.maxBytes}`), NO_ECHO)
  let parsed: unknown
  try {
    parsed = JSON.parse(payload.toString('utf8'))
  } catch {
    return refuse(new CairnError('BAD_JSON', `${what} is not JSON`), NO_ECHO)
  }
  const echo = echoOf(parsed)
  try {
    // Before anything walks it recursively (the schema, the canonical bytes under the
    // signature): a body nested thousands deep is a refusal, not a stack overflow.
    checkJsonDepth(parsed)
    const env = checkEnvelope(parsed, o)
    // After the signature: only a genuine message is judged a replay. The gate does not
    // admit the id: the caller does, in the transaction that commits its effect.
    if (o.replay?.seen(env.id)) throw new CairnError('REPLAY', `message ${env.id} was already received`)
    return { ok: true, env, echo }
  } catch (err) {
    if (err instanceof CairnError) return refuse(err, echo)
    throw err
  }
}

/** A well-formed id and task id from an unverified payload; null for anything else. */
export function echoOf(parsed: unknown): InboundEcho {
  const p = parsed as { id?: unknown; iss?: unknown; body?: { task?: unknown } | null } | null
  const id = typeof p?.id === 'string' && ID_RE.test(p.id) ? p.id : null
  const task = typeof p?.body?.task === 'string' && ID_RE.test(p.body.task) ? p.body.task : null
  const iss = typeof p?.iss === 'string' && isKeyId(p.iss) ? p.iss : null
  return { id, task, iss }
}

function refuse(error: CairnError, echo: InboundEcho): SignedInbound {
  return { ok: false, error, echo }
}
