// The validator's ingest path with no broker: a real store in a temp dir, beacons
// written as Validator.beacon writes them, heartbeats signed by a test device key and
// fed to ProofIngest.handle with chosen receive times. Every scenario ends in the exact
// verdict, evidence and score, and the export re-checks offline to the same numbers.

import t, { type Test } from 'tap'
import { createHash, randomBytes } from 'node:crypto'
import { signEnvelope } from '../../protocol/envelope.js'
import { newId } from '../../protocol/ids.js'
import { generateKeyPair, type KeyPair } from '../../protocol/keys.js'
import { attestEpoch, buildExport, loadRecord, type ProofExport } from '../../validator/attest.js'
import {
  asJson,
  encodeProof,
  messageHash,
  ProofType,
  ZERO_HASH,
  type Attestation,
  type Beacon,
  type Challenge,
  type Counts,
  type Evidence,
  type Heartbeat,
  type HeartbeatBody,
  type ResponseBody,
  type ScoreParams,
} from '../../protocol/proof-format.js'
import { ProofIngest, type IngestOutcome } from '../../validator/ingest.js'
import { DEFAULT_WEIGHTS, scoreEpoch } from '../../validator/score.js'
import { openValidatorDb, pinParams, type VDb } from '../../validator/validator-store.js'
import { verifyProofFile } from '../../validator/verify-export.js'
import { tmp } from '../helpers/agent.js'

const FLEET = 'test'
const P: ScoreParams = { slotMs: 1000, epochSlots: 10, maxAgeMs: 1000, skewMs: 5000, ...DEFAULT_WEIGHTS }
const EPOCH = 2_000_000
/** Absolute slot number and start time (ms) of slot `i` of the epoch under test. */
const slot = (i: number) => EPOCH * P.epochSlots + i
const at = (i: number) => slot(i) * P.slotMs
const ALL = [...Array(P.epochSlots).keys()]
const hex = (s: string) => createHash('sha256').update(s).digest('hex')
const counts = (c: Partial<Counts>): Counts => ({
  heartbeats: 0,
  fresh: 0,
  stale: 0,
  badBeacon: 0,
  skewed: 0,
  slotsLive: 0,
  slotsCovered: 0,
  challenges: 0,
  passed: 0,
  equivocations: 0,
  forks: 0,
  ...c,
})
const json = <T>(b: Buffer): T => JSON.parse(b.toString()) as T
/** The kinds of evidence an ingest outcome recorded. */
const kinds = (o: IngestOutcome) => (o.kind === 'heartbeat' ? o.evidence.map(e => (e.body as { kind: string }).kind) : [])

/** A device key and its chain head, as the agent keeps them. */
class Device {
  readonly key = generateKeyPair()
  head: { seq: number; hash: string } | undefined
  sign(iat: number, cite: Beacon | null, over: Partial<HeartbeatBody> = {}, key: KeyPair = this.key): Heartbeat {
    const beacons = cite ? [{ v: cite.iss, slot: cite.body.slot, h: messageHash(cite) }] : []
    const body: HeartbeatBody = { seq: this.head ? this.head.seq + 1 : 0, prev: this.head?.hash ?? ZERO_HASH, beacons, tel: null, owner: 'payout:dana', period: 1, ...over }
    return signEnvelope(key, { type: ProofType.heartbeat, id: newId(iat), fleet: FLEET, sub: '*', iat, exp: iat + 86_400_000, body: asJson(body) }) as unknown as Heartbeat
  }
  /** Signs the next heartbeat of the chain and moves the head. */
  beat(iat: number, cite: Beacon | null, over: Partial<HeartbeatBody> = {}): Heartbeat {
    const hb = this.sign(iat, cite, over)
    this.head = { seq: hb.body.seq, hash: messageHash(hb) }
    return hb
  }
}

class World {
  readonly db: VDb
  readonly v = generateKeyPair()
  readonly dev = new Device()
  readonly ingest: ProofIngest
  readonly topic: string
  private readonly beacons = new Map<number, Beacon>()

  /** `skewMs` other than P's: the slots and epoch stay P's. */
  constructor(
    t: Test,
    live: readonly number[] = ALL,
    readonly p: ScoreParams = P,
  ) {
    this.db = openValidatorDb(tmp('cairn-ingest-'))
    t.teardown(() => this.db.close())
    pinParams(this.db, p, this.v.keyId, FLEET)
    this.ingest = new ProofIngest({ db: this.db, fleet: FLEET, key: this.v, params: p })
    this.topic = `cairn/v1/${FLEET}/${this.dev.key.keyId}/proof`
    for (const i of live) this.beacon(i)
  }

