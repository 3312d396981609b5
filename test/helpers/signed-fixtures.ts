// Signed task receipts and uptime attestations as a device and a validator make them
// (the formats of protocol/task-format.ts and protocol/proof-format.ts), for tests of
// what keeps them (the fleet service).

import { createHash } from 'node:crypto'
import { signEnvelope } from '../../protocol/envelope.js'
import { newId } from '../../protocol/ids.js'
import type { KeyPair } from '../../protocol/keys.js'
import { ProofType } from '../../protocol/proof-format.js'
import { TaskMsg } from '../../protocol/task-format.js'

const sha = (s: string) => createHash('sha256').update(s).digest('hex')

/** A done cache task's receipt, signed by `signer` (the device, unless forging). */
export function signedReceipt(device: KeyPair, fleet: string, dispatcher: KeyPair, task: string, signer: KeyPair = device, error: { code: 'INTERNAL'; message: string } | null = null) {
  const now = Date.now()
  return signEnvelope(signer, {
    type: TaskMsg.receipt,
    id: newId(now),
    fleet,
    sub: dispatcher.keyId,
    iat: now,
    exp: now + 86_400_000,
    body: {
      task,
      type: 'cache',
      request: sha(task),
      dispatcher: dispatcher.keyId,
      local: false,
      outcome: error ? 'failed' : 'done',
      error,
      inputs: [],
      model: null,
      outputs: [{ name: 'object', sha256: sha('bytes'), bytes: 5 }],
      result: null,
      backend: null,
      timings: { fetch: 12 },
      resources: {},
      received: now - 100,
      started: now - 90,
      finished: now - 10,
      attempts: 1,
    },
  })
}

/** An epoch's attestation about `about` (the device, unless mislabelled), signed by `validator`. */
export function signedAttestation(validator: KeyPair, fleet: string, device: string, epoch: number, score: number, about = device) {
  const now = Date.now()
  return signEnvelope(validator, {
    type: ProofType.attestation,
    id: newId(now),
    fleet,
    sub: about,
    iat: now,
    exp: now + 365 * 86_400_000,
    body: {
      device: about,
      owner: null,
      epoch,
      params: { slotMs: 60_000, epochSlots: 60, maxAgeMs: 60_000, skewMs: 30_000, wCoverage: 800_000, wChallenge: 200_000 },
      score,
      fraud: false,
      counts: { heartbeats: 60, fresh: 59, stale: 1, badBeacon: 0, skewed: 0, slotsLive: 60, slotsCovered: 59, challenges: 2, passed: 2, equivocations: 0, forks: 0 },
      root: sha(`root${epoch}`),
    },
  })
}
