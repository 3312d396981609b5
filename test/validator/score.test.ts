import t from 'tap'
import { createHash } from 'node:crypto'
import { signEnvelope } from '../../protocol/envelope.js'
import { generateKeyPair, type KeyPair } from '../../protocol/keys.js'
import { asJson, messageHash, ProofType, ZERO_HASH, type Beacon, type Challenge, type Heartbeat, type Response, type ResponseBody, type ScoreParams } from '../../protocol/proof-format.js'
import { merkleRoot } from '../../validator/merkle.js'
import { scoreEpoch, type EpochRecord } from '../../validator/score.js'

const V = generateKeyPair()
const D = generateKeyPair()
const P: ScoreParams = { slotMs: 60_000, epochSlots: 10, maxAgeMs: 120_000, skewMs: 30_000, wCoverage: 800_000, wChallenge: 200_000 }
const EPOCH = 3_000_000
const FIRST = EPOCH * P.epochSlots
/** Start (ms) of slot `i` of the epoch. */
const at = (i: number) => (FIRST + i) * P.slotMs
const hex = (label: string) => createHash('sha256').update(label).digest('hex')
const ALL = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]

const beaconCache = new Map<number, Beacon>()
function beacon(i: number): Beacon {
  let b = beaconCache.get(i)
  if (!b) {
    const body = { slot: FIRST + i, slotMs: P.slotMs, epochSlots: P.epochSlots, rand: hex(`rand ${i}`) }
    b = signEnvelope(V, { type: ProofType.beacon, id: `beacon-${FIRST + i}`, fleet: 'demo', sub: '*', iat: at(i), exp: at(i) + P.maxAgeMs, body }) as Beacon
    beaconCache.set(i, b)
  }
  return b
}

interface Beat {
  /** Slot (index in the epoch) whose beacon is cited; null cites nothing. */
  cite: number | null
  /** Received this long after the start of the cited slot (default 1 s). */
  after?: number
  /** Device clock minus receive time (default 0). */
  skew?: number
  h?: string
  seq?: number
  prev?: string
  slotOfRecv?: number
}

let idCounter = 0
function heartbeat(seq: number, prev: string, b: Beat, key: KeyPair = D): { env: Heartbeat; recvMs: number } {
  const recvMs = at(b.cite ?? b.slotOfRecv ?? 0) + (b.after ?? 1000)
  const iat = recvMs + (b.skew ?? 0)
  const beacons = b.cite === null ? [] : [{ v: V.keyId, slot: FIRST + b.cite, h: b.h ?? messageHash(beacon(b.cite)) }]
  const body = { seq, prev, beacons, tel: null, owner: 'carol', period: 60 }
  const env = signEnvelope(key, { type: ProofType.heartbeat, id: `hb-${String(++idCounter).padStart(6, '0')}-${seq}`, fleet: 'demo', sub: '*', iat, exp: iat + 600_000, body }) as Heartbeat
  return { env, recvMs }
}

/** A well-formed chain: seq 0, 1, … each linking to the one before. */
function chain(beats: Beat[]): Array<{ env: Heartbeat; recvMs: number }> {
  const out: Array<{ env: Heartbeat; recvMs: number }> = []
  for (const [i, b] of beats.entries()) out.push(heartbeat(b.seq ?? i, b.prev ?? (i === 0 ? ZERO_HASH : messageHash(out[i - 1]!.env)), b))
  return out
}

function record(live: number[], heartbeats: EpochRecord['heartbeats'], challenges: EpochRecord['challenges'] = []): EpochRecord {
  return { validator: V.keyId, device: D.keyId, epoch: EPOCH, params: P, beacons: live.map(beacon), heartbeats, challenges }
}

function challenge(n: number, i: number): Challenge {
  const body = { nonce: hex(`nonce ${n}`) }
  return signEnvelope(V, { type: ProofType.challenge, id: `challenge-${n}`, fleet: 'demo', sub: D.keyId, iat: at(i) + 10_000, exp: at(i) + 40_000, body }) as Challenge
}

function respond(c: Challenge, over: Partial<ResponseBody> = {}, key: KeyPair = D): Response {
  const body: ResponseBody = { challenge: c.id, ch: messageHash(c), nonce: c.body.nonce, seq: null, head: null, ...over }
  return signEnvelope(key, { type: ProofType.response, id: `resp-${c.id}`, fleet: 'demo', sub: V.keyId, iat: c.iat + 200, exp: c.exp, body: asJson(body) }) as Response
}