  /** Publishes (stores) the beacon of slot i as Validator.beacon does. */
  beacon(i: number): Beacon {
    const now = at(i) + 2
    const env = signEnvelope(this.v, {
      type: ProofType.beacon,
      id: newId(now),
      fleet: FLEET,
      sub: '*',
      iat: now,
      exp: at(i + 2) + P.maxAgeMs,
      body: { slot: slot(i), slotMs: P.slotMs, epochSlots: P.epochSlots, rand: randomBytes(32).toString('hex') },
    }) as unknown as Beacon
    this.db.prepare('INSERT INTO beacons (slot, hash, published, payload) VALUES (?, ?, ?, ?)').run(slot(i), messageHash(env), now, Buffer.from(JSON.stringify(env)))
    this.beacons.set(i, env)
    return env
  }

  b(i: number): Beacon {
    return this.beacons.get(i)!
  }

  send(msg: object, recvMs: number, topic = this.topic) {
    return this.ingest.handle(topic, encodeProof(msg as Heartbeat), recvMs)
  }

  /** The honest heartbeat of slot i: cites its beacon, sent and received 200 ms in. */
  honest(i: number, offset = 200) {
    return this.send(this.dev.beat(at(i) + offset, this.b(i)), at(i) + offset)
  }

  count(table: string): number {
    return (this.db.prepare(`SELECT COUNT(*) AS n FROM ${table}`).get() as { n: number }).n
  }

  evidence(kind?: string): Evidence[] {
    const rows = this.db.prepare('SELECT payload FROM evidence WHERE kind = COALESCE(?, kind) ORDER BY created, id').all(kind ?? null) as Array<{ payload: Buffer }>
    return rows.map(r => json<Evidence>(r.payload))
  }

  verdict(hb: Heartbeat) {
    return scoreEpoch(loadRecord(this.db, this.v.keyId, this.p, this.dev.key.keyId, EPOCH)).heartbeatVerdicts.get(messageHash(hb))
  }

  /** Attests the epoch, exports it and re-verifies the export offline. */
  attest(t: Test): { att: Attestation; x: ProofExport } {
    const now = at(P.epochSlots) + 5000
    const { env: att } = attestEpoch(this.db, this.v, FLEET, this.p, this.dev.key.keyId, EPOCH, now)
    const x = JSON.parse(JSON.stringify(buildExport(this.db, this.v, FLEET, this.p, this.dev.key.keyId, EPOCH, now))) as ProofExport
    const report = verifyProofFile(x, { validator: this.v.keyId })
    t.equal(report.score, att.body.score, 'the offline check reproduces the attested score')
    return { att, x }
  }
}

t.test('an honest device in every slot scores 1,000,000', async t => {
  const w = new World(t)
  for (const i of ALL) t.same(w.honest(i), { kind: 'heartbeat', device: w.dev.key.keyId, seq: i, verdict: 'new', evidence: [] })
  const { att, x } = w.attest(t)
  t.same(att.body.counts, counts({ heartbeats: 10, fresh: 10, slotsLive: 10, slotsCovered: 10 }))
  t.equal(att.body.score, 1_000_000)
  t.equal(att.body.fraud, false)
  t.equal(att.body.owner, 'payout:dana')
  t.equal(x.heartbeats.length, 10)
  t.equal(w.count('evidence'), 0)
})

t.test('a device offline for slots 3-6 covers 6 of 10: exactly 600,000', async t => {
  const w = new World(t)
  for (const i of [0, 1, 2, 7, 8, 9]) w.honest(i)
  const { att } = w.attest(t)
  t.same(att.body.counts, counts({ heartbeats: 6, fresh: 6, slotsLive: 10, slotsCovered: 6 }))
  t.equal(att.body.score, 600_000)
  t.equal(w.count('evidence'), 0, 'being offline is not misconduct')
})

t.test('validator down in slots 2-3: those slots are not live, the device still scores 1,000,000', async t => {
  const w = new World(t, [0, 1, 4, 5, 6, 7, 8, 9])
  w.honest(0)
  w.honest(1)
  // Meanwhile the device keeps beating on its period, citing the newest beacon it has.
  const late = [2, 3].map(i => w.send(w.dev.beat(at(i) + 200, w.b(1)), at(i) + 200))
  for (const i of [4, 5, 6, 7, 8, 9]) w.honest(i)
  const { att } = w.attest(t)
  t.same(att.body.counts, counts({ heartbeats: 10, fresh: 8, stale: 2, slotsLive: 8, slotsCovered: 8 }))
  t.equal(att.body.score, 1_000_000)
  t.same(
    late.map(o => kinds(o)),
    [[], []],
    'no evidence against a device for the validator being down',
  )
  t.equal(w.count('evidence'), 0)
})

