// validator/validator-store.ts's schema steps: a store made by an earlier validator
// (schema version 2: heartbeats keyed by (device, hash) with a (device, seq) index)
// migrates to the current one with every heartbeat kept, and the chain checks go on
// from what it holds: a copy is a duplicate, the next heartbeat chains, a second one of
// a stored seq is equivocation.

import t from 'tap'
import Database from 'better-sqlite3'
import { join } from 'node:path'
import { signEnvelope } from '../../protocol/envelope.js'
import { newId } from '../../protocol/ids.js'
import { generateKeyPair } from '../../protocol/keys.js'
import { asJson, encodeProof, messageHash, ProofType, ZERO_HASH, type Heartbeat, type HeartbeatBody, type ScoreParams } from '../../protocol/proof-format.js'
import { ProofIngest } from '../../validator/ingest.js'
import { DEFAULT_WEIGHTS } from '../../validator/score.js'
import { openValidatorDb, pinParams } from '../../validator/validator-store.js'
import { tmp } from '../helpers/agent.js'

/** The schema as validators up to version 2 made it, verbatim. */
const V1 = `CREATE TABLE meta (k TEXT PRIMARY KEY, v TEXT NOT NULL) WITHOUT ROWID;
   CREATE TABLE beacons (slot INTEGER PRIMARY KEY, hash TEXT NOT NULL, published INTEGER NOT NULL, payload BLOB NOT NULL);
   CREATE TABLE heartbeats (
     device TEXT NOT NULL, hash TEXT NOT NULL, seq INTEGER NOT NULL, recv INTEGER NOT NULL,
     payload BLOB NOT NULL, PRIMARY KEY (device, hash)
   ) WITHOUT ROWID;
   CREATE INDEX heartbeats_seq ON heartbeats (device, seq);
   CREATE INDEX heartbeats_recv ON heartbeats (device, recv);
   CREATE TABLE devices (
     device TEXT PRIMARY KEY, first_seen INTEGER NOT NULL, last_seen INTEGER NOT NULL,
     head_seq INTEGER NOT NULL, owner TEXT, fetch_at INTEGER NOT NULL DEFAULT 0,
     flagged_epoch INTEGER NOT NULL DEFAULT -1
   ) WITHOUT ROWID;
   CREATE TABLE challenges (
     id TEXT PRIMARY KEY, device TEXT NOT NULL, sent INTEGER NOT NULL, deadline INTEGER NOT NULL,
     payload BLOB NOT NULL, response BLOB, recv INTEGER
   ) WITHOUT ROWID;
   CREATE INDEX challenges_sent ON challenges (device, sent);
   CREATE TABLE attestations (device TEXT NOT NULL, epoch INTEGER NOT NULL, score INTEGER NOT NULL, payload BLOB NOT NULL, PRIMARY KEY (device, epoch)) WITHOUT ROWID;
   CREATE TABLE evidence (id TEXT PRIMARY KEY, device TEXT NOT NULL, kind TEXT NOT NULL, created INTEGER NOT NULL, payload BLOB NOT NULL) WITHOUT ROWID;
   CREATE INDEX evidence_device ON evidence (device, created);
   CREATE TABLE lease (name TEXT PRIMARY KEY, holder TEXT NOT NULL, until INTEGER NOT NULL) WITHOUT ROWID;
   CREATE TABLE instances (name TEXT PRIMARY KEY, token TEXT NOT NULL, seen INTEGER NOT NULL) WITHOUT ROWID;`
const V2 = `CREATE INDEX heartbeats_recv_all ON heartbeats (recv);`

const FLEET = 'test'
const P: ScoreParams = { slotMs: 1000, epochSlots: 10, maxAgeMs: 1000, skewMs: 5000, ...DEFAULT_WEIGHTS }
const T0 = 2_000_000 * 10_000