t.test('every live slot covered scores 1,000,000', async t => {
  const hbs = chain(ALL.map(i => ({ cite: i })))
  const r = scoreEpoch(record(ALL, hbs))
  t.equal(r.score, 1_000_000)
  t.equal(r.fraud, false)
  t.match(r.counts, { heartbeats: 10, fresh: 10, slotsLive: 10, slotsCovered: 10, stale: 0, badBeacon: 0, skewed: 0 })
  t.same(
    r.coveredSlots,
    ALL.map(i => FIRST + i),
  )
  t.equal(r.owner, 'carol')
  t.equal(r.root, merkleRoot(hbs.map(h => messageHash(h.env))), 'root over the hashes in seq order')
})

t.test('k missed slots lose exactly k/live of the score', async t => {
  const hbs = chain([0, 1, 2, 4, 5, 7, 9].map(i => ({ cite: i })))
  const r = scoreEpoch(record(ALL, hbs))
  t.equal(r.counts.slotsCovered, 7)
  t.equal(r.score, 700_000)
  const one = scoreEpoch(record(ALL, chain([{ cite: 3 }])))
  t.equal(one.score, 100_000)
  t.equal(scoreEpoch(record(ALL, [])).score, 0, 'no heartbeats')
  t.equal(scoreEpoch(record([], [])).score, 0, 'no live slots')
})

t.test('stale: received more than maxAge after the cited slot began', async t => {
  const hbs = chain([{ cite: 0 }, { cite: 2, after: P.maxAgeMs }, { cite: 4, after: P.maxAgeMs + 1 }, { cite: null, slotOfRecv: 6 }])
  const r = scoreEpoch(record(ALL, hbs))
  const v = hbs.map(h => r.heartbeatVerdicts.get(messageHash(h.env)))
  t.same(v, ['fresh', 'fresh', 'stale', 'stale'], 'maxAge itself is still fresh; one ms later is stale; no citation is stale')
  t.same(r.coveredSlots, [FIRST, FIRST + 2])
  t.match(r.counts, { fresh: 2, stale: 2, slotsCovered: 2 })
  t.equal(r.score, 200_000)
})

t.test('bad-beacon: a citation that is not the hash of the validator beacon', async t => {
  const hbs = chain([{ cite: 0 }, { cite: 1, h: hex('forged') }, { cite: 5 }])
  const r = scoreEpoch(record([0, 1, 2, 3, 4, 6, 7, 8, 9], hbs))
  const v = hbs.map(h => r.heartbeatVerdicts.get(messageHash(h.env)))
  t.same(v, ['fresh', 'bad-beacon', 'bad-beacon'], 'forged hash; and a slot the validator published no beacon for')
  t.match(r.counts, { badBeacon: 2, slotsCovered: 1, slotsLive: 9 })
})

t.test('skewed: device clock further than skewMs from the receive time', async t => {
  const hbs = chain([
    { cite: 0, skew: P.skewMs },
    { cite: 1, skew: -P.skewMs - 1 },
    { cite: 2, skew: P.skewMs + 1 },
  ])
  const r = scoreEpoch(record(ALL, hbs))
  t.same(
    hbs.map(h => r.heartbeatVerdicts.get(messageHash(h.env))),
    ['fresh', 'skewed', 'skewed'],
  )
  t.match(r.counts, { skewed: 2, slotsCovered: 1 })
})

t.test('equivocation: two heartbeats for one seq are fraud and score 0', async t => {
  const hbs = chain(ALL.map(i => ({ cite: i })))
  const twin = heartbeat(4, hbs[4]!.env.body.prev, { cite: 4, after: 2000 })
  const r = scoreEpoch(record(ALL, [...hbs, twin]))
  t.equal(r.counts.equivocations, 1)
  t.equal(r.fraud, true)
  t.equal(r.score, 0)
  t.equal(r.counts.slotsCovered, 10, 'coverage is still counted, the score is not')
})

t.test('fork: a prev that is not the hash of the heartbeat one seq below is fraud', async t => {
  const hbs = chain([{ cite: 0 }, { cite: 1 }, { cite: 2, prev: hex('another history') }])
  const r = scoreEpoch(record(ALL, hbs))
  t.equal(r.counts.forks, 1)
  t.equal(r.counts.equivocations, 0)
  t.equal(r.fraud, true)
  t.equal(r.score, 0)
  // With seq 1 missing from the record there is nothing to compare with.
  const gap = scoreEpoch(record(ALL, [hbs[0]!, hbs[2]!]))
  t.equal(gap.counts.forks, 0)
})

