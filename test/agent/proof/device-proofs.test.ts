// The device side of uptime proofs against real Mosquitto: forged beacons are never
// cited, a kill -9 between signing and publishing never forks the chain, stored
// heartbeats are republished byte for byte on a validator's signed request, and
// challenges are answered once, only for trusted validator keys.

import t, { type Test } from 'tap'
import { spawn, type ChildProcess } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { signEnvelope } from '../../../protocol/envelope.js'
import { loadOrCreateIdentity } from '../../../protocol/identity.js'
import { newId } from '../../../protocol/ids.js'
import type { KeyPair } from '../../../protocol/keys.js'
import { checkProof, encodeProof, messageHash, ProofType, ZERO_HASH, type Beacon, type Heartbeat } from '../../../protocol/proof-format.js'
import { sha256Hex } from '../../../protocol/hash.js'
import { openStateDb } from '../../../agent/core/state-db.js'
import { startBroker, type TestBroker } from '../../helpers/broker.js'
import { Consumer, operatorKey, sleep, startTestAgent, tmp, until, type Received } from '../../helpers/agent.js'

const FLEET = 'test'
const bundle = new URL('../../../dist/cairn.mjs', import.meta.url).pathname
let broker: TestBroker
t.before(async () => {
  broker = await startBroker()
})
t.teardown(async () => broker.close())

const sign = (key: KeyPair, type: string, sub: string, body: unknown, ttlMs = 60_000) => {
  const now = Date.now()
  return signEnvelope(key, { type, id: newId(now), fleet: FLEET, sub, iat: now, exp: now + ttlMs, body: body as never })
}
const heartbeats = (c: Consumer) => c.on('/proof').filter(m => m.json?.type === ProofType.heartbeat)
const hbOf = (m: Received) => m.json as unknown as Heartbeat

/** A running agent trusting one validator key, with a consumer on its proof topic. */
async function proofAgent(t: Test, periodS = 1) {
  const dir = tmp()
  const v = operatorKey(dir, 'validator')
  const op = operatorKey(dir, 'operator')
  const a = await startTestAgent({ url: broker.url, operatorKeys: [op.pub], values: { proof: { validatorKeys: [v.pub], jitterMs: 0, periodS } } })
  t.teardown(() => a.stop())
  const device = a.agent.deviceId
  const c = await Consumer.connect(broker.url, `cairn/v1/${FLEET}/${device}/proof`)
  t.teardown(() => c.close())
  await until(() => a.agent.link.connected, 10_000, 'agent connected and subscribed')
  const refused = (code: string) => a.agent.metrics.get('cairn_proof_refused_total', { code }) ?? 0
  const publish = (topic: string, payload: Buffer) => c.client.publishAsync(`cairn/v1/${FLEET}/${topic}`, payload, { qos: 1 })
  return { a, v, op, device, c, refused, publish }
}

t.test('a forged beacon is refused and never cited; a genuine one is', async t => {
  const { a, v, c, refused, publish } = await proofAgent(t)
  const stranger = operatorKey(tmp(), 'stranger')
  const slot = Math.floor(Date.now() / 1000) + 5
  const body = (rand: string) => ({ slot, slotMs: 1000, epochSlots: 10, rand })
  const genuine = sign(v, ProofType.beacon, '*', body(randomBytes(32).toString('hex')))
  // Signed by a key the device does not trust, on the validator's topic.
  await publish(`beacon/${v.keyId}`, encodeProof(sign(stranger, ProofType.beacon, '*', body(randomBytes(32).toString('hex')))))
  // The validator's id, but the content changed after signing.
  await publish(`beacon/${v.keyId}`, encodeProof({ ...genuine, body: body(randomBytes(32).toString('hex')) }))
  // The genuine beacon replayed under another validator's id.
  await publish(`beacon/${stranger.keyId}`, encodeProof(genuine))
  // The last one is refused before it is even parsed: its topic names an untrusted id.
  await until(() => refused('UNTRUSTED_KEY') === 2 && refused('BAD_SIGNATURE') === 1, 5000, 'three beacons refused')
  t.equal(a.agent.metrics.get('cairn_beacons_total') ?? 0, 0, 'no beacon accepted')
  const after = a.agent.proofs!.head()?.seq ?? -1
  const next = await c.waitFor(() => heartbeats(c).find(m => hbOf(m).body.seq > after), 5000, 'a heartbeat after the forgeries')
  t.same(hbOf(next).body.beacons, [], 'the next heartbeat cites nothing')

  await publish(`beacon/${v.keyId}`, encodeProof(genuine))
  const cited = await c.waitFor(() => heartbeats(c).find(m => hbOf(m).body.beacons.length > 0), 5000, 'a heartbeat citing a beacon')
  t.same(hbOf(cited).body.beacons, [{ v: v.keyId, slot, h: messageHash(genuine) }], 'cites the genuine beacon by its hash')
  t.equal(a.agent.metrics.get('cairn_beacons_total'), 1)
  t.notOk(
    heartbeats(c).some(m => hbOf(m).body.beacons.some(b => b.h !== messageHash(genuine))),
    'no heartbeat ever cited a forgery',
  )
})