t.test('validator down longer than skewMs: the backlog delivered at its restart is no evidence', async t => {
  const w = new World(t, [0, 1, 9])
  w.honest(0)
  w.honest(1)
  // Slots 2-8: the device beats every slot citing beacon 1; the broker queues them for
  // the validator and delivers them all 100 ms into slot 9, before its new beacon is out.
  const backlog = [2, 3, 4, 5, 6, 7, 8].map(i => w.dev.beat(at(i) + 200, w.b(1)))
  t.same(
    backlog.map(hb => kinds(w.send(hb, at(9) + 100))),
    backlog.map(() => []),
    'delivery delay is not clock skew',
  )
  w.honest(9)
  const { att } = w.attest(t)
  t.same(att.body.counts, counts({ heartbeats: 10, fresh: 3, stale: 7, slotsLive: 3, slotsCovered: 3 }))
  t.equal(att.body.score, 1_000_000)
  t.equal(w.count('evidence'), 0)
})

t.test('a forged signature is refused and nothing is stored', async t => {
  const w = new World(t)
  const hb = w.dev.beat(at(0) + 200, w.b(0))
  const sig = hb.sig.slice(0, 10) + (hb.sig[10] === 'A' ? 'B' : 'A') + hb.sig.slice(11)
  t.throws(() => w.send({ ...hb, sig }, at(0) + 200), { name: 'CairnError', code: 'BAD_SIGNATURE' })
  t.same([w.count('heartbeats'), w.count('devices'), w.count('evidence')], [0, 0, 0])
})

t.test('a beacon forged without the validator key: bad-beacon, evidence, slot not covered', async t => {
  const w = new World(t)
  for (const i of [0, 1, 2, 3, 4]) w.honest(i)
  // Same slot, other randomness, the validator's id; its signature cannot verify.
  const forged: Beacon = { ...w.b(5), body: { ...w.b(5).body, rand: hex('mallory') } }
  const hb = w.dev.beat(at(5) + 200, forged)
  const out = w.send(hb, at(5) + 200)
  t.match(out, { kind: 'heartbeat', verdict: 'new' })
  const ev = w.evidence()
  t.same(
    ev.map(e => e.body.kind),
    ['forged-beacon'],
  )
  t.same(ev[0]!.body.messages, [hb, w.b(5)], 'the heartbeat and the genuine beacon of that slot')
  t.equal(w.verdict(hb), 'bad-beacon')
  const report = verifyProofFile(ev[0], { validator: w.v.keyId })
  t.equal(report.fraudProven, false, 'relies on the validator signing one beacon per slot')
  for (const i of [6, 7, 8, 9]) w.honest(i)
  const { att } = w.attest(t)
  t.same(att.body.counts, counts({ heartbeats: 10, fresh: 9, badBeacon: 1, slotsLive: 10, slotsCovered: 9 }))
  t.equal(att.body.score, 900_000)
})

t.test('a copy of a stored heartbeat, however late, is a duplicate and no evidence', async t => {
  const w = new World(t)
  for (const i of ALL) w.honest(i)
  const rows = w.db.prepare('SELECT payload, recv FROM heartbeats WHERE seq = ?')
  // The agent resending outbox records whose acknowledgement a kill -9 kept it from
  // recording (seconds later), a QoS 1 redelivery (at once), someone replaying it (an
  // epoch later): the same signed bytes each time.
  for (const [seq, later] of [
    [2, 5000],
    [3, 100],
    [4, 20_000],
  ] as const) {
    const first = rows.get(seq) as { payload: Buffer; recv: number }
    t.same(w.send(json(first.payload), first.recv + later), { kind: 'heartbeat', device: w.dev.key.keyId, seq, verdict: 'duplicate', evidence: [] }, `seq ${seq} again ${later} ms later`)
    t.equal((rows.get(seq) as { recv: number }).recv, first.recv, 'the first receive time stands')
  }
  t.equal(w.count('heartbeats'), 10)
  t.equal(w.count('evidence'), 0)
  const { att } = w.attest(t)
  t.same(att.body.counts, counts({ heartbeats: 10, fresh: 10, slotsLive: 10, slotsCovered: 10 }))
  t.equal(att.body.score, 1_000_000)
})

