import t from 'tap'
import { execFileSync } from 'node:child_process'
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { envelopeVectors, generatedDocFiles } from '../../cli/docs-gen.js'
import { signEnvelope, signedBytes, verifyEnvelope, type Envelope, type VerifyOptions } from '../../protocol/envelope.js'
import { generateKeyPair } from '../../protocol/keys.js'

const vectorsFile = new URL('../../docs/vectors/envelope-v1.json', import.meta.url)
const op = generateKeyPair()
const dev = generateKeyPair()
const now = 1_767_225_700_000
const opts = (over: Partial<VerifyOptions> = {}): VerifyOptions => ({
  trusted: k => k === op.keyId,
  fleet: 'demo',
  sub: dev.keyId,
  now,
  maxTtlMs: 3_600_000,
  skewMs: 60_000,
  ...over,
})
const make = (over: Partial<Parameters<typeof signEnvelope>[1]> = {}) =>
  signEnvelope(op, { type: 'cmd.ping', id: 'abcdefgh1234', fleet: 'demo', sub: dev.keyId, iat: now - 1000, exp: now + 60_000, body: { a: 1 }, ...over })

t.test('a signed envelope verifies', async t => {
  const env = make()
  t.same(verifyEnvelope(JSON.parse(JSON.stringify(env)), opts()), env)
})

t.test('changing any signed field breaks the signature', async t => {
  const env = make()
  const tampered: Array<[string, Envelope]> = [
    ['body', { ...env, body: { a: 2 } }],
    ['id', { ...env, id: 'abcdefgh1235' }],
    ['iat', { ...env, iat: env.iat - 1 }],
    ['exp', { ...env, exp: env.exp - 1 }],
  ]
  for (const [field, e] of tampered) t.throws(() => verifyEnvelope(e, opts()), { code: 'BAD_SIGNATURE' }, field)
  // Type is domain-separated: a signature for cmd.ping is not one for cmd.reboot.
  t.throws(() => verifyEnvelope({ ...env, type: 'cmd.reboot' }, opts()), { code: 'BAD_SIGNATURE' }, 'type')
  // Fleet and target are bound: moved to another fleet or device it no longer verifies.
  t.throws(() => verifyEnvelope({ ...env, fleet: 'other' }, opts({ fleet: 'other' })), { code: 'BAD_SIGNATURE' }, 'fleet')
  const other = generateKeyPair()
  t.throws(() => verifyEnvelope({ ...env, sub: other.keyId }, opts({ sub: other.keyId })), { code: 'BAD_SIGNATURE' }, 'sub')
})

t.test('each refusal has its own code', async t => {
  t.throws(() => verifyEnvelope(make(), opts({ trusted: () => false })), { code: 'UNTRUSTED_KEY' })
  t.throws(() => verifyEnvelope(make(), opts({ fleet: 'x' })), { code: 'WRONG_TARGET' })
  t.throws(() => verifyEnvelope(make({ sub: generateKeyPair().keyId }), opts()), { code: 'WRONG_TARGET' })
  t.throws(() => verifyEnvelope(make({ sub: '*' }), opts()), { code: 'WRONG_TARGET' }, 'broadcast needs allowBroadcast')
  t.ok(verifyEnvelope(make({ sub: '*' }), opts({ allowBroadcast: true })))
  t.throws(() => verifyEnvelope(make({ iat: now - 120_000, exp: now - 1 }), opts()), { code: 'EXPIRED' })
  t.throws(() => verifyEnvelope(make({ iat: now + 120_000, exp: now + 180_000 }), opts()), { code: 'NOT_YET_VALID' })
  t.throws(() => verifyEnvelope(make({ exp: now + 7_200_000 }), opts()), { code: 'TTL_TOO_LONG' })
  t.throws(() => verifyEnvelope(make(), opts({ expectType: ty => ty === 'cmd.logs' })), { code: 'BAD_REQUEST' })
  t.throws(() => verifyEnvelope({ ...make(), extra: 1 }, opts()), { code: 'BAD_REQUEST' })
  t.throws(() => verifyEnvelope({ ...make(), sig: 'x' }, opts()), { code: 'BAD_REQUEST' })
  t.throws(() => verifyEnvelope('hello', opts()), { code: 'BAD_REQUEST' })
  t.throws(() => signEnvelope(op, { type: 'cmd.ping', id: 'short', fleet: 'demo', sub: dev.keyId, iat: 1, exp: 2, body: {} }), /id/)
  t.throws(() => signEnvelope(op, { type: 'cmd.ping', id: 'abcdefgh1234', fleet: 'demo', sub: dev.keyId, iat: 2, exp: 2, body: {} }), /exp must be after iat/)
})

