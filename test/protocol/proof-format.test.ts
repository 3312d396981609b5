import t from 'tap'
import { spawnSync } from 'node:child_process'
import { createHash, verify as edVerify } from 'node:crypto'
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import nacl from 'tweetnacl'
import { signEnvelope, signedBytes, type Envelope } from '../../protocol/envelope.js'
import { generateKeyPair, publicKeyFromKeyId, rawPublicKey, type KeyPair } from '../../protocol/keys.js'
import { asJson, checkProof, encodeProof, messageHash, ProofType, ZERO_HASH, type HeartbeatBody } from '../../protocol/proof-format.js'
import { proofVectors } from '../../cli/vectors/proof-vectors.js'
import { schemaErrors } from '../helpers/schemas.js'

const vectorsFile = new URL('../../docs/vectors/proofs-v1.json', import.meta.url)
const proofsMd = readFileSync(new URL('../../docs/proofs.md', import.meta.url), 'utf8')
const doc = JSON.parse(readFileSync(vectorsFile, 'utf8')) as ReturnType<typeof proofVectors>
const byName = (name: string) => doc.messages.find(m => m.name === name)!

const dev = generateKeyPair()
const sha256 = (data: string | Buffer) => createHash('sha256').update(data).digest('hex')
const hbBody = (over: Partial<HeartbeatBody> = {}): HeartbeatBody => ({ seq: 0, prev: ZERO_HASH, beacons: [], tel: null, owner: 'bob', period: 60, ...over })
const heartbeat = (key: KeyPair, body: HeartbeatBody, over: Partial<Envelope> = {}): Envelope => {
  const env = signEnvelope(key, { type: ProofType.heartbeat, id: `hb-test-${body.seq}`, fleet: 'demo', sub: '*', iat: 1_800_000_000_000, exp: 1_800_000_600_000, body: asJson(body) })
  return { ...env, ...over }
}

t.test('docs/vectors/proofs-v1.json is what the code produces', async t => {
  t.same(doc, JSON.parse(JSON.stringify(proofVectors())), 'run `npm run docs:gen` after changing a proof structure')
})

t.test('every vector is self-consistent and its signature verifies (node:crypto and tweetnacl)', async t => {
  t.equal(doc.messages.length, 10)
  for (const v of doc.messages) {
    const env = v.envelope as Envelope
    const wire = Buffer.from(v.wireUtf8, 'utf8')
    t.equal(wire.toString('hex'), encodeProof(env).toString('hex'), `${v.name}: wire = JCS(envelope)`)
    t.equal(v.hash, messageHash(env), `${v.name}: hash`)
    t.equal(v.hash, sha256(wire), `${v.name}: hash = SHA-256(wire bytes)`)
    t.equal(v.signedBytesHex, signedBytes(env).toString('hex'), `${v.name}: signed bytes`)
    // The byte-level rule of docs/proofs.md: prefix + type + wire with the last ,"sig":"…" cut out.
    const cut = v.wireUtf8.replace(/^(.*),"sig":"[A-Za-z0-9_-]*"/, '$1')
    t.equal(Buffer.from(`CAIRN-SIG-1\n${env.type}\n${cut}`).toString('hex'), v.signedBytesHex, `${v.name}: signed bytes = wire without sig`)
    const msg = Buffer.from(v.signedBytesHex, 'hex')
    const sig = Buffer.from(v.signatureHex, 'hex')
    t.equal(Buffer.from(env.sig, 'base64url').toString('hex'), v.signatureHex)
    t.ok(edVerify(null, msg, publicKeyFromKeyId(env.iss), sig), `${v.name}: node:crypto verifies`)
    const raw = rawPublicKey(publicKeyFromKeyId(env.iss))
    t.ok(nacl.sign.detached.verify(new Uint8Array(msg), new Uint8Array(sig), raw), `${v.name}: tweetnacl verifies`)
    const bad = new Uint8Array(msg)
    bad[bad.length - 3]! ^= 1
    t.notOk(nacl.sign.detached.verify(bad, new Uint8Array(sig), raw), `${v.name}: tweetnacl refuses a flipped bit`)
    t.ok(checkProof(wire, env.type as ProofType, { fleet: 'demo' }), `${v.name}: checkProof accepts it`)
    const schema = env.type.replace(/^proof\./, 'proof-')
    t.equal(schemaErrors(schema, env.body), null, `${v.name}: body matches docs/schemas/${schema}.json`)
  }
  t.equal(doc.keys.device.publicKeyHex, '3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c', 'RFC 8032 TEST 2 public key')
  t.equal(doc.keys.validator.publicKeyHex, 'fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025', 'RFC 8032 TEST 3 public key')
})

