// Offline verification for `cairn verify FILE`: an epoch export (attestation, signed
// receive log, beacons, heartbeats, challenges) or a piece of fraud evidence. No
// network and no validator state: every signature and chain link is checked and the
// score is recomputed with the same function the validator used.

import { signedBytes, type Envelope } from '../protocol/envelope.js'
import { CairnError } from '../protocol/errors.js'
import { EXPORT_FORMAT } from './attest.js'
import { checkProof, messageHash, ProofType, type Beacon, type Evidence, type Heartbeat, type Response } from '../protocol/proof-format.js'
import { scoreEpoch, type EpochRecord } from './score.js'

export interface VerifyReport {
  kind: 'export' | 'evidence'
  validator: string
  device: string
  /** For exports, the recomputed score (ppm); for evidence, absent. */
  score?: number
  /** For evidence: proven by device signatures alone (equivocation, fork). */
  fraudProven?: boolean
  lines: string[]
}

/** Throws CairnError naming the first thing that does not check. */
export function verifyProofFile(value: unknown, opts: { validator?: string } = {}): VerifyReport {
  const v = value as { format?: unknown; type?: unknown }
  if (v && v.format === EXPORT_FORMAT) return verifyExport(value, opts)
  if (v && v.type === ProofType.evidence) return verifyEvidence(value, opts)
  throw new CairnError('BAD_REQUEST', `not a Cairn proof export (format ${EXPORT_FORMAT}) or evidence (type ${ProofType.evidence})`)
}

function verifyExport(value: unknown, opts: { validator?: string }): VerifyReport {
  const x = value as Record<string, unknown>
  const att = checkProof(x.attestation, ProofType.attestation)
  const validator = att.iss
  if (opts.validator !== undefined && opts.validator !== validator) throw new CairnError('UNTRUSTED_KEY', `attestation is signed by ${validator}, not by ${opts.validator}`)
  const fleet = att.fleet
  const device = att.body.device
  if (att.sub !== device) throw new CairnError('BAD_REQUEST', 'attestation sub and body.device differ')
  const log = checkProof(x.receiveLog, ProofType.receiveLog, { fleet, signer: validator })
  if (log.body.device !== device || log.body.epoch !== att.body.epoch) throw new CairnError('BAD_REQUEST', 'receive log is for another device or epoch')
  const list = (k: string): unknown[] => {
    if (!Array.isArray(x[k])) throw new CairnError('BAD_REQUEST', `${k}: expected an array`)
    return x[k] as unknown[]
  }
  const beacons: Beacon[] = list('beacons').map(b => checkProof(b, ProofType.beacon, { fleet, signer: validator }))
  const recv = new Map<string, number>()
  for (const [hash, ms] of log.body.heartbeats) {
    if (recv.has(hash)) throw new CairnError('BAD_REQUEST', `receive log lists ${hash.slice(0, 12)}… twice`)
    recv.set(hash, ms)
  }
  const heartbeats = list('heartbeats').map(h => {
    const env: Heartbeat = checkProof(h, ProofType.heartbeat, { fleet, signer: device })
    const ms = recv.get(messageHash(env))
    if (ms === undefined) throw new CairnError('BAD_REQUEST', `heartbeat seq ${env.body.seq} has no receive time in the signed receive log`)
    return { env, recvMs: ms }
  })
  if (heartbeats.length !== recv.size) throw new CairnError('BAD_REQUEST', `receive log lists ${recv.size} heartbeats, the file holds ${heartbeats.length}`)
  const responseRecv = new Map(log.body.responses.map(([id, ms]) => [id, ms]))
  const challenges = list('challenges').map(c => {
    const { challenge, response } = c as { challenge?: unknown; response?: unknown }
    const env = checkProof(challenge, ProofType.challenge, { fleet, signer: validator })
    const resp: Response | null = response === null || response === undefined ? null : checkProof(response, ProofType.response, { fleet, signer: device })
    const ms = responseRecv.get(env.id)
    return { env, response: resp, recvMs: resp && ms !== undefined ? ms : null }
  })
  const rec: EpochRecord = { validator, device, epoch: att.body.epoch, params: att.body.params, beacons, heartbeats, challenges }
  const r = scoreEpoch(rec)
  const mismatch: string[] = []
  if (r.score !== att.body.score) mismatch.push(`score ${r.score} != attested ${att.body.score}`)
  if (r.root !== att.body.root) mismatch.push('Merkle root differs')
  if (r.fraud !== att.body.fraud) mismatch.push('fraud flag differs')
  if (r.owner !== att.body.owner) mismatch.push('owner differs')
  for (const [k, n] of Object.entries(r.counts)) if (att.body.counts[k as keyof typeof r.counts] !== n) mismatch.push(`${k} ${n} != attested ${att.body.counts[k as keyof typeof r.counts]}`)
  if (mismatch.length > 0) throw new CairnError('BAD_REQUEST', `recomputed result does not match the attestation: ${mismatch.join('; ')}`)
  const c = r.counts
  // Round trips, from the challenge's signed issue time to the signed receive time.
  const rtts = challenges
    .filter(ch => ch.recvMs !== null)
    .map(ch => ch.recvMs! - ch.env.iat)
    .sort((a, b) => a - b)
  const rtt = rtts.length ? `; round trips ${rtts[0]}–${rtts[rtts.length - 1]} ms (median ${rtts[Math.floor(rtts.length / 2)]} ms)` : ''
  return {
    kind: 'export',
    validator,
    device,
    score: r.score,
    lines: [
      `attestation: validator ${validator}, device ${device}, fleet ${fleet}, epoch ${att.body.epoch}${r.owner ? `, owner ${r.owner}` : ''}`,
      `signatures: ${heartbeats.length} heartbeats, ${beacons.length} beacons, ${challenges.length} challenges, ${challenges.filter(ch => ch.response).length} responses, receive log, attestation: all valid`,
      `chain: ${c.equivocations} equivocations, ${c.forks} forks${r.fraud ? ' (FRAUD: score is 0)' : ''}`,
      `slots: ${c.slotsCovered} covered of ${c.slotsLive} live (${c.fresh} fresh, ${c.stale} stale, ${c.badBeacon} bad beacon, ${c.skewed} skewed heartbeats); challenges ${c.passed}/${c.challenges} passed${rtt}`,
      `score: ${r.score} ppm (${(r.score / 10_000).toFixed(4)} %), matches the attestation; Merkle root ${r.root}`,
    ],
  }
}

