import t from 'tap'
import { randomBytes } from 'node:crypto'
import { base32Decode, base32Encode } from '../../protocol/base32.js'
import { canonicalJson } from '../../protocol/canonical.js'

t.test('base32 matches RFC 4648 vectors (lowercase, unpadded)', async t => {
  const vectors: Array<[string, string]> = [
    ['', ''],
    ['f', 'my'],
    ['fo', 'mzxq'],
    ['foo', 'mzxw6'],
    ['foob', 'mzxw6yq'],
    ['fooba', 'mzxw6ytb'],
    ['foobar', 'mzxw6ytboi'],
  ]
  for (const [plain, enc] of vectors) {
    t.equal(base32Encode(Buffer.from(plain)), enc, `encode ${JSON.stringify(plain)}`)
    t.same(Buffer.from(base32Decode(enc)!).toString(), plain, `decode ${enc}`)
  }
})

t.test('base32 round-trips random bytes and rejects non-canonical text', async t => {
  for (let i = 0; i < 200; i++) {
    const b = randomBytes(i % 40)
    t.same(Buffer.from(base32Decode(base32Encode(b))!), b)
  }
  t.equal(base32Decode('MZXW6'), null, 'uppercase refused')
  t.equal(base32Decode('mzxw7'), null, 'non-zero trailing bits refused')
  t.equal(base32Decode('mz/w6'), null, 'characters outside the alphabet refused')
  t.equal(base32Decode('m'), null, 'dangling 5 bits refused')
})

t.test('canonical JSON follows RFC 8785', async t => {
  t.equal(canonicalJson({ b: 1, a: [true, null, 'x'], c: { z: 1, y: 2 } }), '{"a":[true,null,"x"],"b":1,"c":{"y":2,"z":1}}')
  // RFC 8785 section 3.2.3 sorts by UTF-16 code units.
  t.equal(canonicalJson({ '\u20ac': 1, '\r': 2, '\ud83d\ude00': 3, '1': 4, é: 5 }), '{"\\r":2,"1":4,"é":5,"€":1,"😀":3}')
  t.equal(canonicalJson([1e21, 1e-7, -0, 0.1, 333333333.3333333]), '[1e+21,1e-7,0,0.1,333333333.3333333]')
  t.equal(canonicalJson('\u2028\u0007"'), '"\u2028\\u0007\\""')
  t.throws(() => canonicalJson({ a: NaN }), /non-finite/)
  t.throws(() => canonicalJson({ a: undefined }), /undefined/)
  t.throws(() => canonicalJson(new Date()), /plain objects/)
})