t.test('reordering: seq 2 before seq 1 is no fork, both count', async t => {
  const w = new World(t)
  w.honest(0)
  const one = w.dev.beat(at(1) + 100, w.b(1))
  const two = w.dev.beat(at(1) + 200, w.b(1))
  t.same(w.send(two, at(1) + 300), { kind: 'heartbeat', device: w.dev.key.keyId, seq: 2, verdict: 'new', evidence: [], fetch: { from: 1, to: 1 } }, 'a gap below seq 2, for now')
  t.same(w.send(one, at(1) + 400), { kind: 'heartbeat', device: w.dev.key.keyId, seq: 1, verdict: 'new', evidence: [] })
  for (const i of ALL.slice(2)) w.honest(i)
  t.same([w.verdict(one), w.verdict(two)], ['fresh', 'fresh'])
  const { att } = w.attest(t)
  t.same(att.body.counts, counts({ heartbeats: 11, fresh: 11, slotsLive: 10, slotsCovered: 10 }))
  t.equal(att.body.score, 1_000_000)
  t.equal(w.count('evidence'), 0)
})

t.test('equivocation: two heartbeats with one seq are proven fraud, score 0', async t => {
  const w = new World(t)
  for (const i of [0, 1, 2, 3, 4]) w.honest(i)
  const prev = (w.db.prepare('SELECT hash FROM heartbeats WHERE seq = 3').get() as { hash: string }).hash
  const twin = w.dev.sign(at(4) + 600, w.b(4), { seq: 4, prev })
  const out = w.send(twin, at(4) + 600)
  t.match(out, { seq: 4, verdict: 'new' })
  t.same(kinds(out), ['equivocation'])
  const report = verifyProofFile(w.evidence('equivocation')[0], { validator: w.v.keyId })
  t.equal(report.fraudProven, true)
  for (const i of [5, 6, 7, 8, 9]) w.honest(i)
  const { att } = w.attest(t)
  t.equal(att.body.fraud, true)
  t.equal(att.body.score, 0)
  t.same(att.body.counts, counts({ heartbeats: 11, fresh: 11, slotsLive: 10, slotsCovered: 10, equivocations: 1 }))
})

t.test('fork: seq n+1 that does not chain to seq n is proven fraud, score 0', async t => {
  const w = new World(t)
  for (const i of [0, 1, 2, 3, 4]) w.honest(i)
  const out = w.send(w.dev.beat(at(5) + 200, w.b(5), { prev: hex('another history') }), at(5) + 200)
  t.same(kinds(out), ['fork'])
  t.equal(verifyProofFile(w.evidence('fork')[0]).fraudProven, true)
  for (const i of [6, 7, 8, 9]) w.honest(i)
  const { att } = w.attest(t)
  t.equal(att.body.fraud, true)
  t.equal(att.body.score, 0)
  t.same(att.body.counts, counts({ heartbeats: 10, fresh: 10, slotsLive: 10, slotsCovered: 10, forks: 1 }))
})

/** A clock bound of one slot, so the stale-beacon rule can be shown within one epoch. */
const TIGHT: ScoreParams = { ...P, skewMs: 1000 }

t.test('stale: back to citing slot 4 in slot 7, after heartbeats that cited slots 5 and 6', async t => {
  const w = new World(t, ALL, TIGHT)
  for (const i of [0, 1, 2, 3, 4, 5, 6]) w.honest(i)
  // Beacon 5 was out before heartbeat seq 6 was signed, and that heartbeat reached the
  // validator before this one was signed: the device had the newer beacon.
  const hb = w.dev.beat(at(7) + 200, w.b(4))
  const out = w.send(hb, at(7) + 200)
  t.same(kinds(out), ['stale-beacon'])
  t.match(verifyProofFile(w.evidence('stale-beacon')[0]), { fraudProven: false, lines: [/evidence: stale-beacon/, /note:/, /received 3200 ms after/] })
  t.equal(w.verdict(hb), 'stale')
  for (const i of [8, 9]) w.honest(i)
  const { att } = w.attest(t)
  t.same(att.body.counts, counts({ heartbeats: 10, fresh: 9, stale: 1, slotsLive: 10, slotsCovered: 9 }))
  t.equal(att.body.score, 900_000)
})

// Honest devices that could not see the newest beacon when they signed: none of them is
// evidence, whatever the receive times look like.
t.test('signed during a broker outage, citing the last beacon the device saw, received seconds later: no evidence', async t => {
  const w = new World(t)
  for (const i of [0, 1, 2]) w.honest(i)
  // The broker goes down early in slot 3: the validator stored beacon 3 but it never
  // reached the device, which signs citing beacon 2; its outbox sends it 4 s later, once
  // the broker is back, well past the beacon's max age and within the clock bound.
  const hb = w.dev.beat(at(3) + 200, w.b(2))
  t.same(kinds(w.send(hb, at(3) + 4200)), [], 'no stale-beacon: the newer beacon was out too briefly before it signed')
  for (const i of [7, 8, 9]) w.honest(i)
  t.equal(w.count('evidence'), 0)
})

