// Test vectors for the proof structures (docs/vectors/proofs-v1.json): a small but
// complete epoch record signed with fixed RFC 8032 keys, so any implementation can
// check its bytes, hashes, signatures, Merkle root and score against ours. Fully
// deterministic: fixed ids, times and "random" values, and ed25519 signs
// deterministically, so `npm run docs:gen` always writes the same file.

import { createHash } from 'node:crypto'
import { type Json } from '../../protocol/canonical.js'
import { signEnvelope, signedBytes, type Envelope, type SignInput } from '../../protocol/envelope.js'
import { keyPairFromSeed, publicKeyPem, rawPublicKey, type KeyPair } from '../../protocol/keys.js'
import {
  asJson,
  encodeProof,
  messageHash,
  ProofType,
  telemetryDigest,
  ZERO_HASH,
  type AttestationBody,
  type Beacon,
  type Challenge,
  type Heartbeat,
  type ProofEnvelope,
  type ReceiveLogBody,
  type Response,
  type ScoreParams,
} from '../../protocol/proof-format.js'
import { merkleRoot } from '../../validator/merkle.js'
import { DEFAULT_WEIGHTS, recordWindow, scoreEpoch, type EpochRecord } from '../../validator/score.js'

/** RFC 8032 section 7.1 TEST 2 and TEST 3 secret keys: anyone can recreate them. */
const DEVICE_SEED = '4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb'
const VALIDATOR_SEED = 'c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7'

const FLEET = 'demo'
const PARAMS: ScoreParams = { slotMs: 60_000, epochSlots: 60, maxAgeMs: 120_000, skewMs: 30_000, ...DEFAULT_WEIGHTS }
/** 2026-01-01T00:00:00Z: the first slot of epoch 490,896. */
const SLOT0 = 29_453_760
const T0 = SLOT0 * PARAMS.slotMs
const EPOCH = SLOT0 / PARAMS.epochSlots
const OWNER = 'alice@example.org'
const TELEMETRY = { uptimeS: 86_400, load: [0.25, 0.5, 0.75], memory: { usedPercent: 17.7 } }

/** Stand-in for random bytes: SHA-256 of a label, so the vectors never change. */
const fixedRandom = (label: string) => createHash('sha256').update(`cairn proofs-v1 vector ${label}`).digest('hex')

interface Signed<B> {
  env: ProofEnvelope<B>
  vector: ReturnType<typeof describe>
}

function describe(name: string, env: Envelope) {
  return {
    name,
    envelope: env,
    wireUtf8: encodeProof(env).toString('utf8'),
    signedBytesHex: signedBytes(env).toString('hex'),
    signatureHex: Buffer.from(env.sig, 'base64url').toString('hex'),
    hash: messageHash(env),
  }
}

function sign<B>(key: KeyPair, name: string, input: Omit<SignInput, 'fleet' | 'body'> & { body: B }): Signed<B> {
  const env = signEnvelope(key, { ...input, fleet: FLEET, body: asJson(input.body) })
  return { env: env as ProofEnvelope<B>, vector: describe(name, env) }
}

function keyInfo(seedHex: string, key: KeyPair) {
  return { seedHex, publicKeyHex: Buffer.from(rawPublicKey(key.publicKey)).toString('hex'), keyId: key.keyId, publicKeyPem: publicKeyPem(key.publicKey) }
}