t.test('a version 2 store migrates with its heartbeats, and the chain goes on from them', async t => {
  const dir = tmp('cairn-vstore-')
  const v = generateKeyPair()
  const dev = generateKeyPair()
  const device = dev.keyId
  const sign = (seq: number, prev: string, iat: number, owner = 'payout:dana'): Heartbeat => {
    const body: HeartbeatBody = { seq, prev, beacons: [], tel: null, owner, period: 1 }
    return signEnvelope(dev, { type: ProofType.heartbeat, id: newId(iat), fleet: FLEET, sub: '*', iat, exp: iat + 86_400_000, body: asJson(body) }) as unknown as Heartbeat
  }
  const chain: Heartbeat[] = []
  for (let seq = 0; seq < 5; seq++) chain.push(sign(seq, seq === 0 ? ZERO_HASH : messageHash(chain[seq - 1]!), T0 + seq * 1000))

  // What an earlier validator left on disk.
  const old = new Database(join(dir, 'validator.db'))
  old.pragma('journal_mode = WAL')
  old.exec(V1)
  old.exec(V2)
  old.pragma('user_version = 2')
  const ins = old.prepare('INSERT INTO heartbeats (device, hash, seq, recv, payload) VALUES (?, ?, ?, ?, ?)')
  chain.forEach((hb, i) => ins.run(device, messageHash(hb), hb.body.seq, T0 + i * 1000 + 5, Buffer.from(JSON.stringify(hb))))
  old.prepare('INSERT INTO devices (device, first_seen, last_seen, head_seq, owner) VALUES (?, ?, ?, ?, ?)').run(device, T0 + 5, T0 + 4005, 4, 'payout:dana')
  old.close()

  const db = openValidatorDb(dir)
  t.teardown(() => db.close())
  t.equal(db.pragma('user_version', { simple: true }), 3, 'migrated to version 3')
  const rows = db.prepare('SELECT device, seq, hash, recv, payload FROM heartbeats ORDER BY seq').all() as Array<{ device: string; seq: number; hash: string; recv: number; payload: Buffer }>
  t.same(
    rows.map(r => [r.device, r.seq, r.hash, r.recv, JSON.parse(r.payload.toString()) as unknown]),
    chain.map((hb, i) => [device, hb.body.seq, messageHash(hb), T0 + i * 1000 + 5, hb]),
    'every heartbeat kept, with its receive time and payload',
  )
  const indexes = (db.prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'heartbeats' AND sql IS NOT NULL ORDER BY name").all() as Array<{ name: string }>).map(r => r.name)
  t.same(indexes, ['heartbeats_recv', 'heartbeats_recv_all'], 'the (device, seq) index is gone: the key serves it')

  pinParams(db, P, v.keyId, FLEET)
  const ingest = new ProofIngest({ db, fleet: FLEET, key: v, params: P })
  const topic = `cairn/v1/${FLEET}/${device}/proof`
  const copy = ingest.handle(topic, encodeProof(chain[3]!), T0 + 9000)
  t.match(copy, { kind: 'heartbeat', seq: 3, verdict: 'duplicate', evidence: [] }, 'a copy of a migrated heartbeat is a duplicate')
  const next = sign(5, messageHash(chain[4]!), T0 + 5000)
  t.match(ingest.handle(topic, encodeProof(next), T0 + 5005), { kind: 'heartbeat', seq: 5, verdict: 'new', evidence: [] }, 'the next heartbeat chains to the migrated head')
  const twin = sign(2, messageHash(chain[1]!), T0 + 2000, 'payout:mallory')
  const out = ingest.handle(topic, encodeProof(twin), T0 + 9500)
  t.equal(out.kind === 'heartbeat' ? out.evidence.map(e => (e.body as { kind: string }).kind).join() : '', 'equivocation,fork', 'another heartbeat of a migrated seq is equivocation (and forks seq 3)')
  t.equal((db.prepare('SELECT COUNT(*) AS n FROM heartbeats').get() as { n: number }).n, 7)
})
