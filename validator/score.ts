// The one deterministic scoring function. The validator runs it to make an
// attestation; `cairn verify` runs it again on an export file and must get the same
// numbers. Everything it reads is signed: heartbeats and responses by the device,
// beacons, challenges and the receive times by the validator. Integer arithmetic
// only (BigInt where products could grow), so every machine computes the same score.

import { CairnError } from '../protocol/errors.js'
import { merkleRoot } from './merkle.js'
import { messageHash, type Beacon, type Challenge, type Counts, type Heartbeat, type Response, type ScoreParams } from '../protocol/proof-format.js'

export const DEFAULT_WEIGHTS = { wCoverage: 800_000, wChallenge: 200_000 } as const

export interface EpochRecord {
  validator: string
  device: string
  epoch: number
  params: ScoreParams
  /** This validator's beacons for slots of the epoch. */
  beacons: readonly Beacon[]
  /** Heartbeats received in [epoch start, epoch end + maxAgeMs), with receive times. */
  heartbeats: ReadonlyArray<{ env: Heartbeat; recvMs: number }>
  /** Challenges sent in the epoch, with the response (if any) and when it came. */
  challenges: ReadonlyArray<{ env: Challenge; response: Response | null; recvMs: number | null }>
}

type HeartbeatVerdict = 'fresh' | 'stale' | 'bad-beacon' | 'skewed'
type ChallengeVerdict = 'passed' | 'no-response' | 'late' | 'bad-response' | 'conflicting-head'

export interface EpochResult {
  score: number
  fraud: boolean
  owner: string | null
  counts: Counts
  root: string
  coveredSlots: number[]
  heartbeatVerdicts: Map<string, HeartbeatVerdict>
  challengeVerdicts: Map<string, ChallengeVerdict>
}

export function epochBounds(p: Pick<ScoreParams, 'slotMs' | 'epochSlots'>, epoch: number) {
  const firstSlot = epoch * p.epochSlots
  const lastSlot = firstSlot + p.epochSlots - 1
  return { firstSlot, lastSlot, startMs: firstSlot * p.slotMs, endMs: (lastSlot + 1) * p.slotMs }
}

/** The window of receive times an epoch's record covers. */
export function recordWindow(p: ScoreParams, epoch: number): { fromMs: number; toMs: number } {
  const b = epochBounds(p, epoch)
  return { fromMs: b.startMs, toMs: b.endMs + p.maxAgeMs }
}

export function checkParams(p: ScoreParams): void {
  if (p.wCoverage + p.wChallenge !== 1_000_000) throw new CairnError('BAD_REQUEST', 'score weights must add up to 1,000,000 ppm')
}