t.test('a device that lost its own link while the validator kept beaconing: no evidence, even with a tight clock bound', async t => {
  const w = new World(t, ALL, TIGHT)
  for (const i of [0, 1]) w.honest(i)
  // Offline from late in slot 1 until 500 ms into slot 6: beacons 2-5 never reach it; it
  // signs in slots 2-6 citing beacon 1 and sends them all on reconnecting.
  const offline = [2, 3, 4, 5, 6].map(i => w.dev.beat(at(i) + 200, w.b(1)))
  t.same(
    offline.map(hb => kinds(w.send(hb, at(6) + 500))),
    offline.map(() => []),
    'beacons it could not receive are not held against it',
  )
  for (const i of [7, 8, 9]) w.honest(i)
  t.equal(w.count('evidence'), 0)
  const { att } = w.attest(t)
  t.same(att.body.counts, counts({ heartbeats: 10, fresh: 5, stale: 5, slotsLive: 10, slotsCovered: 5 }))
})

t.test('a device clock 60 s off: skewed, clock-skew evidence once per epoch', async t => {
  const w = new World(t)
  w.beacon(P.epochSlots + 1)
  const skewed = (i: number) => w.send(w.dev.beat(at(i) + 200 - 60_000, w.b(i)), at(i) + 200)
  // From its very first heartbeat: the device is new to the validator.
  t.same([0, 1].map(skewed).map(kinds), [['clock-skew'], []], 'evidence for the first skewed heartbeat only')
  for (const i of [2, 3, 4]) w.honest(i)
  skewed(5)
  for (const i of [6, 7, 8, 9]) w.honest(i)
  t.equal(w.evidence('clock-skew').length, 1, 'once in the epoch')
  skewed(P.epochSlots + 1)
  t.equal(w.evidence('clock-skew').length, 2, 'again in the next epoch')
  t.equal(verifyProofFile(w.evidence('clock-skew')[0]).fraudProven, false)
  const { att } = w.attest(t)
  t.same(att.body.counts, counts({ heartbeats: 10, fresh: 7, skewed: 3, slotsLive: 10, slotsCovered: 7 }))
  t.equal(att.body.score, 700_000)
})

t.test('challenges: passed, late, unanswered and wrong nonce, by the exact formula', async t => {
  const w = new World(t, [0, 1, 2, 3, 4, 5, 6, 7, 8])
  for (const i of [0, 1, 2, 3, 4, 5, 6]) w.honest(i)
  const challenge = (i: number): Challenge => {
    const now = at(i) + 500
    const env = signEnvelope(w.v, {
      type: ProofType.challenge,
      id: newId(now),
      fleet: FLEET,
      sub: w.dev.key.keyId,
      iat: now,
      exp: now + 1500,
      body: { nonce: randomBytes(32).toString('hex') },
    }) as unknown as Challenge
    w.db.prepare('INSERT INTO challenges (id, device, sent, deadline, payload) VALUES (?, ?, ?, ?, ?)').run(env.id, w.dev.key.keyId, now, env.exp, Buffer.from(JSON.stringify(env)))
    return env
  }
  const respond = (c: Challenge, recvMs: number, over: Partial<ResponseBody> = {}) => {
    const body: ResponseBody = { challenge: c.id, ch: messageHash(c), nonce: c.body.nonce, seq: w.dev.head!.seq, head: w.dev.head!.hash, ...over }
    return w.send(signEnvelope(w.dev.key, { type: ProofType.response, id: newId(recvMs), fleet: FLEET, sub: w.v.keyId, iat: c.iat + 50, exp: c.exp, body: asJson(body) }), recvMs)
  }
  const [passed, late, silent, wrong] = [1, 2, 3, 4].map(challenge) as [Challenge, Challenge, Challenge, Challenge]
  t.same(respond(passed, passed.exp), { kind: 'response', device: w.dev.key.keyId, challenge: passed.id, recorded: true, evidence: [] }, 'a response at the deadline itself is in time')
  t.same(respond(passed, passed.exp + 10), { kind: 'response', device: w.dev.key.keyId, challenge: passed.id, recorded: false, evidence: [] }, 'only the first response counts')
  respond(late, late.exp + 1)
  respond(wrong, wrong.iat + 100, { nonce: hex('not the nonce') })
  const r = scoreEpoch(loadRecord(w.db, w.v.keyId, P, w.dev.key.keyId, EPOCH))
  t.same(
    [passed, late, silent, wrong].map(c => r.challengeVerdicts.get(c.id)),
    ['passed', 'late', 'no-response', 'bad-response'],
  )
  const { att } = w.attest(t)
  t.same(att.body.counts, counts({ heartbeats: 7, fresh: 7, slotsLive: 9, slotsCovered: 7, challenges: 4, passed: 1 }))
  t.equal(att.body.score, Math.floor((800_000 * 7 * 4 + 200_000 * 1 * 9) / (9 * 4)))
  t.equal(att.body.score, 672_222)
})

