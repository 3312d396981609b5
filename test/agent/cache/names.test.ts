// Content names and HTTP range rules, as pure functions: CID vectors from known CIDs,
// and every Range edge case the server relies on.

import t from 'tap'
import { cidFromSha256, parseContentId, sha256FromCid, toSha256 } from '../../../agent/cache/cid.js'
import { ifRangeAllows, noneMatch, parseRange } from '../../../agent/cache/range.js'
import { resolvePath } from '../../../agent/cache/http-server.js'
import { sha256 } from './origin.js'

t.test('CIDv1 raw sha2-256 vectors', async t => {
  // Well-known CIDs (ipfs add --cid-version 1 --raw-leaves of these exact bytes).
  const empty = sha256('')
  t.equal(empty, 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855')
  t.equal(cidFromSha256(empty), 'bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku', 'empty string')
  t.equal(cidFromSha256(sha256('hello world')), 'bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e', '"hello world"')
  t.equal(sha256FromCid('bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku'), empty, 'decodes back')
  t.equal(parseContentId(empty), empty, 'hex passes as is')
})

t.test('names that are not a raw sha2-256 CID or lowercase hex are refused', async t => {
  const good = cidFromSha256(sha256('x'))
  t.equal(parseContentId(good.toUpperCase()), undefined, 'upper-case multibase B is not accepted')
  t.equal(parseContentId(sha256('x').toUpperCase()), undefined, 'upper-case hex')
  t.equal(parseContentId('bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi'), undefined, 'dag-pb CID')
  t.equal(parseContentId(good.slice(0, -1) + 'b'), undefined, 'non-zero trailing bits')
  t.equal(parseContentId(good + 'a'), undefined, 'too long')
  t.equal(parseContentId('QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG'), undefined, 'CIDv0')
  t.throws(() => toSha256('../../etc/passwd', 'cid'), { code: 'BAD_REQUEST', message: /^cid: expected/ })
})

t.test('Range', async t => {
  const size = 100
  t.same(parseRange(undefined, size), { kind: 'full' })
  t.same(parseRange('bytes=0-0', size), { kind: 'partial', start: 0, end: 0 }, 'first byte')
  t.same(parseRange('bytes=99-99', size), { kind: 'partial', start: 99, end: 99 }, 'last byte')
  t.same(parseRange('bytes=-1', size), { kind: 'partial', start: 99, end: 99 }, 'suffix of 1')
  t.same(parseRange('bytes=-500', size), { kind: 'partial', start: 0, end: 99 }, 'suffix longer than the object: all of it')
  t.same(parseRange('bytes=10-', size), { kind: 'partial', start: 10, end: 99 }, 'open-ended')
  t.same(parseRange('bytes=90-200', size), { kind: 'partial', start: 90, end: 99 }, 'end past the end is clamped')
  t.same(parseRange('bytes=100-', size), { kind: 'unsatisfiable' }, 'starts at the end')
  t.same(parseRange('bytes=100-200', size), { kind: 'unsatisfiable' }, 'beyond the end')
  t.same(parseRange('bytes=-0', size), { kind: 'unsatisfiable' }, 'empty suffix')
  t.same(parseRange('bytes=0-0', 0), { kind: 'unsatisfiable' }, 'any range of an empty object')
  t.same(parseRange('bytes=-5', 0), { kind: 'unsatisfiable' }, 'suffix of an empty object')
  t.same(parseRange('Bytes=0-0', size), { kind: 'partial', start: 0, end: 0 }, 'the unit is case-insensitive')
  for (const bad of ['bytes=5-2', 'bytes=abc', 'bytes=-', 'items=0-1', 'bytes=0-1,5-6', 'bytes 0-1', 'bytes=1234567890123456-']) {
    t.same(parseRange(bad, size), { kind: 'full' }, `ignored: ${bad}`)
  }
})

t.test('conditional headers', async t => {
  const etag = `"${sha256('x')}"`
  t.ok(noneMatch(etag, etag))
  t.ok(noneMatch(`"a", W/${etag}`, etag), 'weak comparison, in a list')
  t.ok(noneMatch('*', etag))
  t.notOk(noneMatch('"other"', etag))
  t.ok(ifRangeAllows(undefined, etag))
  t.ok(ifRangeAllows(etag, etag))
  t.notOk(ifRangeAllows(`W/${etag}`, etag), 'If-Range needs a strong match')
  t.notOk(ifRangeAllows('Wed, 21 Oct 2015 07:28:00 GMT', etag), 'dates are not honoured')
})

t.test('request paths: only /c/<hash or CID> reaches the store', async t => {
  const h = sha256('x')
  t.same(resolvePath(`/c/${h}`), { sha256: h })
  t.same(resolvePath(`/c/${cidFromSha256(h)}?download=1`), { sha256: h }, 'CID, query ignored')
  for (const p of [`/c/../${h}`, `/c/%2e%2e/${h}`, `/c/${h}/`, `/c/${h}%00`, `/c/..%2f..%2fetc%2fpasswd`, `/c/${h.toUpperCase()}`, '/c/', `/c//${h}`]) {
    t.equal((resolvePath(p) as { status: number }).status, 400, p)
  }
  t.equal((resolvePath('/etc/passwd') as { status: number }).status, 404)
  t.equal((resolvePath(`/c/${'a'.repeat(5000)}`) as { status: number }).status, 414)
})
