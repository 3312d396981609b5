// The signed structures of uptime proofs: heartbeats, beacons, challenges and their
// responses, fetch requests, receive logs, attestations and fraud evidence. All of
// them are the agent core's one signing envelope (protocol/envelope.ts) with a
// `proof.*` type; this module fixes each body's schema, the hash that chains
// heartbeats and cites beacons, and the wire form. Specified byte for byte in
// docs/proofs.md.
//
// Wire form = JCS(envelope, sig included). Publishing the canonical bytes means the
// message hash is simply SHA-256 of the payload, and the signed bytes are the payload
// with `,"sig":"…"` removed: both can be checked with coreutils and OpenSSL alone.

import { Type, type Static, type TSchema } from '@sinclair/typebox'
import { Value } from '@sinclair/typebox/value'
import { canonicalJson, type Json } from './canonical.js'
import { checkEnvelope, ID_PATTERN, type Envelope } from './envelope.js'
import { sha256Hex } from './hash.js'
import { CairnError } from './errors.js'

export const ProofType = {
  heartbeat: 'proof.heartbeat',
  beacon: 'proof.beacon',
  challenge: 'proof.challenge',
  response: 'proof.response',
  fetch: 'proof.fetch',
  receiveLog: 'proof.receive-log',
  attestation: 'proof.attestation',
  evidence: 'proof.evidence',
} as const
export type ProofType = (typeof ProofType)[keyof typeof ProofType]

/** prev of the first heartbeat (seq 0). */
export const ZERO_HASH = '0'.repeat(64)

const Hash = Type.String({ pattern: '^[0-9a-f]{64}$', description: 'SHA-256, lowercase hex' })
const KeyId = Type.String({ pattern: '^[a-z2-7]{52}$', description: 'key id: lowercase base32 of the raw ed25519 public key' })
const Seq = Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER })
const Ms = Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER, description: 'ms since the Unix epoch' })
export const OWNER_PATTERN = '^[A-Za-z0-9][A-Za-z0-9:._@-]{0,127}$'

const BeaconRefSchema = Type.Object(
  {
    v: { ...KeyId, description: 'validator key id' },
    slot: Seq,
    h: { ...Hash, description: 'hash of the beacon message' },
  },
  { additionalProperties: false },
)
export type BeaconRef = Static<typeof BeaconRefSchema>

const HeartbeatBodySchema = Type.Object(
  {
    seq: { ...Seq, description: '0 for the first heartbeat of this device key, then +1 each' },
    prev: { ...Hash, description: 'hash of heartbeat seq-1 (64 zeros for seq 0)' },
    beacons: Type.Array(BeaconRefSchema, { maxItems: 16, description: 'the newest genuine beacon of each trusted validator the device has seen' }),
    tel: Type.Union([Hash, Type.Null()], { description: 'SHA-256 of JCS(latest telemetry sample), null before the first' }),
    owner: Type.Union([Type.String({ pattern: OWNER_PATTERN }), Type.Null()], { description: 'payout identity named at provisioning' }),
    period: Type.Integer({ minimum: 1, maximum: 86_400, description: "the device's heartbeat period, seconds" }),
  },
  { additionalProperties: false },
)
export type HeartbeatBody = Static<typeof HeartbeatBodySchema>

const BeaconBodySchema = Type.Object(
  {
    slot: { ...Seq, description: 'floor(slot start ms / slotMs)' },
    slotMs: Type.Integer({ minimum: 100, maximum: 86_400_000 }),
    epochSlots: Type.Integer({ minimum: 1, maximum: 100_000 }),
    rand: { ...Hash, description: '32 fresh random bytes, hex' },
  },
  { additionalProperties: false },
)
type BeaconBody = Static<typeof BeaconBodySchema>

const ChallengeBodySchema = Type.Object({ nonce: { ...Hash, description: '32 random bytes, hex' } }, { additionalProperties: false })
type ChallengeBody = Static<typeof ChallengeBodySchema>

const ResponseBodySchema = Type.Object(
  {
    challenge: Type.String({ pattern: ID_PATTERN, description: 'id of the challenge answered' }),
    ch: { ...Hash, description: 'hash of the challenge message' },
    nonce: Hash,
    seq: Type.Union([Seq, Type.Null()], { description: "the device's newest heartbeat seq, null before the first" }),
    head: Type.Union([Hash, Type.Null()], { description: 'hash of that heartbeat' }),
  },
  { additionalProperties: false },
)
export type ResponseBody = Static<typeof ResponseBodySchema>

