// The one signing envelope for every signed Cairn message (commands, heartbeats,
// challenges, beacons, attestations, task receipts). Specified byte for byte in
// docs/protocol.md; later features reuse `signEnvelope`/`verifyEnvelope` unchanged.
//
// Signed bytes = "CAIRN-SIG-1\n" || type || "\n" || JCS(envelope without "sig").
// The type appears in the prefix (domain separation: a signature made for one
// message type can never be read as another) and again inside the canonical JSON.

import { sign as edSign, verify as edVerify, type KeyObject } from 'node:crypto'
import { Type, type Static } from '@sinclair/typebox'
import { Value } from '@sinclair/typebox/value'
import type { Json } from './canonical.js'
import { CairnError } from './errors.js'
import { isKeyId, publicKeyFromKeyId, type KeyPair } from './keys.js'
import { signingInput } from './signing-input.js'

const ENVELOPE_VERSION = 1
/** Anything that names a device or fleet in a topic: no '/', '+', '#', no spaces. */
export const NAME_PATTERN = '^[a-z0-9][a-z0-9_-]{0,63}$'
const TYPE_PATTERN = '^[a-z][a-z0-9-]*(\\.[a-z0-9][a-z0-9-]*)*$'
export const ID_PATTERN = '^[A-Za-z0-9_-]{8,64}$'

export const EnvelopeSchema = Type.Object(
  {
    v: Type.Literal(ENVELOPE_VERSION),
    type: Type.String({ pattern: TYPE_PATTERN, maxLength: 64, description: 'message type, e.g. cmd.ping; part of the domain separation' }),
    id: Type.String({ pattern: ID_PATTERN, description: 'unique message id; receivers de-duplicate on it' }),
    fleet: Type.String({ pattern: NAME_PATTERN }),
    sub: Type.String({ pattern: '^([a-z0-9][a-z0-9_-]{0,63}|\\*)$', description: 'target device id, or * for fleet-wide messages' }),
    iss: Type.String({ pattern: '^[a-z2-7]{52}$', description: "signer's key id (lowercase base32 of the raw ed25519 public key)" }),
    iat: Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER, description: 'issued at, ms since the Unix epoch' }),
    exp: Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER, description: 'expires at, ms since the Unix epoch' }),
    body: Type.Unknown({ description: 'type-specific content' }),
    // 64 bytes take 85⅓ base64url characters: the last one carries 4 unused bits. Only
    // the spelling with those bits zero is accepted, so a relay cannot re-spell a
    // signature into a "different" message (and a different hash) that still verifies.
    sig: Type.String({ pattern: '^[A-Za-z0-9_-]{85}[AQgw]$', description: 'ed25519 signature, base64url without padding (canonical: unused bits zero)' }),
  },
  { additionalProperties: false, $id: 'https://cairn.dev/schemas/envelope.json', title: 'Cairn signed envelope' },
)
export type Envelope = Static<typeof EnvelopeSchema>
export type UnsignedEnvelope = Omit<Envelope, 'sig'>

export function signedBytes(env: UnsignedEnvelope): Buffer {
  return Buffer.from(signingInput(env), 'utf8')
}

export interface SignInput {
  type: string
  id: string
  fleet: string
  sub: string
  iat: number
  exp: number
  body: Json
}

export function signEnvelope(key: KeyPair, input: SignInput): Envelope {
  const unsigned: UnsignedEnvelope = { v: ENVELOPE_VERSION, ...input, iss: key.keyId }
  const errors = [...Value.Errors(EnvelopeSchema, { ...unsigned, sig: 'A'.repeat(86) })]
  if (errors.length > 0) throw new CairnError('BAD_REQUEST', `cannot sign envelope: ${errors[0]!.path || '/'} ${errors[0]!.message}`)
  if (input.exp <= input.iat) throw new CairnError('BAD_REQUEST', 'cannot sign envelope: exp must be after iat')
  const sig = edSign(null, signedBytes(unsigned), key.privateKey).toString('base64url')
  return { ...unsigned, sig }
}

/** The checks every signed inbound message passes, in one order: shape, type, fleet,
 * target, signer, lifetime and clock, the caller's body check, and the signature last.
 * Cheap checks first: a flood of junk from an untrusted key costs a set lookup, not an
 * ed25519 verification. protocol/signed-inbound.ts runs these on raw MQTT payloads. */