t.test('a gap: seq 5 after seq 2 asks for 3-4, once a slot; the fetched copies are no evidence', async t => {
  const w = new World(t)
  for (const i of [0, 1, 2]) w.honest(i)
  // Seq 3 and 4 (slots 3 and 4) are lost on the way; in slot 5 the device signs 5-8.
  const s3 = w.dev.beat(at(3) + 200, w.b(3))
  const s4 = w.dev.beat(at(4) + 200, w.b(4))
  const [s5, s6, s7, s8] = [5, 6, 7, 8].map(seq => w.dev.beat(at(5) + 100 + seq, w.b(5))) as [Heartbeat, Heartbeat, Heartbeat, Heartbeat]
  t.same(w.send(s5, at(5) + 200), { kind: 'heartbeat', device: w.dev.key.keyId, seq: 5, verdict: 'new', evidence: [], fetch: { from: 3, to: 4 } })
  t.notOk('fetch' in w.send(s6, at(5) + 300), 'seq 6 chains to seq 5: no gap below it')
  t.notOk('fetch' in w.send(s8, at(5) + 400), 'seq 7 is missing too, but the last fetch was less than a slot ago')
  // The fetched copies are late by the validator's own doing: no stale-beacon or clock-skew evidence.
  for (const hb of [s3, s4, s7]) t.same(w.send(hb, at(5) + 500), { kind: 'heartbeat', device: w.dev.key.keyId, seq: hb.body.seq, verdict: 'new', evidence: [] }, `fetched seq ${hb.body.seq}`)
  t.same([w.verdict(s3), w.verdict(s4)], ['stale', 'stale'], 'they earn nothing')
  // The device answered the fetch with a wider range than asked: copies, not replays.
  const copies = w.db.prepare('SELECT payload FROM heartbeats WHERE seq < 3 ORDER BY seq').all() as Array<{ payload: Buffer }>
  for (const c of copies) t.same(kinds(w.send(json(c.payload), at(7) + 500)), [], 'a duplicate without evidence')
  t.equal(w.count('evidence'), 0)
  t.equal(w.count('heartbeats'), 9)
  t.same(scoreEpoch(loadRecord(w.db, w.v.keyId, P, w.dev.key.keyId, EPOCH)).coveredSlots, [0, 1, 2, 5].map(slot))
})

t.test('bad input is refused with a clear code and nothing is stored', async t => {
  const w = new World(t)
  const hb = w.dev.beat(at(0) + 200, w.b(0))
  const other = new Device()
  const { sig: _sig, ...unsigned } = hb
  const cases: Array<[string, () => unknown, string]> = [
    ['not JSON', () => w.ingest.handle(w.topic, Buffer.from('{"v":1,'), at(0)), 'BAD_JSON'],
    ['JSON null', () => w.ingest.handle(w.topic, Buffer.from('null'), at(0)), 'BAD_REQUEST'],
    ['a telemetry topic', () => w.send(hb, at(0), `cairn/v1/${FLEET}/${w.dev.key.keyId}/telemetry`), 'BAD_REQUEST'],
    ['another fleet', () => w.send(hb, at(0), `cairn/v1/other/${w.dev.key.keyId}/proof`), 'BAD_REQUEST'],
    ['a device id that is no key id', () => w.send(hb, at(0), `cairn/v1/${FLEET}/pi-42/proof`), 'BAD_REQUEST'],
    ["another device's topic", () => w.send(other.beat(at(0), w.b(0)), at(0)), 'UNTRUSTED_KEY'],
    ['signed for another fleet', () => w.send(signEnvelope(w.dev.key, { ...hb, fleet: 'other', body: asJson(hb.body) }), at(0)), 'WRONG_TARGET'],
    ['unknown type', () => w.send(signEnvelope(w.dev.key, { ...hb, type: 'proof.gossip', body: asJson(hb.body) }), at(0)), 'BAD_REQUEST'],
    ['a beacon on the proof topic', () => w.send(w.b(0), at(0)), 'BAD_REQUEST'],
    ['a body that breaks the schema', () => w.send(signEnvelope(w.dev.key, { ...hb, body: asJson({ ...hb.body, seq: -1 }) }), at(0)), 'BAD_REQUEST'],
    ['an envelope without sig', () => w.send(unsigned, at(0)), 'BAD_REQUEST'],
  ]
  for (const [what, fn, code] of cases) t.throws(fn, { name: 'CairnError', code }, what)
  t.same([w.count('heartbeats'), w.count('devices'), w.count('evidence'), w.count('challenges')], [0, 0, 0, 0])
})