t.test('the vectors chain, cite and attest as documented', async t => {
  const [hb0, hb1, hb2] = [0, 1, 2].map(i => byName(`heartbeat seq ${i}`).envelope as unknown as { body: HeartbeatBody })
  t.equal(hb0!.body.prev, ZERO_HASH)
  t.equal(hb1!.body.prev, byName('heartbeat seq 0').hash)
  t.equal(hb2!.body.prev, byName('heartbeat seq 1').hash)
  t.equal(hb0!.body.beacons[0]!.h, byName('beacon, slot 29453760').hash)
  t.equal(hb1!.body.beacons[0]!.h, byName('beacon, slot 29453761').hash)
  const att = byName('attestation').envelope.body as { score: number; root: string }
  t.equal(att.score, 733_333, 'floor((800000*2*1 + 200000*1*3) / 3)')
  t.equal(att.root, doc.merkle.root)
  t.same(
    doc.merkle.leaves,
    doc.record.heartbeats.map(h => h.hash),
  )
  t.equal(doc.merkle.emptyRoot, 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855')
  for (const i of [0, 1]) {
    const v = byName(`heartbeat seq ${i}`)
    t.ok(proofsMd.includes(v.wireUtf8), `docs/proofs.md shows heartbeat ${i} exactly as in the vectors`)
    t.ok(proofsMd.includes(v.hash), `docs/proofs.md shows the hash of heartbeat ${i}`)
  }
})

// ---- the OpenSSL recipe, run exactly as docs/proofs.md prints it ----

const recipes = new Map<string, string>()
for (const m of proofsMd.matchAll(/```sh\n# recipe: ([^\n]+)\n([\s\S]*?)```/g)) recipes.set(m[1]!, m[2]!)

function runRecipe(name: string, files: Record<string, string | Buffer>) {
  const script = recipes.get(name)
  if (script === undefined) throw new Error(`docs/proofs.md has no "# recipe: ${name}" block`)
  const dir = mkdtempSync(join(tmpdir(), 'cairn-proof-ossl-'))
  for (const [f, data] of Object.entries(files)) writeFileSync(join(dir, f), data)
  const r = spawnSync('bash', ['-c', script], { cwd: dir, encoding: 'utf8' })
  return { status: r.status, out: `${r.stdout}${r.stderr}`, dir }
}

t.test('docs/proofs.md has the three recipe blocks', async t => {
  t.same([...recipes.keys()].sort(), ['beacon citation', 'chain link', 'verify hb.json'])
})

t.test('the OpenSSL-only recipe verifies every vector message', async t => {
  for (const v of doc.messages) {
    const r = runRecipe('verify hb.json', { 'hb.json': v.wireUtf8 })
    t.equal(r.status, 0, `${v.name}: exit 0\n${r.out}`)
    t.match(r.out, /Signature Verified Successfully/, `${v.name}: verified`)
    t.equal(r.out.split('\n')[0], v.hash, `${v.name}: openssl dgst gives the message hash`)
    t.equal(readFileSync(join(r.dir, 'msg.bin')).toString('hex'), v.signedBytesHex, `${v.name}: printf + sed give the signed bytes`)
  }
})

t.test('the recipe verifies a freshly signed heartbeat and refuses a one-byte change', async t => {
  const env = heartbeat(dev, hbBody({ seq: 7, prev: sha256('x'), tel: sha256('tel'), owner: 'acct:bob@example.org' }))
  const wire = encodeProof(env)
  const ok = runRecipe('verify hb.json', { 'hb.json': wire })
  t.equal(ok.status, 0, ok.out)
  t.match(ok.out, /Signature Verified Successfully/)
  t.equal(ok.out.split('\n')[0], messageHash(env))
  const changed = Buffer.from(wire.toString('utf8').replace('"period":60', '"period":61'))
  t.equal(changed.length, wire.length, 'exactly one byte differs')
  const bad = runRecipe('verify hb.json', { 'hb.json': changed })
  t.not(bad.status, 0)
  t.match(bad.out, /Signature Verification Failure/)
})

t.test('the recipe picks the envelope own sig, not one inside an evidence body', async t => {
  const validator = generateKeyPair()
  const a = heartbeat(dev, hbBody({ seq: 3, prev: sha256('a') }))
  const b = heartbeat(dev, hbBody({ seq: 3, prev: sha256('b') }))
  const params = { slotMs: 60_000, epochSlots: 60, maxAgeMs: 120_000, skewMs: 30_000, wCoverage: 800_000, wChallenge: 200_000 }
  const ev = signEnvelope(validator, {
    type: ProofType.evidence,
    id: 'evidence-0001',
    fleet: 'demo',
    sub: dev.keyId,
    iat: 1_800_000_100_000,
    exp: 1_900_000_000_000,
    body: asJson({ kind: 'equivocation', device: dev.keyId, note: 'two heartbeats for seq 3', messages: [a, b], received: [1_800_000_000_100, 1_800_000_000_200], params }),
  })
  t.ok(checkProof(encodeProof(ev), ProofType.evidence))
  const r = runRecipe('verify hb.json', { 'hb.json': encodeProof(ev) })
  t.equal(r.status, 0, r.out)
  t.equal(readFileSync(join(r.dir, 'msg.bin')).toString('hex'), signedBytes(ev).toString('hex'))
})

t.test('the chain-link and beacon-citation recipes', async t => {
  const hb0 = byName('heartbeat seq 0').wireUtf8
  const hb1 = byName('heartbeat seq 1').wireUtf8
  const beacon1 = byName('beacon, slot 29453761').wireUtf8
  let r = runRecipe('chain link', { 'parent.json': hb0, 'hb.json': hb1 })
  t.equal(r.status, 0, r.out)
  t.match(r.out, /chain link OK/)
  r = runRecipe('chain link', { 'parent.json': hb1, 'hb.json': hb0 })
  t.not(r.status, 0, 'reversed order is not a link')
  t.notMatch(r.out, /chain link OK/)

  // A fresh chain, and a heartbeat with the right seq but a foreign prev.
  const f0 = heartbeat(dev, hbBody())
  const f1 = heartbeat(dev, hbBody({ seq: 1, prev: messageHash(f0) }))
  const f1x = heartbeat(dev, hbBody({ seq: 1, prev: sha256('elsewhere') }))
  t.equal(runRecipe('chain link', { 'parent.json': encodeProof(f0), 'hb.json': encodeProof(f1) }).status, 0)
  t.not(runRecipe('chain link', { 'parent.json': encodeProof(f0), 'hb.json': encodeProof(f1x) }).status, 0)
  const other = heartbeat(generateKeyPair(), hbBody({ seq: 1, prev: messageHash(f0) }))
  t.not(runRecipe('chain link', { 'parent.json': encodeProof(f0), 'hb.json': encodeProof(other) }).status, 0, 'another key')

  r = runRecipe('beacon citation', { 'beacon.json': beacon1, 'hb.json': hb1 })
  t.equal(r.status, 0, r.out)
  t.match(r.out, /beacon citation OK/)
  t.not(runRecipe('beacon citation', { 'beacon.json': byName('beacon, slot 29453760').wireUtf8, 'hb.json': hb1 }).status, 0)
})

// ---- checkProof refusals ----

t.test('checkProof refuses each fault with its code', async t => {
  const good = heartbeat(dev, hbBody())
  t.ok(checkProof(encodeProof(good), ProofType.heartbeat, { fleet: 'demo', signer: dev.keyId }))
  t.ok(checkProof(good, ProofType.heartbeat, { signer: k => k === dev.keyId }), 'a parsed value is accepted too')

  t.throws(() => checkProof(encodeProof(good), ProofType.beacon), { code: 'BAD_REQUEST' }, 'wrong type')
  const flipped = `${good.sig[0] === 'A' ? 'B' : 'A'}${good.sig.slice(1)}`
  t.throws(() => checkProof(JSON.stringify({ ...good, sig: flipped }), ProofType.heartbeat), { code: 'BAD_SIGNATURE' }, 'flipped sig char')
  t.throws(() => checkProof(JSON.stringify({ ...good, iat: good.iat + 1 }), ProofType.heartbeat), { code: 'BAD_SIGNATURE' }, 'changed field')
  t.throws(() => checkProof(encodeProof(good), ProofType.heartbeat, { signer: generateKeyPair().keyId }), { code: 'UNTRUSTED_KEY' }, 'wrong signer')
  t.throws(() => checkProof(encodeProof(good), ProofType.heartbeat, { signer: () => false }), { code: 'UNTRUSTED_KEY' }, 'signer predicate says no')
  const extra = signEnvelope(dev, { type: ProofType.heartbeat, id: 'hb-extra-1', fleet: 'demo', sub: '*', iat: 1, exp: 2, body: asJson({ ...hbBody(), extra: 1 }) })
  t.throws(() => checkProof(encodeProof(extra), ProofType.heartbeat), { code: 'BAD_REQUEST' }, 'body with an extra field (validly signed)')
  t.throws(() => checkProof('{"body":', ProofType.heartbeat), { code: 'BAD_JSON' }, 'not JSON')
  t.throws(() => checkProof(Buffer.from([0xff, 0xfe]), ProofType.heartbeat), { code: 'BAD_JSON' }, 'binary junk')
  t.throws(() => checkProof(encodeProof(good), ProofType.heartbeat, { fleet: 'other' }), { code: 'WRONG_TARGET' }, 'wrong fleet')
  t.throws(() => checkProof(JSON.stringify({ ...good, extra: 1 }), ProofType.heartbeat), { code: 'BAD_REQUEST' }, 'envelope with an extra field')
  t.throws(() => checkProof('"hello"', ProofType.heartbeat), { code: 'BAD_REQUEST' }, 'JSON but not an envelope')
})

// A signature has 16 base64url spellings (the last character carries 4 unused bits);
// each would verify but give the message another hash, so anyone could turn one
// heartbeat into an apparent equivocation. Only the canonical spelling is accepted.
t.test('a non-canonical spelling of sig is refused', async t => {
  const good = heartbeat(dev, hbBody())
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_'
  const last = alphabet[alphabet.indexOf(good.sig.at(-1)!) ^ 1]!
  t.throws(() => checkProof(JSON.stringify({ ...good, sig: good.sig.slice(0, -1) + last }), ProofType.heartbeat), { code: 'BAD_REQUEST' })
})