export interface EnvelopeChecks {
  /** Is this key id allowed to sign this type of message? */
  trusted(keyId: string, type: string): boolean
  /** null: any fleet (a file checked offline, which names its own). */
  fleet: string | null
  /** This receiver's id; envelopes for '*' are accepted only when allowBroadcast. null
   * where the target is the caller's business: beacons are fleet-wide, and a validator
   * reads every device's proofs and ignores responses addressed to another validator. */
  sub: string | null
  allowBroadcast?: boolean
  expectType?: (type: string) => boolean
  /** Lifetime and clock checks by the receiver's clock, or null for proof messages,
   * whose freshness the receiver judges by its own rule (a heartbeat stays evidence
   * forever; a beacon is judged by its slot). */
  clock: ClockChecks | null
  /** A body schema, checked with the cheap checks (before the signature). Throws. */
  body?: (env: Envelope) => void
}

export interface ClockChecks {
  now: number
  /** Longest exp - iat accepted. */
  maxTtlMs: number
  /** Tolerated clock difference for iat in the future. */
  skewMs: number
  /** Tolerated clock difference for exp too (short-lived messages such as challenges,
   * whose lateness the sender judges by its own clock). Default 0. */
  expSkewMs?: number
}

/** Checks an already parsed envelope; throws CairnError with a stable code. Does NOT do
 * replay detection, which needs the receiver's store (see replay-guard). */
export function checkEnvelope(input: unknown, c: EnvelopeChecks): Envelope {
  if (!Value.Check(EnvelopeSchema, input)) {
    const first = [...Value.Errors(EnvelopeSchema, input)][0]
    throw new CairnError('BAD_REQUEST', `not a signed envelope: ${first ? `${first.path || '/'} ${first.message}` : 'invalid'}`)
  }
  const env = input
  if (c.expectType && !c.expectType(env.type)) throw new CairnError('BAD_REQUEST', `unexpected message type ${env.type}`)
  if (c.fleet !== null && env.fleet !== c.fleet) throw new CairnError('WRONG_TARGET', `envelope is for fleet ${env.fleet}, not ${c.fleet}`)
  if (c.sub !== null && env.sub !== c.sub && !(env.sub === '*' && c.allowBroadcast)) throw new CairnError('WRONG_TARGET', `envelope is for ${env.sub}, not this device`)
  if (!isKeyId(env.iss)) throw new CairnError('BAD_REQUEST', 'iss is not a key id')
  if (!c.trusted(env.iss, env.type)) throw new CairnError('UNTRUSTED_KEY', `key ${env.iss.slice(0, 12)}… is not trusted for ${env.type}`)
  if (env.exp <= env.iat) throw new CairnError('BAD_REQUEST', 'exp must be after iat')
  const t = c.clock
  if (t) {
    if (env.exp - env.iat > t.maxTtlMs) throw new CairnError('TTL_TOO_LONG', `lifetime ${env.exp - env.iat} ms exceeds the ${t.maxTtlMs} ms allowed`)
    if (env.iat > t.now + t.skewMs) throw new CairnError('NOT_YET_VALID', 'issued in the future (check the clocks)')
    if (env.exp + (t.expSkewMs ?? 0) <= t.now) throw new CairnError('EXPIRED', 'expired')
  }
  c.body?.(env)
  if (!verifySignatureOnly(env, cachedKey(env.iss))) throw new CairnError('BAD_SIGNATURE', 'signature does not verify')
  return env
}

/** checkEnvelope's options with the clock checks always on, for callers that verify a
 * parsed value (a served-content receipt, the test vectors). */
export interface VerifyOptions extends ClockChecks {
  trusted(keyId: string, type: string): boolean
  fleet: string
  sub: string
  allowBroadcast?: boolean
  expectType?: (type: string) => boolean
}

export function verifyEnvelope(input: unknown, opts: VerifyOptions): Envelope {
  const { now, maxTtlMs, skewMs, expSkewMs, ...rest } = opts
  return checkEnvelope(input, { ...rest, clock: { now, maxTtlMs, skewMs, ...(expSkewMs !== undefined ? { expSkewMs } : {}) } })
}

// A validator sees the same few thousand device keys over and over; importing each key
// once saves a third of the per-message cost. Bounded: cleared when it grows too big.
const keyCache = new Map<string, KeyObject>()
function cachedKey(keyId: string): KeyObject {
  let key = keyCache.get(keyId)
  if (!key) {
    if (keyCache.size >= 100_000) keyCache.clear()
    key = publicKeyFromKeyId(keyId)
    keyCache.set(keyId, key)
  }
  return key
}

export function verifySignatureOnly(env: Envelope, publicKey: KeyObject): boolean {
  return edVerify(null, signedBytes(env), publicKey, Buffer.from(env.sig, 'base64url'))
}