t.test('a tampered export does not verify, and says why', async t => {
  const w = new World(t)
  for (const i of ALL) w.honest(i)
  const { x } = w.attest(t)
  const copy = () => JSON.parse(JSON.stringify(x)) as ProofExport
  const resign = (env: { type: string; id: string; fleet: string; sub: string; iat: number; exp: number; body: unknown }) => signEnvelope(w.v, { ...env, body: asJson(env.body) }) as never

  const recv = copy()
  recv.receiveLog.body.heartbeats[3]![1] += 1
  t.throws(() => verifyProofFile(recv), { code: 'BAD_SIGNATURE', message: /proof\.receive-log: signature does not verify/ }, 'one receive time changed')

  const dropped = copy()
  dropped.heartbeats.splice(4, 1)
  t.throws(() => verifyProofFile(dropped), { code: 'BAD_REQUEST', message: /receive log lists 10 heartbeats, the file holds 9/ }, 'one heartbeat dropped')

  const score = copy()
  score.attestation.body.score = 999_999
  t.throws(() => verifyProofFile(score), { code: 'BAD_SIGNATURE', message: /proof\.attestation: signature does not verify/ }, 'the score changed')

  // The validator itself re-signing a different story is caught by the recomputation.
  const inflated = copy()
  inflated.attestation = resign({ ...inflated.attestation, body: { ...inflated.attestation.body, score: 999_999 } })
  t.throws(() => verifyProofFile(inflated), { code: 'BAD_REQUEST', message: /score 1000000 != attested 999999/ })
  const shrunk = copy()
  shrunk.heartbeats.splice(4, 1)
  shrunk.receiveLog = resign({ ...shrunk.receiveLog, body: { ...shrunk.receiveLog.body, heartbeats: shrunk.receiveLog.body.heartbeats.filter((_, i) => i !== 4) } })
  t.throws(() => verifyProofFile(shrunk), { code: 'BAD_REQUEST', message: /score 900000 != attested 1000000/ }, 'a heartbeat dropped and the log re-signed')

  t.throws(() => verifyProofFile(x, { validator: generateKeyPair().keyId }), { code: 'UNTRUSTED_KEY' }, 'signed by another validator than the one named')
  t.equal(verifyProofFile(copy()).score, 1_000_000, 'the untouched export still verifies')
})

// Review findings: one device key must not be able to flood the validator, and honest
// delays must not read as misconduct.
t.test('a flood of conflicting heartbeats for one seq: one evidence, two rows, no more', async t => {
  const w = new World(t)
  w.honest(0)
  const twins = [1, 2, 3, 4, 5].map(k => w.dev.sign(at(1) + 200 + k, w.b(1)))
  t.same(kinds(w.send(twins[0]!, at(1) + 300)), [], 'the first is just a heartbeat')
  t.same(kinds(w.send(twins[1]!, at(1) + 301)), ['equivocation'], 'the second proves equivocation')
  for (const hb of twins.slice(2)) t.same(w.send(hb, at(1) + 302), { kind: 'heartbeat', device: w.dev.key.keyId, seq: 1, verdict: 'duplicate', evidence: [] }, 'later ones prove nothing new')
  t.equal(w.count('evidence'), 1)
  t.equal((w.db.prepare('SELECT COUNT(*) AS n FROM heartbeats WHERE seq = 1').get() as { n: number }).n, 2)
})

t.test('a response naming another head for a stored seq is equivocation evidence, proven offline', async t => {
  const w = new World(t)
  w.honest(0)
  w.honest(1)
  const now = at(1) + 500
  const c = signEnvelope(w.v, {
    type: ProofType.challenge,
    id: newId(now),
    fleet: FLEET,
    sub: w.dev.key.keyId,
    iat: now,
    exp: now + 1500,
    body: { nonce: randomBytes(32).toString('hex') },
  }) as unknown as Challenge
  w.db.prepare('INSERT INTO challenges (id, device, sent, deadline, payload) VALUES (?, ?, ?, ?, ?)').run(c.id, w.dev.key.keyId, now, c.exp, Buffer.from(JSON.stringify(c)))
  const body: ResponseBody = { challenge: c.id, ch: messageHash(c), nonce: c.body.nonce, seq: 1, head: hex('another history') }
  const out2 = w.send(signEnvelope(w.dev.key, { type: ProofType.response, id: newId(now + 10), fleet: FLEET, sub: w.v.keyId, iat: now + 10, exp: c.exp, body: asJson(body) }), now + 20)
  t.equal(out2.kind, 'response')
  const ev = w.evidence('equivocation')
  t.equal(ev.length, 1)
  t.equal(verifyProofFile(ev[0]).fraudProven, true, 'the device signed two heads for seq 1')
  const { att } = w.attest(t)
  t.equal(att.body.fraud, true)
  t.equal(att.body.score, 0)
})