t.test('killed between signing and publishing: the chain resumes without a fork', async t => {
  const b = await startBroker()
  t.teardown(() => b.close())
  await b.stop()
  const state = tmp()
  const args = ['agent', '--broker', b.url, '--fleet', FLEET, '--state-dir', state, '--proof-period', '1', '--health-port', '0', '--log-level', 'debug']
  let signed = 0
  const start = (): ChildProcess => {
    const child = spawn(process.execPath, [bundle, ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
    child.stdout!.on(
      'data',
      (d: Buffer) =>
        (signed += d
          .toString()
          .split('\n')
          .filter(l => l.includes('"heartbeat signed"')).length),
    )
    child.stderr!.resume()
    t.teardown(() => child.kill('SIGKILL'))
    return child
  }
  const first = start()
  await until(() => signed >= 3, 20_000, 'three heartbeats signed with the broker down')
  await new Promise<void>(r => {
    first.once('exit', () => r())
    first.kill('SIGKILL')
  })
  const db = openStateDb(state)
  const logged = (db.prepare('SELECT seq FROM heartbeats ORDER BY seq').all() as Array<{ seq: number }>).map(r => r.seq)
  const queued = (db.prepare("SELECT COUNT(*) AS n FROM outbox WHERE topic LIKE '%/proof'").get() as { n: number }).n
  db.close()
  const killedAt = logged[logged.length - 1]!
  t.ok(killedAt >= 2, `signed up to seq ${killedAt} before the kill`)
  t.same(logged, [...Array(killedAt + 1).keys()], 'the log holds every signed seq')
  t.equal(queued, logged.length, 'each one waits in the outbox, unpublished')

  const device = loadOrCreateIdentity(state).identity.deviceId
  await b.start()
  const c = await Consumer.connect(b.url, `cairn/v1/${FLEET}/${device}/proof`)
  t.teardown(() => c.close())
  start()
  const want = killedAt + 3
  await c.waitFor(() => new Set(heartbeats(c).map(m => hbOf(m).body.seq)).size > want || undefined, 20_000, `heartbeats 0..${want}`)
  const bySeq = new Map<number, Set<string>>()
  const payloadOf = new Map<string, Heartbeat>()
  for (const m of heartbeats(c)) {
    const hash = sha256Hex(m.payload)
    t.equal(messageHash(hbOf(m)), hash, 'the wire bytes are the canonical form')
    bySeq.set(hbOf(m).body.seq, (bySeq.get(hbOf(m).body.seq) ?? new Set()).add(hash))
    payloadOf.set(hash, hbOf(m))
  }
  const seqs = [...bySeq.keys()].sort((x, y) => x - y)
  t.same(seqs, [...Array(seqs.length).keys()], 'seqs are contiguous from 0')
  t.ok(seqs.length > want)
  t.same(
    seqs.filter(s => bySeq.get(s)!.size !== 1),
    [],
    'every seq has exactly one hash: no equivocation',
  )
  const hashes = seqs.map(s => [...bySeq.get(s)!][0]!)
  const broken = seqs.filter(s => payloadOf.get(hashes[s]!)!.body.prev !== (s === 0 ? ZERO_HASH : hashes[s - 1]))
  t.same(broken, [], 'each prev is the hash of the heartbeat before it')
})

t.test('stored heartbeats are republished byte for byte on a trusted fetch only', async t => {
  const { a, v, device, c, refused, publish } = await proofAgent(t)
  const stranger = operatorKey(tmp(), 'stranger')
  await c.waitFor(() => heartbeats(c).some(m => hbOf(m).body.seq === 2), 10_000, 'heartbeats 0-2 at the broker')
  await until(() => a.agent.outbox.depth() === 0, 5000, 'the outbox drained')
  const copies = (seq: number) => heartbeats(c).filter(m => hbOf(m).body.seq === seq)

  await publish(`${device}/proof-fetch`, encodeProof(sign(stranger, ProofType.fetch, device, { from: 0, to: 2 })))
  await until(() => refused('UNTRUSTED_KEY') === 1, 5000, 'the stranger refused')
  await sleep(500)
  t.same(
    [0, 1, 2].map(s => copies(s).length),
    [1, 1, 1],
    'nothing republished for a stranger',
  )

  const fetch = sign(v, ProofType.fetch, device, { from: 0, to: 2 })
  await publish(`${device}/proof-fetch`, encodeProof(fetch))
  await c.waitFor(() => [0, 1, 2].every(s => copies(s).length >= 2) || undefined, 5000, 'seq 0-2 again')
  for (const s of [0, 1, 2]) {
    const [orig, ...again] = copies(s)
    t.ok(
      again.every(m => m.payload.equals(orig!.payload)),
      `seq ${s}: identical bytes`,
    )
  }
  await publish(`${device}/proof-fetch`, encodeProof(fetch))
  await until(() => refused('REPLAY') === 1, 5000, 'the same fetch replayed is refused')
  t.equal(refused('REPLAY'), 1)
})

t.test('a challenge is answered once, with its nonce and the current head; only validator keys may ask', async t => {
  const { v, op, device, c, refused, publish } = await proofAgent(t)
  await c.waitFor(() => heartbeats(c).length > 0, 10_000, 'a first heartbeat')
  const responses = () => c.on('/proof').filter(m => m.json?.type === ProofType.response)
  const nonce = randomBytes(32).toString('hex')
  const ch = sign(v, ProofType.challenge, device, { nonce }, 5000)
  await publish(`${device}/challenge`, encodeProof(ch))
  const got = await c.waitFor(() => responses().find(m => (m.json?.body as { challenge?: string }).challenge === ch.id), 5000, 'the response')
  const r = checkProof(got.payload, ProofType.response, { fleet: FLEET, signer: device })
  t.equal(r.sub, v.keyId, 'addressed to the challenger')
  t.equal(r.body.nonce, nonce)
  t.equal(r.body.ch, messageHash(ch))
  t.equal(r.exp, ch.exp, 'expires with the challenge')
  t.type(r.body.seq, 'number')
  const hb = await c.waitFor(() => heartbeats(c).find(m => hbOf(m).body.seq === r.body.seq), 5000, `heartbeat seq ${r.body.seq}`)
  t.equal(r.body.head, sha256Hex(hb.payload), 'head is the hash of the heartbeat with that seq')

  await publish(`${device}/challenge`, encodeProof(ch))
  await until(() => refused('REPLAY') === 1, 5000, 'the replayed challenge refused')
  const byOperator = sign(op, ProofType.challenge, device, { nonce: randomBytes(32).toString('hex') }, 5000)
  await publish(`${device}/challenge`, encodeProof(byOperator))
  await until(() => refused('UNTRUSTED_KEY') === 1, 5000, "the operator's challenge refused")
  await sleep(500)
  t.equal(responses().length, 1, 'one response in all')

  // A device clock running 20 s fast sees this challenge as expired; within the skew
  // bound it still answers (the validator judges lateness by its own clock).
  const t0 = Date.now() - 20_000
  const old = signEnvelope(v, { type: ProofType.challenge, id: newId(t0), fleet: FLEET, sub: device, iat: t0, exp: t0 + 10_000, body: { nonce: randomBytes(32).toString('hex') } })
  await publish(`${device}/challenge`, encodeProof(old))
  await c.waitFor(() => responses().find(m => (m.json?.body as { challenge?: string }).challenge === old.id), 5000, 'the answer to a challenge expired by the device clock')
})

t.test('a beacon from the far future does not freeze the citations', async t => {
  const { a, v, c, publish } = await proofAgent(t)
  const beacon = (slot: number) => sign(v, ProofType.beacon, '*', { slot, slotMs: 1000, epochSlots: 10, rand: randomBytes(32).toString('hex') }) as unknown as Beacon
  const future = beacon(Math.floor(Date.now() / 1000) + 365 * 86_400)
  await publish(`beacon/${v.keyId}`, encodeProof(future))
  await c.waitFor(() => heartbeats(c).find(m => hbOf(m).body.beacons[0]?.slot === future.body.slot), 5000, 'the future beacon cited once')
  const now = beacon(Math.floor(Date.now() / 1000))
  await publish(`beacon/${v.keyId}`, encodeProof(now))
  const cited = await c.waitFor(() => heartbeats(c).find(m => hbOf(m).body.beacons[0]?.slot === now.body.slot), 5000, 'the current beacon cited again')
  t.same(hbOf(cited).body.beacons, [{ v: v.keyId, slot: now.body.slot, h: messageHash(now) }])
  t.ok(a.agent.proofs)
})