export function scoreEpoch(rec: EpochRecord): EpochResult {
  const p = rec.params
  checkParams(p)
  const { firstSlot, lastSlot } = epochBounds(p, rec.epoch)
  const win = recordWindow(p, rec.epoch)

  const beaconHash = new Map<number, string>()
  for (const b of rec.beacons) {
    if (b.iss !== rec.validator) throw new CairnError('BAD_REQUEST', `beacon for slot ${b.body.slot} is not signed by the validator`)
    if (b.body.slot < firstSlot || b.body.slot > lastSlot) throw new CairnError('BAD_REQUEST', `beacon slot ${b.body.slot} is outside epoch ${rec.epoch}`)
    if (b.body.slotMs !== p.slotMs || b.body.epochSlots !== p.epochSlots) throw new CairnError('BAD_REQUEST', `beacon for slot ${b.body.slot} disagrees with the slot parameters`)
    if (beaconHash.has(b.body.slot)) throw new CairnError('BAD_REQUEST', `two beacons for slot ${b.body.slot}`)
    beaconHash.set(b.body.slot, messageHash(b))
  }

  const counts: Counts = { heartbeats: 0, fresh: 0, stale: 0, badBeacon: 0, skewed: 0, slotsLive: beaconHash.size, slotsCovered: 0, challenges: 0, passed: 0, equivocations: 0, forks: 0 }
  const covered = new Set<number>()
  const verdicts = new Map<string, HeartbeatVerdict>()
  const bySeq = new Map<number, Set<string>>()
  const hashes: Array<{ seq: number; hash: string }> = []
  let newest: Heartbeat | undefined

  for (const { env, recvMs } of rec.heartbeats) {
    if (env.iss !== rec.device) throw new CairnError('BAD_REQUEST', `heartbeat ${env.id} is not signed by device ${rec.device}`)
    if (recvMs < win.fromMs || recvMs >= win.toMs) throw new CairnError('BAD_REQUEST', `heartbeat ${env.id} was received outside epoch ${rec.epoch}'s window`)
    const hash = messageHash(env)
    if (verdicts.has(hash)) throw new CairnError('BAD_REQUEST', `heartbeat ${hash.slice(0, 12)}… appears twice`)
    counts.heartbeats++
    hashes.push({ seq: env.body.seq, hash })
    const same = bySeq.get(env.body.seq) ?? new Set<string>()
    same.add(hash)
    bySeq.set(env.body.seq, same)
    if (!newest || env.body.seq > newest.body.seq) newest = env

    const v = heartbeatVerdict(env, recvMs, rec.validator, p, firstSlot, lastSlot, beaconHash)
    verdicts.set(hash, v)
    if (v === 'fresh') {
      counts.fresh++
      covered.add(env.body.beacons.find(b => b.v === rec.validator)!.slot)
    } else if (v === 'stale') counts.stale++
    else if (v === 'bad-beacon') counts.badBeacon++
    else counts.skewed++
  }

  // Chain: two hashes for one seq is equivocation; a heartbeat whose prev matches
  // none of the heartbeats one seq below it is a fork.
  const prevOf = new Map<string, string>()
  for (const { env } of rec.heartbeats) prevOf.set(messageHash(env), env.body.prev)
  for (const set of bySeq.values()) if (set.size > 1) counts.equivocations += set.size - 1
  for (const { seq, hash } of hashes) {
    const below = bySeq.get(seq - 1)
    if (seq > 0 && below && !below.has(prevOf.get(hash)!)) counts.forks++
  }

  const challengeVerdicts = new Map<string, ChallengeVerdict>()
  for (const c of rec.challenges) {
    if (c.env.iss !== rec.validator || c.env.sub !== rec.device) throw new CairnError('BAD_REQUEST', `challenge ${c.env.id} is not from the validator to this device`)
    counts.challenges++
    const v = challengeVerdict(c, rec, bySeq)
    challengeVerdicts.set(c.env.id, v)
    if (v === 'passed') counts.passed++
    if (v === 'conflicting-head') counts.equivocations++
  }

  counts.slotsCovered = covered.size
  const fraud = counts.equivocations > 0 || counts.forks > 0
  hashes.sort((a, b) => a.seq - b.seq || (a.hash < b.hash ? -1 : a.hash > b.hash ? 1 : 0))
  return {
    score: fraud ? 0 : combine(p, counts),
    fraud,
    owner: newest?.body.owner ?? null,
    counts,
    root: merkleRoot(hashes.map(x => x.hash)),
    coveredSlots: [...covered].sort((a, b) => a - b),
    heartbeatVerdicts: verdicts,
    challengeVerdicts,
  }
}

function heartbeatVerdict(env: Heartbeat, recvMs: number, validator: string, p: ScoreParams, firstSlot: number, lastSlot: number, beaconHash: ReadonlyMap<number, string>): HeartbeatVerdict {
  const cite = env.body.beacons.find(b => b.v === validator)
  if (!cite || cite.slot < firstSlot || cite.slot > lastSlot) return 'stale'
  const genuine = beaconHash.get(cite.slot)
  if (genuine === undefined || genuine !== cite.h) return 'bad-beacon'
  const slotStart = cite.slot * p.slotMs
  if (recvMs < slotStart || recvMs > slotStart + p.maxAgeMs) return 'stale'
  if (Math.abs(env.iat - recvMs) > p.skewMs) return 'skewed'
  return 'fresh'
}

function challengeVerdict(c: EpochRecord['challenges'][number], rec: EpochRecord, bySeq: ReadonlyMap<number, ReadonlySet<string>>): ChallengeVerdict {
  const r = c.response
  if (!r || c.recvMs === null) return 'no-response'
  if (r.iss !== rec.device || r.sub !== rec.validator || r.body.challenge !== c.env.id || r.body.nonce !== c.env.body.nonce || r.body.ch !== messageHash(c.env)) return 'bad-response'
  if (c.recvMs < c.env.iat || c.recvMs > c.env.exp) return 'late'
  if (r.body.seq !== null) {
    const known = bySeq.get(r.body.seq)
    if (known && r.body.head !== null && !known.has(r.body.head)) return 'conflicting-head'
  }
  return 'passed'
}

/** score (ppm) = floor(1e6 * covered/live) without challenges; with them,
 * floor((wCoverage * covered * challenges + wChallenge * passed * live) / (live * challenges)). */
function combine(p: ScoreParams, c: Counts): number {
  if (c.slotsLive === 0) return 0
  const live = BigInt(c.slotsLive)
  const cov = BigInt(c.slotsCovered)
  if (c.challenges === 0) return Number((1_000_000n * cov) / live)
  const n = BigInt(c.challenges)
  return Number((BigInt(p.wCoverage) * cov * n + BigInt(p.wChallenge) * BigInt(c.passed) * live) / (live * n))
}