function verifyEvidence(value: unknown, opts: { validator?: string }): VerifyReport {
  const ev: Evidence = checkProof(value, ProofType.evidence)
  const validator = ev.iss
  if (opts.validator !== undefined && opts.validator !== validator) throw new CairnError('UNTRUSTED_KEY', `evidence is signed by ${validator}, not by ${opts.validator}`)
  const { kind, device, messages, received, params } = ev.body
  const fleet = ev.fleet
  const hb = (i: number): Heartbeat => checkProof(messages[i], ProofType.heartbeat, { fleet, signer: device })
  const need = (n: number) => {
    if (messages.length < n) throw new CairnError('BAD_REQUEST', `${kind} evidence needs ${n} messages`)
  }
  const lines = [`evidence: ${kind}, device ${device}, fleet ${fleet}, stated by validator ${validator}`, `note: ${ev.body.note}`]
  const fail = (why: string) => {
    throw new CairnError('BAD_REQUEST', `${kind} evidence does not hold: ${why}`)
  }
  switch (kind) {
    case 'equivocation': {
      need(2)
      const a = hb(0)
      const second = messages[1] as { type?: unknown }
      if (second?.type === ProofType.response) {
        const r = checkProof(second, ProofType.response, { fleet, signer: device })
        if (r.body.seq !== a.body.seq || r.body.head === messageHash(a)) fail('the response does not contradict the heartbeat')
      } else {
        const b = hb(1)
        if (a.body.seq !== b.body.seq) fail('the two heartbeats have different seq')
        if (signedBytes(a as unknown as Envelope).equals(signedBytes(b as unknown as Envelope))) fail('the two heartbeats make the same signed statement')
      }
      lines.push(`PROVEN: the device signed two different statements for seq ${a.body.seq}; this needs no trust in the validator`)
      return { kind: 'evidence', validator, device, fraudProven: true, lines }
    }
    case 'fork': {
      need(2)
      const a = hb(0)
      const b = hb(1)
      if (b.body.seq !== a.body.seq + 1) fail('the heartbeats are not consecutive')
      if (b.body.prev === messageHash(a)) fail('the second heartbeat does chain to the first')
      lines.push(`PROVEN: seq ${b.body.seq} does not chain to the device's own seq ${a.body.seq}; this needs no trust in the validator`)
      return { kind: 'evidence', validator, device, fraudProven: true, lines }
    }
    case 'forged-beacon': {
      need(2)
      const a = hb(0)
      const beacon = checkProof(messages[1], ProofType.beacon, { fleet, signer: validator })
      const cite = a.body.beacons.find(b => b.v === validator)
      if (!cite || cite.slot !== beacon.body.slot) fail('the heartbeat does not cite this slot of this validator')
      if (cite!.h === messageHash(beacon)) fail('the cited beacon is the genuine one')
      lines.push(`holds: the device cited a beacon for slot ${cite!.slot} other than the one the validator signed (relies on the validator signing one beacon per slot)`)
      break
    }
    case 'stale-beacon': {
      need(1)
      const a = hb(0)
      const cite = a.body.beacons.find(b => b.v === validator)
      const at = received[0]
      if (!cite || at === undefined) fail('no citation or receive time')
      const age = at! - cite!.slot * params.slotMs
      if (age <= params.maxAgeMs) fail(`beacon age ${age} ms is within ${params.maxAgeMs} ms`)
      lines.push(`holds: received ${age} ms after its cited beacon's slot began (limit ${params.maxAgeMs} ms), by the validator's signed receive time`)
      break
    }
    case 'clock-skew': {
      need(1)
      const a = hb(0)
      const at = received[0]
      if (at === undefined) fail('no receive time')
      if (Math.abs(a.iat - at!) <= params.skewMs) fail('the clocks agree within the bound')
      lines.push(`holds: device time ${a.iat} vs receive time ${at} (bound ${params.skewMs} ms), by the validator's signed receive time`)
      break
    }
    case 'replay': {
      need(1)
      hb(0)
      const [first, again] = received
      if (first === undefined || again === undefined || again - first <= params.maxAgeMs) fail('the two receive times are not far enough apart')
      lines.push(`holds: the same signed heartbeat arrived again ${again! - first!} ms after it was first received (no credit is given twice; this does not prove the device replayed it)`)
      break
    }
  }
  return { kind: 'evidence', validator, device, fraudProven: false, lines }
}