export function proofVectors() {
  const device = keyPairFromSeed(DEVICE_SEED)
  const validator = keyPairFromSeed(VALIDATOR_SEED)

  // The validator's beacons for the first three slots of the epoch.
  const beacons = [0, 1, 2].map(i =>
    sign(validator, `beacon, slot ${SLOT0 + i}`, {
      type: ProofType.beacon,
      id: `vector-beacon-${SLOT0 + i}`,
      sub: '*',
      iat: T0 + i * PARAMS.slotMs,
      exp: T0 + i * PARAMS.slotMs + PARAMS.maxAgeMs,
      body: { slot: SLOT0 + i, slotMs: PARAMS.slotMs, epochSlots: PARAMS.epochSlots, rand: fixedRandom(`beacon ${SLOT0 + i}`) },
    }),
  ) as Array<Signed<Beacon['body']>>
  const cite = (b: Signed<Beacon['body']>) => [{ v: validator.keyId, slot: b.env.body.slot, h: messageHash(b.env) }]

  // Three heartbeats: seq 0 and 1 cite the beacons of slots 0 and 1; seq 2 is sent
  // before the device has seen the slot-2 beacon, so it cites slot 1 again and slot 2
  // stays uncovered (coverage 2 of 3 live slots).
  const hbAt = [5_000, 65_000, 125_000]
  const citing = [beacons[0]!, beacons[1]!, beacons[1]!]
  const heartbeats: Array<Signed<Heartbeat['body']>> = []
  for (let seq = 0; seq < 3; seq++) {
    heartbeats.push(
      sign(device, `heartbeat seq ${seq}`, {
        type: ProofType.heartbeat,
        id: `vector-heartbeat-${seq}`,
        sub: '*',
        iat: T0 + hbAt[seq]!,
        exp: T0 + hbAt[seq]! + 10 * PARAMS.slotMs,
        body: {
          seq,
          prev: seq === 0 ? ZERO_HASH : messageHash(heartbeats[seq - 1]!.env),
          beacons: cite(citing[seq]!),
          tel: seq === 0 ? null : telemetryDigest(TELEMETRY),
          owner: OWNER,
          period: 60,
        },
      }),
    )
  }
  const hbRecv = hbAt.map((ms, i) => T0 + ms + 120 - 30 * i)

  const challenge = sign<Challenge['body']>(validator, 'challenge', {
    type: ProofType.challenge,
    id: 'vector-challenge-0001',
    sub: device.keyId,
    iat: T0 + 70_000,
    exp: T0 + 100_000,
    body: { nonce: fixedRandom('challenge nonce') },
  })
  const response = sign<Response['body']>(device, 'response', {
    type: ProofType.response,
    id: 'vector-response-0001',
    sub: validator.keyId,
    iat: T0 + 70_200,
    exp: T0 + 100_000,
    body: { challenge: challenge.env.id, ch: messageHash(challenge.env), nonce: challenge.env.body.nonce, seq: 1, head: messageHash(heartbeats[1]!.env) },
  })
  const responseRecv = T0 + 70_250

  const record: EpochRecord = {
    validator: validator.keyId,
    device: device.keyId,
    epoch: EPOCH,
    params: PARAMS,
    beacons: beacons.map(b => b.env),
    heartbeats: heartbeats.map((h, i) => ({ env: h.env, recvMs: hbRecv[i]! })),
    challenges: [{ env: challenge.env, response: response.env, recvMs: responseRecv }],
  }
  const result = scoreEpoch(record)
  const { toMs } = recordWindow(PARAMS, EPOCH)

  const receiveLog = sign<ReceiveLogBody>(validator, 'receive log', {
    type: ProofType.receiveLog,
    id: `vector-receive-log-${EPOCH}`,
    sub: device.keyId,
    iat: toMs,
    exp: toMs + 30 * 86_400_000,
    body: {
      device: device.keyId,
      epoch: EPOCH,
      heartbeats: heartbeats.map((h, i) => [messageHash(h.env), hbRecv[i]!] as [string, number]),
      responses: [[challenge.env.id, responseRecv]],
    },
  })
  const attestation = sign<AttestationBody>(validator, 'attestation', {
    type: ProofType.attestation,
    id: `vector-attestation-${EPOCH}`,
    sub: device.keyId,
    iat: toMs,
    exp: toMs + 30 * 86_400_000,
    body: { device: device.keyId, owner: result.owner, epoch: EPOCH, params: PARAMS, score: result.score, fraud: result.fraud, counts: result.counts, root: result.root },
  })

  return {
    description:
      'Cairn uptime-proof test vectors v1. wire = JCS(envelope incl. sig); hash = SHA-256(wire); signedBytes = "CAIRN-SIG-1\\n" || type || "\\n" || JCS(envelope without sig). See docs/proofs.md.',
    fleet: FLEET,
    params: PARAMS,
    epoch: EPOCH,
    keys: { device: keyInfo(DEVICE_SEED, device), validator: keyInfo(VALIDATOR_SEED, validator) },
    telemetry: { sample: TELEMETRY as Json, digest: telemetryDigest(TELEMETRY) },
    messages: [...beacons.map(b => b.vector), ...heartbeats.map(h => h.vector), challenge.vector, response.vector, receiveLog.vector, attestation.vector],
    record: {
      heartbeats: heartbeats.map((h, i) => ({ hash: messageHash(h.env), recvMs: hbRecv[i]!, verdict: result.heartbeatVerdicts.get(messageHash(h.env))! })),
      challenges: [{ id: challenge.env.id, responseRecvMs: responseRecv, verdict: result.challengeVerdicts.get(challenge.env.id)! }],
      coveredSlots: result.coveredSlots,
      score: result.score,
      fraud: result.fraud,
      counts: result.counts,
      root: result.root,
    },
    merkle: merkleExample(heartbeats.map(h => messageHash(h.env))),
  }
}

/** RFC 6962 over three leaves, every intermediate hash spelled out:
 * root = H(01 || H(01 || H(00||d0) || H(00||d1)) || H(00||d2)). */
function merkleExample(leaves: string[]) {
  const h = (...hex: string[]) =>
    createHash('sha256')
      .update(Buffer.from(hex.join(''), 'hex'))
      .digest('hex')
  const leafHashes = leaves.map(d => h('00', d))
  const node01 = h('01', leafHashes[0]!, leafHashes[1]!)
  const root = h('01', node01, leafHashes[2]!)
  if (root !== merkleRoot(leaves)) throw new Error('merkle example disagrees with merkleRoot')
  return { leaves, leafHashes, node01, root, emptyRoot: merkleRoot([]) }
}