t.test('challenges: passed, late and no-response change the score by the formula', async t => {
  const hbs = chain([0, 1, 2, 3, 4, 5, 6].map(i => ({ cite: i })))
  const [c1, c2, c3, c4] = [1, 2, 3, 4].map(n => challenge(n, n))
  const base = [
    { env: c1!, response: respond(c1!), recvMs: c1!.exp },
    { env: c2!, response: respond(c2!), recvMs: c2!.exp + 1 },
    { env: c3!, response: null, recvMs: null },
  ]
  let r = scoreEpoch(record(ALL, hbs, base))
  t.same([...r.challengeVerdicts.values()], ['passed', 'late', 'no-response'], 'a response at exp itself is in time')
  t.match(r.counts, { challenges: 3, passed: 1, slotsCovered: 7, slotsLive: 10 })
  t.equal(r.score, Math.floor((800_000 * 7 * 3 + 200_000 * 1 * 10) / (10 * 3)), '626666')
  t.equal(r.score, 626_666)

  r = scoreEpoch(record(ALL, hbs, [...base, { env: c4!, response: respond(c4!, { nonce: hex('wrong') }), recvMs: c4!.iat + 300 }]))
  t.equal(r.challengeVerdicts.get(c4!.id), 'bad-response')
  t.equal(r.score, 610_000, 'floor((800000*7*4 + 200000*1*10) / 40)')

  const wrongKey = respond(c4!, {}, generateKeyPair())
  t.equal(scoreEpoch(record(ALL, hbs, [{ env: c4!, response: wrongKey, recvMs: c4!.iat + 300 }])).challengeVerdicts.get(c4!.id), 'bad-response', 'signed by another key')

  const all = scoreEpoch(record(ALL, chain(ALL.map(i => ({ cite: i }))), [{ env: c1!, response: respond(c1!), recvMs: c1!.iat + 300 }]))
  t.equal(all.score, 1_000_000, 'every slot and every challenge')
  const none = scoreEpoch(record(ALL, [], [{ env: c1!, response: respond(c1!), recvMs: c1!.iat + 300 }]))
  t.equal(none.score, 200_000, 'challenges alone earn their weight')
})

t.test('a response naming another head for a known seq is an equivocation', async t => {
  const hbs = chain([{ cite: 0 }, { cite: 1 }])
  const c = challenge(9, 1)
  const honest = respond(c, { seq: 1, head: messageHash(hbs[1]!.env) })
  t.equal(scoreEpoch(record(ALL, hbs, [{ env: c, response: honest, recvMs: c.iat + 300 }])).challengeVerdicts.get(c.id), 'passed')
  const lying = respond(c, { seq: 1, head: hex('another head') })
  const r = scoreEpoch(record(ALL, hbs, [{ env: c, response: lying, recvMs: c.iat + 300 }]))
  t.equal(r.challengeVerdicts.get(c.id), 'conflicting-head')
  t.equal(r.counts.equivocations, 1)
  t.equal(r.fraud, true)
  t.equal(r.score, 0)
})

t.test('slots without a validator beacon are not live and do not count against the device', async t => {
  // The validator was down in slots 3 and 4; the device kept citing the newest beacon it had.
  const live = [0, 1, 2, 5, 6, 7, 8, 9]
  const cites = [0, 1, 2, 2, 2, 5, 6, 7, 8, 9]
  const hbs = chain(cites.map((c, i) => ({ cite: c, after: (i - c) * P.slotMs + 1000 })))
  const r = scoreEpoch(record(live, hbs))
  t.equal(r.counts.slotsLive, 8)
  t.equal(r.counts.stale, 1, 'slot-2 beacon cited 121 s after it began is stale')
  t.equal(r.counts.slotsCovered, 8)
  t.equal(r.score, 1_000_000)

  const partial = scoreEpoch(record([0, 1, 2, 3, 4, 5, 6, 7, 8], chain([0, 1, 2, 3, 4, 5, 6].map(i => ({ cite: i })))))
  t.equal(partial.score, 777_777, 'floor(1e6 * 7 / 9)')
})

t.test('a malformed record is refused', async t => {
  const hbs = chain([{ cite: 0 }])
  t.throws(() => scoreEpoch({ ...record(ALL, hbs), params: { ...P, wChallenge: 100_000 } }), { code: 'BAD_REQUEST' }, 'weights must add up')
  t.throws(() => scoreEpoch(record(ALL, [...hbs, hbs[0]!])), { code: 'BAD_REQUEST' }, 'a heartbeat listed twice')
  t.throws(() => scoreEpoch(record(ALL, [{ ...hbs[0]!, recvMs: at(P.epochSlots) + P.maxAgeMs }])), { code: 'BAD_REQUEST' }, 'received after the window')
  t.throws(() => scoreEpoch({ ...record(ALL, hbs), device: V.keyId }), { code: 'BAD_REQUEST' }, 'heartbeat by another key')
  t.throws(() => scoreEpoch({ ...record(ALL, hbs), validator: D.keyId }), { code: 'BAD_REQUEST' }, 'beacon by another key')
  t.throws(() => scoreEpoch({ ...record(ALL, hbs), epoch: EPOCH + 1 }), { code: 'BAD_REQUEST' }, 'beacons of another epoch')
})