t.test('docs/vectors/envelope-v1.json is what the code produces', async t => {
  t.same(JSON.parse(readFileSync(vectorsFile, 'utf8')), JSON.parse(JSON.stringify(envelopeVectors())), 'run `npm run docs:gen` after changing the envelope')
})

t.test('every generated file under docs/ (schemas, envelope and proof vectors) is what the code produces', async t => {
  const files = generatedDocFiles()
  t.ok(files['schemas/proof-heartbeat.json'] && files['vectors/proofs-v1.json'], 'proof schemas and vectors are generated')
  for (const [path, text] of Object.entries(files)) {
    t.equal(readFileSync(new URL(`../../docs/${path}`, import.meta.url), 'utf8'), text, `docs/${path}: run \`npm run docs:gen\``)
  }
})

t.test('OpenSSL alone verifies the documented vectors (docs/protocol.md commands)', async t => {
  const doc = JSON.parse(readFileSync(vectorsFile, 'utf8'))
  const dir = mkdtempSync(join(tmpdir(), 'cairn-ossl-'))
  const cases: Array<{ pem: string; v: { name: string; envelope: Envelope; signedBytesHex: string } }> = [
    ...doc.vectors.map((v: never) => ({ pem: doc.signer.publicKeyPem, v })),
    { pem: doc.reply.signer.publicKeyPem, v: doc.reply },
  ]
  t.equal(doc.reply.envelope.iss, doc.device.keyId, 'the reply is signed by the device the command was for')
  for (const { pem, v } of cases) {
    writeFileSync(join(dir, 'pub.pem'), pem)
    // Rebuild the signed bytes from the documented recipe, not from our code.
    const { sig, ...rest } = v.envelope
    const sorted = (x: unknown): unknown =>
      x && typeof x === 'object' && !Array.isArray(x)
        ? Object.fromEntries(
            Object.keys(x)
              .sort()
              .map(k => [k, sorted((x as Record<string, unknown>)[k])]),
          )
        : x
    const recipe = Buffer.from(`CAIRN-SIG-1\n${v.envelope.type}\n${JSON.stringify(sorted(rest))}`)
    t.equal(recipe.toString('hex'), v.signedBytesHex, `${v.name}: recipe gives the documented bytes`)
    t.equal(signedBytes(v.envelope).toString('hex'), v.signedBytesHex, `${v.name}: code gives the documented bytes`)
    writeFileSync(join(dir, 'msg.bin'), Buffer.from(v.signedBytesHex, 'hex'))
    writeFileSync(join(dir, 'sig.bin'), Buffer.from(sig, 'base64url'))
    const out = execFileSync('openssl', ['pkeyutl', '-verify', '-pubin', '-inkey', 'pub.pem', '-rawin', '-in', 'msg.bin', '-sigfile', 'sig.bin'], { cwd: dir }).toString()
    t.match(out, /Signature Verified Successfully/, `${v.name}: openssl verifies`)
    const bad = Buffer.from(v.signedBytesHex, 'hex')
    bad[bad.length - 2]! ^= 1
    writeFileSync(join(dir, 'msg.bin'), bad)
    t.throws(
      () => execFileSync('openssl', ['pkeyutl', '-verify', '-pubin', '-inkey', 'pub.pem', '-rawin', '-in', 'msg.bin', '-sigfile', 'sig.bin'], { cwd: dir, stdio: 'pipe' }),
      `${v.name}: openssl refuses one flipped bit`,
    )
  }
})