const FetchBodySchema = Type.Object({ from: Seq, to: Seq }, { additionalProperties: false, description: 'republish stored heartbeats from..to (inclusive, at most 1000)' })

const ScoreParamsSchema = Type.Object(
  {
    slotMs: Type.Integer({ minimum: 100, maximum: Number.MAX_SAFE_INTEGER }),
    epochSlots: Type.Integer({ minimum: 1, maximum: Number.MAX_SAFE_INTEGER }),
    maxAgeMs: Type.Integer({ minimum: 1, maximum: Number.MAX_SAFE_INTEGER, description: 'a heartbeat citing beacon b counts if received within [b*slotMs, b*slotMs + maxAgeMs]' }),
    skewMs: Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER, description: 'largest |device time - receive time| accepted' }),
    wCoverage: Type.Integer({ minimum: 0, maximum: 1_000_000, description: 'weight of slot coverage, ppm' }),
    wChallenge: Type.Integer({ minimum: 0, maximum: 1_000_000, description: 'weight of the challenge pass rate, ppm' }),
  },
  { additionalProperties: false },
)
export type ScoreParams = Static<typeof ScoreParamsSchema>

const CountsSchema = Type.Object(
  {
    heartbeats: Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER, description: 'heartbeats in the epoch record' }),
    fresh: Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER, description: 'heartbeats that covered a slot or could have (fresh, genuine beacon, clock in bounds)' }),
    stale: Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER, description: 'cited no fresh beacon of this validator' }),
    badBeacon: Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER, description: 'cited a beacon this validator never published' }),
    skewed: Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER, description: 'device clock outside the bound' }),
    slotsLive: Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER, description: 'slots of the epoch in which the validator published a beacon' }),
    slotsCovered: Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER }),
    challenges: Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER }),
    passed: Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER }),
    equivocations: Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER }),
    forks: Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER }),
  },
  { additionalProperties: false },
)
export type Counts = Static<typeof CountsSchema>

const AttestationBodySchema = Type.Object(
  {
    device: KeyId,
    owner: Type.Union([Type.String({ pattern: OWNER_PATTERN }), Type.Null()]),
    epoch: Seq,
    params: ScoreParamsSchema,
    score: Type.Integer({ minimum: 0, maximum: 1_000_000, description: 'ppm; see docs/proofs.md for the formula' }),
    fraud: Type.Boolean({ description: 'the record holds two conflicting heartbeats signed by the device' }),
    counts: CountsSchema,
    root: { ...Hash, description: 'RFC 6962 Merkle root over the hashes of the epoch record, in (seq, hash) order' },
  },
  { additionalProperties: false },
)
export type AttestationBody = Static<typeof AttestationBodySchema>

const ReceiveLogBodySchema = Type.Object(
  {
    device: KeyId,
    epoch: Seq,
    heartbeats: Type.Array(Type.Tuple([Hash, Ms]), { description: '[heartbeat hash, receive time]' }),
    responses: Type.Array(Type.Tuple([Type.String({ pattern: ID_PATTERN }), Ms]), { description: '[challenge id, time its response was received]' }),
  },
  { additionalProperties: false },
)
export type ReceiveLogBody = Static<typeof ReceiveLogBodySchema>

const EvidenceKinds = ['equivocation', 'fork', 'forged-beacon', 'stale-beacon', 'replay', 'clock-skew'] as const
export type EvidenceKind = (typeof EvidenceKinds)[number]

const EvidenceBodySchema = Type.Object(
  {
    kind: Type.Union(EvidenceKinds.map(k => Type.Literal(k))),
    device: KeyId,
    note: Type.String({ maxLength: 500 }),
    /** Messages signed by the device (and, for beacon cases, the genuine beacon). */
    messages: Type.Array(Type.Unknown(), { minItems: 1, maxItems: 4 }),
    /** The validator's statement of when it received each device message, same order. */
    received: Type.Array(Ms, { maxItems: 4 }),
    params: ScoreParamsSchema,
  },
  { additionalProperties: false },
)
export type EvidenceBody = Static<typeof EvidenceBodySchema>

