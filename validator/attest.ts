// Epoch records: read one device's epoch from the validator store, score it, sign the
// attestation, and write the self-contained export that `cairn verify` re-checks.

import { signEnvelope } from '../protocol/envelope.js'
import { CairnError } from '../protocol/errors.js'
import { newId } from '../protocol/ids.js'
import type { KeyPair } from '../protocol/keys.js'
import {
  asJson,
  messageHash,
  type Attestation,
  type AttestationBody,
  type Beacon,
  type Challenge,
  type Heartbeat,
  ProofType,
  type ReceiveLog,
  type ReceiveLogBody,
  type Response,
  type ScoreParams,
} from '../protocol/proof-format.js'
import { epochBounds, recordWindow, scoreEpoch, type EpochRecord, type EpochResult } from './score.js'
import type { VDb } from './validator-store.js'

export const EXPORT_FORMAT = 'cairn-proof-export/1'
const ATTESTATION_TTL_MS = 365 * 86_400_000

export interface ProofExport {
  format: typeof EXPORT_FORMAT
  attestation: Attestation
  receiveLog: ReceiveLog
  beacons: Beacon[]
  heartbeats: Heartbeat[]
  challenges: Array<{ challenge: Challenge; response: Response | null }>
}

const json = <T>(b: Buffer): T => JSON.parse(b.toString()) as T

export function loadRecord(db: VDb, validator: string, params: ScoreParams, device: string, epoch: number): EpochRecord {
  const b = epochBounds(params, epoch)
  const w = recordWindow(params, epoch)
  const beacons = (db.prepare('SELECT payload FROM beacons WHERE slot BETWEEN ? AND ? ORDER BY slot').all(b.firstSlot, b.lastSlot) as Array<{ payload: Buffer }>).map(r => json<Beacon>(r.payload))
  const heartbeats = (
    db.prepare('SELECT payload, recv FROM heartbeats WHERE device = ? AND recv >= ? AND recv < ? ORDER BY seq, hash').all(device, w.fromMs, w.toMs) as Array<{ payload: Buffer; recv: number }>
  ).map(r => ({
    env: json<Heartbeat>(r.payload),
    recvMs: r.recv,
  }))
  const challenges = (
    db.prepare('SELECT payload, response, recv FROM challenges WHERE device = ? AND sent >= ? AND sent < ? ORDER BY sent, id').all(device, b.startMs, b.endMs) as Array<{
      payload: Buffer
      response: Buffer | null
      recv: number | null
    }>
  ).map(r => ({
    env: json<Challenge>(r.payload),
    response: r.response ? json<Response>(r.response) : null,
    recvMs: r.response ? r.recv : null,
  }))
  return { validator, device, epoch, params, beacons, heartbeats, challenges }
}

function attestationBody(rec: EpochRecord, result: EpochResult): AttestationBody {
  return { device: rec.device, owner: result.owner, epoch: rec.epoch, params: rec.params, score: result.score, fraud: result.fraud, counts: result.counts, root: result.root }
}

/** Scores and signs one device's epoch, stores the attestation (first one wins) and
 * returns the stored one. */
export function attestEpoch(db: VDb, key: KeyPair, fleet: string, params: ScoreParams, device: string, epoch: number, now: number): { env: Attestation; created: boolean } {
  // One write transaction: the record read is exactly the one scored and stored.
  return db.transaction(() => attestLocked(db, key, fleet, params, device, epoch, now)).immediate()
}

function attestLocked(db: VDb, key: KeyPair, fleet: string, params: ScoreParams, device: string, epoch: number, now: number): { env: Attestation; created: boolean } {
  const existing = db.prepare('SELECT payload FROM attestations WHERE device = ? AND epoch = ?').get(device, epoch) as { payload: Buffer } | undefined
  if (existing) return { env: json<Attestation>(existing.payload), created: false }
  const rec = loadRecord(db, key.keyId, params, device, epoch)
  const result = scoreEpoch(rec)
  const env = signEnvelope(key, {
    type: ProofType.attestation,
    id: newId(now),
    fleet,
    sub: device,
    iat: now,
    exp: now + ATTESTATION_TTL_MS,
    body: asJson(attestationBody(rec, result)),
  }) as unknown as Attestation
  const created = db.prepare('INSERT OR IGNORE INTO attestations (device, epoch, score, payload) VALUES (?, ?, ?, ?)').run(device, epoch, result.score, Buffer.from(JSON.stringify(env))).changes === 1
  if (!created) throw new CairnError('INTERNAL', 'attestation appeared during its own transaction')
  return { env, created }
}

/** Everything needed to re-check one attestation offline. */
export function buildExport(db: VDb, key: KeyPair, fleet: string, params: ScoreParams, device: string, epoch: number, now: number): ProofExport {
  const pruned = Number((db.prepare("SELECT v FROM meta WHERE k = 'pruned_before_epoch'").get() as { v: string } | undefined)?.v ?? '0')
  if (epoch < pruned) throw new CairnError('BAD_REQUEST', `epoch ${epoch} is past retention: its raw records were pruned (epochs before ${pruned})`)
  const row = db.prepare('SELECT payload FROM attestations WHERE device = ? AND epoch = ?').get(device, epoch) as { payload: Buffer } | undefined
  if (!row) throw new CairnError('BAD_REQUEST', `no attestation for device ${device.slice(0, 12)}… in epoch ${epoch} (is the epoch over? has the validator seen the device?)`)
  const attestation = json<Attestation>(row.payload)
  const rec = loadRecord(db, key.keyId, params, device, epoch)
  const body: ReceiveLogBody = {
    device,
    epoch,
    heartbeats: rec.heartbeats.map(h => [messageHash(h.env), h.recvMs]),
    responses: rec.challenges.filter(c => c.recvMs !== null).map(c => [c.env.id, c.recvMs!]),
  }
  const receiveLog = signEnvelope(key, { type: ProofType.receiveLog, id: newId(now), fleet, sub: device, iat: now, exp: now + ATTESTATION_TTL_MS, body: asJson(body) }) as unknown as ReceiveLog
  return {
    format: EXPORT_FORMAT,
    attestation,
    receiveLog,
    beacons: [...rec.beacons],
    heartbeats: rec.heartbeats.map(h => h.env),
    challenges: rec.challenges.map(c => ({ challenge: c.env, response: c.response })),
  }
}