t.test('a backlog flushed after an outage is not stale-beacon evidence; an oversized message is refused unread', async t => {
  const w = new World(t)
  w.honest(0)
  // Offline in slots 1-2: the agent keeps signing, citing beacon 0, and sends it all at
  // slot 9, longer after signing than the clock bound (5 s): a delivery delay.
  const backlog = [1, 2].map(i => w.dev.beat(at(i) + 200, w.b(0)))
  for (const hb of backlog) t.same(kinds(w.send(hb, at(9) + 100)), [], `seq ${hb.body.seq}: late, not a cheat`)
  t.equal(w.count('evidence'), 0)
  t.throws(() => w.ingest.handle(w.topic, Buffer.alloc(20_000, 0x20), at(9) + 200), { code: 'TOO_LARGE' })
})

t.test('one batch judges each message as one handle after another would: chains, copies, equivocation, forks, gaps, refusals', async t => {
  // The same messages, in the same order, to two stores: one at a time, and in one batch
  // (one transaction), as the validator hands over what arrived in one turn.
  const one = new World(t)
  const batch = new World(t)
  const d = one.dev
  const msgs: Buffer[] = []
  const hb = (i: number, over: Partial<HeartbeatBody> = {}) => d.sign(at(i) + 200, one.b(i), over)
  const chain: Heartbeat[] = []
  for (let i = 0; i < 5; i++) chain.push(d.beat(at(i) + 200, one.b(i)))
  msgs.push(...chain.slice(0, 3).map(h => encodeProof(h)))
  msgs.push(encodeProof(chain[1]!)) // a copy, in the batch that stored it
  msgs.push(encodeProof(hb(2, { seq: 2, prev: messageHash(chain[1]!), owner: 'payout:mallory' }))) // a twin of seq 2
  msgs.push(encodeProof(chain[4]!)) // a gap: seq 4 before seq 3
  msgs.push(encodeProof(chain[3]!)) // the gap filled
  msgs.push(encodeProof(hb(5, { seq: 5, prev: 'ee'.repeat(32) }))) // seq 5 that does not chain to seq 4
  msgs.push(Buffer.from('{"v":1,')) // refused
  msgs.push(encodeProof(hb(2, { seq: 2, prev: messageHash(chain[1]!), owner: 'payout:eve' }))) // a third seq 2: nothing new
  // the other world's beacons are other keys' signatures: give it these
  for (const row of one.db.prepare('SELECT slot, hash, published, payload FROM beacons').all() as Array<Record<string, unknown>>) {
    batch.db.prepare('INSERT OR REPLACE INTO beacons (slot, hash, published, payload) VALUES (?, ?, ?, ?)').run(row.slot, row.hash, row.published, row.payload)
  }
  const recv = at(5) + 300
  const summary = (o: IngestOutcome) => (o.kind === 'heartbeat' ? `${o.seq} ${o.verdict} [${kinds(o).join()}]${o.fetch ? ` fetch ${o.fetch.from}-${o.fetch.to}` : ''}` : o.kind)
  const each = msgs.map(m => {
    try {
      return summary(one.ingest.handle(one.topic, m, recv))
    } catch (err) {
      return `refused ${(err as { code: string }).code}`
    }
  })
  // batch world: the validator key differs, so it signs its own evidence; the device is the same
  const batchIngest = new ProofIngest({ db: batch.db, fleet: FLEET, key: one.v, params: P })
  const together = batchIngest
    .handleBatch(
      msgs.map(payload => ({ topic: one.topic, payload })),
      () => recv,
    )
    .map(r => (r.ok ? summary(r.outcome) : `refused ${(r.error as unknown as { code: string }).code}`))
  t.same(together, each, 'the same verdict, evidence and fetch for every message')
  t.same(each, ['0 new []', '1 new []', '2 new []', '1 duplicate []', '2 new [equivocation]', '4 new [] fetch 3-3', '3 new []', '5 new [fork]', 'refused BAD_JSON', '2 duplicate []'])
  const rows = (w: World) => w.db.prepare('SELECT device, seq, hash, recv FROM heartbeats ORDER BY seq, hash').all()
  t.same(rows(batch), rows(one), 'the same heartbeats stored')
  const ev = (w: World) => w.db.prepare('SELECT device, kind, created FROM evidence ORDER BY created, kind').all()
  t.same(ev(batch), ev(one), 'the same evidence stored')
  const dev = (w: World) => w.db.prepare('SELECT * FROM devices').all()
  t.same(dev(batch), dev(one), 'the same device row')
})