export const BODY_SCHEMAS = {
  [ProofType.heartbeat]: HeartbeatBodySchema,
  [ProofType.beacon]: BeaconBodySchema,
  [ProofType.challenge]: ChallengeBodySchema,
  [ProofType.response]: ResponseBodySchema,
  [ProofType.fetch]: FetchBodySchema,
  [ProofType.receiveLog]: ReceiveLogBodySchema,
  [ProofType.attestation]: AttestationBodySchema,
  [ProofType.evidence]: EvidenceBodySchema,
} satisfies Record<ProofType, TSchema>

export type ProofEnvelope<B> = Omit<Envelope, 'body'> & { body: B }
export type Heartbeat = ProofEnvelope<HeartbeatBody>
export type Beacon = ProofEnvelope<BeaconBody>
export type Challenge = ProofEnvelope<ChallengeBody>
export type Response = ProofEnvelope<ResponseBody>
export type Attestation = ProofEnvelope<AttestationBody>
export type ReceiveLog = ProofEnvelope<ReceiveLogBody>
export type Evidence = ProofEnvelope<EvidenceBody>

/** The wire form: canonical JSON of the whole envelope, signature included. */
export function encodeProof(env: Envelope | ProofEnvelope<unknown>): Buffer {
  return Buffer.from(canonicalJson(env), 'utf8')
}

/** hash(m) = SHA-256(JCS(m)), lowercase hex: chains heartbeats, cites beacons. */
export function messageHash(env: Envelope | ProofEnvelope<unknown>): string {
  return sha256Hex(canonicalJson(env))
}

/** Digest of a telemetry sample as a heartbeat carries it. */
export function telemetryDigest(sample: unknown): string {
  return sha256Hex(canonicalJson(sample))
}

export interface CheckOptions {
  fleet?: string
  /** Required signer (key id); for heartbeats and responses, the device. */
  signer?: string | ((keyId: string) => boolean)
}

/** Parses wire bytes (or an already parsed value) into a proof message of the given
 * type: envelope schema, body schema, signer and signature (checkEnvelope's checks). No
 * clock checks: those belong to the receiver, which judges freshness by its own receive
 * time. For files (exports, evidence); messages from the broker go through
 * signed-inbound.ts. Messages name the type, for a person reading a verdict. */
export function checkProof<T extends ProofType>(input: Buffer | string | unknown, type: T, opts: CheckOptions = {}): ProofEnvelope<Static<(typeof BODY_SCHEMAS)[T]>> {
  let value: unknown = input
  if (Buffer.isBuffer(input) || typeof input === 'string') {
    try {
      value = JSON.parse(input.toString())
    } catch {
      throw new CairnError('BAD_JSON', `${type}: not JSON`)
    }
  }
  const signer = opts.signer
  try {
    const env = checkEnvelope(value, {
      fleet: opts.fleet ?? null,
      sub: null,
      trusted: signer === undefined ? () => true : typeof signer === 'string' ? k => k === signer : signer,
      expectType: t => t === type,
      clock: null,
      body: e => checkBody(e, type),
    })
    return env as ProofEnvelope<Static<(typeof BODY_SCHEMAS)[T]>>
  } catch (err) {
    if (err instanceof CairnError && !err.message.startsWith(`${type}: `)) throw new CairnError(err.code, `${type}: ${err.message}`)
    throw err
  }
}

/** Checks the type and body of an envelope: its schema, and for heartbeats that prev is
 * 64 zeros exactly when seq is 0. The inbound gate (signed-inbound.ts) runs it before
 * the signature; checkProof runs it on files. */
export function checkBody<T extends ProofType>(env: Envelope, type: T): ProofEnvelope<Static<(typeof BODY_SCHEMAS)[T]>> {
  const schema = BODY_SCHEMAS[type]
  if (env.type !== type) throw new CairnError('BAD_REQUEST', `expected ${type}, got ${env.type}`)
  if (!Value.Check(schema, env.body)) {
    const first = [...Value.Errors(schema, env.body)][0]
    throw new CairnError('BAD_REQUEST', `${type}: body ${first ? `${first.path || '/'} ${first.message}` : 'invalid'}`)
  }
  if (type === ProofType.heartbeat) {
    const b = env.body as HeartbeatBody
    if ((b.seq === 0) !== (b.prev === ZERO_HASH)) throw new CairnError('BAD_REQUEST', `${type}: prev is 64 zeros exactly when seq is 0`)
  }
  return env as ProofEnvelope<Static<(typeof BODY_SCHEMAS)[T]>>
}

export function asJson<T>(v: T): Json {
  return v as unknown as Json
}
