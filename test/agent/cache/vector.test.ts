// The cache.served test vector in docs/cache.md is what the code signs and accepts:
// recreated from its RFC 8032 seed, byte for byte, and verified.

import t from 'tap'
import { readFileSync } from 'node:fs'
import { canonicalJson } from '../../../protocol/canonical.js'
import { keyPairFromSeed } from '../../../protocol/keys.js'
import { signEnvelope, signedBytes, type Envelope } from '../../../protocol/envelope.js'
import { verifyServeReceipt } from '../../../agent/cache/serve-receipts.js'

const doc = readFileSync(new URL('../../../docs/cache.md', import.meta.url), 'utf8')

t.test('docs/cache.md vector', async t => {
  const block = /<!-- cache-served-vector -->\n```json\n(.+)\n```/.exec(doc)?.[1]
  t.ok(block, 'the vector block is in the doc')
  const env = JSON.parse(block!) as Envelope
  const key = keyPairFromSeed('4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb')
  t.equal(env.iss, key.keyId)
  const again = signEnvelope(key, { type: env.type, id: env.id, fleet: env.fleet, sub: env.sub, iat: env.iat, exp: env.exp, body: env.body as never })
  t.equal(canonicalJson(again), block, 'recreated byte for byte (ed25519 is deterministic)')
  t.ok(doc.includes(Buffer.from(env.sig, 'base64url').toString('hex')), 'the signature hex in the doc matches')
  t.ok(doc.includes(signedBytes(env).toString('utf8').split('\n')[2]!), 'the signed JCS in the doc matches')
  verifyServeReceipt(env, { fleet: 'demo', device: key.keyId, now: env.iat })
  t.pass('verifies')
})
