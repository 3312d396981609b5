// The content store against real HTTP origins on 127.0.0.1 and real files: verified
// fetches, every way an origin can fail (nothing stored), shared downloads, quota and
// LRU eviction with pins and leases, and index repair.

import t, { type Test } from 'tap'
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { ManualClock } from '../../../protocol/clock.js'
import { FetchFailed, ContentStore, type ContentStoreOptions } from '../../../agent/cache/store.js'
import { redirectBlocked } from '../../../agent/cache/fetch.js'
import { tmp, until } from '../../helpers/agent.js'
import { blob, sha256, startOrigin, type Origin } from './origin.js'

let origin: Origin
t.before(async () => {
  origin = await startOrigin()
})
t.teardown(() => origin.close())

const MiB = 1024 * 1024
async function openStore(t: Test, o: Partial<ContentStoreOptions> = {}) {
  const dir = o.dir ?? tmp('cairn-cache-')
  const store = await ContentStore.open({ dir, quotaBytes: 64 * MiB, maxObjectBytes: 32 * MiB, diskFree: () => 1e12, ...o })
  t.teardown(() => store.close())
  return { store, dir }
}
/** The error of a call that must fail (a FetchFailed from lease). */
const refused = (p: Promise<unknown>): Promise<FetchFailed> =>
  p.then(
    () => {
      throw new Error('expected a refusal')
    },
    e => e as FetchFailed,
  )
const signal = () => new AbortController().signal
const tmpFiles = (dir: string) => readdirSync(join(dir, 'tmp'))
let n = 0
const path = (what: string) => `/${what}-${++n}`

t.test('happy fetch: verified, stored under objects/ab/<sha256>, leased, not fetched twice', async t => {
  const { store, dir } = await openStore(t)
  const body = blob(300_000)
  const h = sha256(body)
  const url = origin.route(path('ok'), { kind: 'ok', body })
  const lease = await store.lease(h, [url], { signal: signal() })
  t.equal(lease.fetched, true)
  t.equal(lease.bytes, body.length)
  t.equal(lease.path, join(dir, 'objects', h.slice(0, 2), h))
  t.ok(readFileSync(lease.path).equals(body), 'bytes on disk are the origin bytes')
  t.equal(store.stat(h)?.leases, 1)
  lease.release()
  lease.release()
  t.equal(store.stat(h)?.leases, 0, 'release is idempotent')
  const again = await store.lease(h, [url], { signal: signal() })
  t.equal(again.fetched, false, 'second lease finds it stored')
  again.release()
  t.equal(origin.hits.get(new URL(url).pathname), 1, 'one download')
  t.same(tmpFiles(dir), [])
})

t.test('wrong bytes, cut-off and short bodies, HTTP errors: refused, nothing stored, each origin reported', async t => {
  const { store, dir } = await openStore(t)
  const body = blob(200_000)
  const h = sha256(body)
  const cases: Array<[string, Parameters<Origin['route']>[1], string]> = [
    ['wrong', { kind: 'wrong', body: blob(200_000) }, 'CONTENT_MISMATCH'],
    ['cut', { kind: 'cut', body, sendBytes: 70_000 }, 'CONTENT_MISMATCH'],
    ['short', { kind: 'short', body, sendBytes: 1000 }, 'CONTENT_MISMATCH'],
    ['status', { kind: 'status', status: 500 }, 'DOWNLOAD'],
  ]
  for (const [name, b, code] of cases) {
    const url = origin.route(path(name), b)
    const err = await store.lease(h, [url], { signal: signal() }).then(
      () => undefined,
      e => e as FetchFailed,
    )
    t.ok(err instanceof FetchFailed, `${name}: refused`)
    t.equal(err?.code, code, `${name}: ${code}`)
    t.same(
      err?.failures.map(f => [f.origin, f.code]),
      [[url, code]],
      `${name}: which origin failed how`,
    )
    t.notOk(store.has(h), `${name}: nothing stored`)
    t.notOk(existsSync(join(dir, 'objects', h.slice(0, 2), h)), `${name}: no file`)
    t.same(tmpFiles(dir), [], `${name}: temp file removed`)
  }
  const err = await refused(store.lease(h, [origin.route(path('ok'), { kind: 'ok', body })], { signal: signal(), expectBytes: body.length + 1 }))
  t.equal(err.code, 'CONTENT_MISMATCH', 'the right bytes with the wrong expected length are refused')
  t.match(err.message, /announces 200000 bytes, the task says 200001/)
})

t.test('multiple origins: the first bad, the second good', async t => {
  const { store } = await openStore(t)
  const body = blob(50_000)
  const h = sha256(body)
  const bad = origin.route(path('bad'), { kind: 'wrong', body: blob(50_000) })
  const redirect = origin.route(path('redir'), { kind: 'redirect', to: path('target') })
  const good = origin.route(`/target-${n}`, { kind: 'ok', body })
  const lease = await store.lease(h, [bad, 'http://127.0.0.1:1/refused', redirect], { signal: signal() })
  t.equal(lease.fetched, true)
  t.equal(store.origin(h), good, 'the origin that delivered, after its redirect')
  lease.release()
})

t.test('size cap, too many redirects, non-http origins', async t => {
  const { store } = await openStore(t, { maxObjectBytes: 10_000, maxRedirects: 1 })
  const body = blob(20_000)
  const big = origin.route(path('big'), { kind: 'ok', body })
  t.equal((await refused(store.lease(sha256(body), [big], { signal: signal() }))).code, 'TOO_LARGE')
  const a = path('loop')
  origin.route(a, { kind: 'redirect', to: a })
  const e = await refused(store.lease(sha256(body), [origin.url + a], { signal: signal() }))
  t.match(e.message, /more than 1 redirects/)
  const f = await refused(store.lease(sha256(body), ['file:///etc/passwd'], { signal: signal() }))
  t.equal(f.failures[0]?.code, 'BAD_REQUEST')
  // Redirects from a non-loopback origin may not lead into the device or link-local space
  // (the tests' origins are all loopback, so the rule itself is checked here).
  for (const ip of ['127.0.0.1', '127.9.9.9', '169.254.169.254', '::1', '::ffff:127.0.0.1', 'fe80::1', '0.0.0.0']) t.ok(redirectBlocked(ip), `redirect to ${ip} refused`)
  for (const ip of ['10.0.0.5', '192.168.1.2', '93.184.216.34', '2001:db8::1']) t.notOk(redirectBlocked(ip), `redirect to ${ip} allowed`)
})

t.test('a stalled origin is aborted by the caller signal and by the timeout; the temp file goes', async t => {
  const { store, dir } = await openStore(t, { fetchTimeoutMs: 300 })
  const body = blob(100_000)
  const h = sha256(body)
  const url = origin.route(path('stall'), { kind: 'stall', body, firstBytes: 10_000 })
  const timedOut = await refused(store.lease(h, [url], { signal: signal() }))
  t.equal(timedOut.code, 'DOWNLOAD')
  t.match(timedOut.message, /timed out after 300 ms/)
  const { store: s2, dir: d2 } = await openStore(t)
  const ctl = new AbortController()
  const p = s2.lease(h, [url], { signal: ctl.signal })
  setTimeout(() => ctl.abort(), 100)
  t.equal((await refused(p)).code, 'DOWNLOAD', 'cancelled')
  t.same(tmpFiles(dir), [])
  await until(() => tmpFiles(d2).length === 0, 60_000, 'temp file of the cancelled download removed')
  t.notOk(s2.has(h))
})

t.test('concurrent leases of one missing object share one download; one caller giving up does not stop it', async t => {
  const { store } = await openStore(t)
  const body = blob(64 * 1024)
  const h = sha256(body)
  const url = origin.route(path('trickle'), { kind: 'trickle', body, chunk: 8192, everyMs: 10 })
  const quitter = new AbortController()
  const leases = Promise.all([1, 2, 3, 4].map(() => store.lease(h, [url], { signal: signal() })))
  const gaveUp = store.lease(h, [url], { signal: quitter.signal }).catch(e => e as Error)
  quitter.abort()
  t.match(await gaveUp, { code: 'DOWNLOAD' })
  const got = await leases
  t.equal(origin.hits.get(new URL(url).pathname), 1, 'one request to the origin')
  t.same(got.map(l => l.fetched).sort(), [false, false, false, true], 'one of them did the fetch')
  t.equal(store.stat(h)?.leases, 4)
  for (const l of got) l.release()
})

t.test('the same object arriving twice at once (put beside a download) is stored and counted once', async t => {
  const { store } = await openStore(t)
  const body = blob(200_000)
  const h = sha256(body)
  const url = origin.route(path('trickle'), { kind: 'trickle', body, chunk: 50_000, everyMs: 5 })
  const [lease] = await Promise.all([store.lease(h, [url], { signal: signal() }), store.put(h, body)])
  t.same(store.usage().bytes, body.length, 'usage counts it once')
  t.equal(store.list().length, 1)
  lease.release()
  t.same(store.gc().evicted, [], 'nothing over the quota')
  t.same(await store.repair(), { indexed: 0, forgotten: 0, deleted: 0, temps: 0 }, 'index and disk agree')
  t.equal(store.usage().bytes, body.length)
})

t.test('a caller arriving after the only other caller gave up gets a fresh download, not its cancellation', async t => {
  const { store } = await openStore(t)
  const body = blob(64 * 1024)
  const h = sha256(body)
  const url = origin.route(path('trickle'), { kind: 'trickle', body, chunk: 8192, everyMs: 10 })
  const quitter = new AbortController()
  const gaveUp = store.lease(h, [url], { signal: quitter.signal }).catch(e => e as Error)
  quitter.abort()
  const lease = await store.lease(h, [url], { signal: signal() })
  t.match(await gaveUp, { code: 'DOWNLOAD', message: 'cancelled' })
  t.equal(lease.fetched, true)
  t.equal(lease.bytes, body.length)
  lease.release()
})

t.test('quota: LRU eviction of unpinned, unleased objects; NO_SPACE when nothing can go', async t => {
  const clock = new ManualClock()
  const { store } = await openStore(t, { quotaBytes: 4 * 100_000, maxObjectBytes: 100_000, clock })
  const objs = [0, 1, 2, 3].map(() => blob(100_000))
  for (const o of objs) {
    clock.advance(1000)
    await store.put(sha256(o), o)
  }
  const [a, b, c, d] = objs.map(o => sha256(o)) as [string, string, string, string]
  store.pin(a) // oldest, pinned
  clock.advance(1000)
  store.leaseLocal(c)?.release() // c used recently
  const heldB = store.leaseLocal(b)! // b leased (and so also recent)
  clock.advance(1000)
  const e = blob(100_000)
  await store.put(sha256(e), e)
  t.notOk(store.has(d), 'd, least recently used and free, evicted first')
  t.ok(store.has(a) && store.has(b) && store.has(c), 'pinned, leased and recent kept')
  const f = blob(100_000)
  await store.put(sha256(f), f)
  t.notOk(store.has(c), 'then c')
  t.ok(store.has(b), 'leased b still kept although older than e')
  const g = blob(100_000)
  store.pin(sha256(e))
  store.pin(sha256(f))
  const err = await store.put(sha256(g), g).catch(x => x as Error)
  t.match(err, { code: 'NO_SPACE' }, 'everything pinned or leased: refused')
  t.notOk(store.has(sha256(g)))
  t.equal(store.usage().bytes, 4 * 100_000, 'nothing evicted for a request that could not fit anyway')
  t.match(store.admit(100_000), { ok: false, code: 'NO_SPACE' })
  heldB.release()
  t.same(store.admit(100_000), { ok: true }, 'b can go once released')
  t.match(store.admit(200_000), { ok: false, code: 'TOO_LARGE' })
  store.unpin(a)
  t.same(store.list().find(o => o.sha256 === a)?.pinned, false)
})

t.test('a full disk is a clear NO_SPACE, before anything is written', async t => {
  const { store, dir } = await openStore(t, { diskFree: () => 70 * MiB, reserveDiskBytes: 64 * MiB })
  const body = blob(1000)
  const url = origin.route(path('ok'), { kind: 'ok', body })
  t.match(store.admit(20 * MiB), { ok: false, code: 'NO_SPACE', message: /disk has/ })
  const err = await refused(store.lease(sha256(body), [url], { signal: signal(), expectBytes: 20 * MiB }))
  t.equal(err.code, 'NO_SPACE')
  t.same(tmpFiles(dir), [])
})

t.test('index repair: files deleted or added behind the store, corrupt files, stray temp files', async t => {
  const dir = tmp('cairn-cache-')
  const { store } = await openStore(t, { dir })
  const [x, y] = [blob(1000), blob(2000)]
  await store.put(sha256(x), x)
  await store.put(sha256(y), y)
  store.pin(sha256(y))
  store.close()
  rmSync(join(dir, 'objects', sha256(x).slice(0, 2), sha256(x)))
  // A complete object whose index row was never written (crash after the rename).
  const z = blob(3000)
  const zh = sha256(z)
  mkdirSync(join(dir, 'objects', zh.slice(0, 2)), { recursive: true })
  writeFileSync(join(dir, 'objects', zh.slice(0, 2), zh), z)
  // Bit rot: a file whose bytes no longer match its name, with a size the index disagrees with.
  const w = blob(500)
  const wh = sha256(w)
  mkdirSync(join(dir, 'objects', wh.slice(0, 2)), { recursive: true })
  writeFileSync(join(dir, 'objects', wh.slice(0, 2), wh), w.subarray(0, 400))
  writeFileSync(join(dir, 'tmp', `${zh}.abc.part`), 'partial')
  writeFileSync(join(dir, 'objects', zh.slice(0, 2), 'not-a-hash'), 'junk')
  // A symlink named like an object, pointing outside the store at bytes that match its name.
  const outside = join(tmp('cairn-outside-'), 'secret')
  writeFileSync(outside, 'secret bytes')
  const sh = sha256('secret bytes')
  mkdirSync(join(dir, 'objects', sh.slice(0, 2)), { recursive: true })
  symlinkSync(outside, join(dir, 'objects', sh.slice(0, 2), sh))
  const { store: again } = await openStore(t, { dir })
  t.same(
    again
      .list()
      .map(o => o.sha256)
      .sort(),
    [sha256(y), zh].sort(),
    'index matches the verified files',
  )
  t.equal(again.stat(sha256(y))?.pinned, true, 'pins survive')
  t.notOk(existsSync(join(dir, 'objects', sh.slice(0, 2), sh)), 'a symlink is never an object: deleted')
  t.ok(existsSync(outside), 'and what it pointed at is untouched')
  t.same(tmpFiles(dir), [])
  t.same(await again.repair(), { indexed: 0, forgotten: 0, deleted: 0, temps: 0 }, 'a second repair finds nothing')
})

t.test("a stored object is checked against each caller's expected length and cap", async t => {
  const { store } = await openStore(t)
  const body = blob(1000)
  const h = sha256(body)
  await store.put(h, body)
  await t.rejects(store.lease(h, [], { signal: signal(), expectBytes: 999 }), { code: 'CONTENT_MISMATCH' })
  await t.rejects(store.lease(h, [], { signal: signal(), maxBytes: 999 }), { code: 'TOO_LARGE' })
  t.equal(store.stat(h)?.leases, 0, 'refused leases are released')
  const ok = await store.lease(h, [], { signal: signal(), expectBytes: 1000, maxBytes: 1000 })
  t.equal(ok.fetched, false)
  ok.release()
  await t.rejects(store.lease(sha256('missing'), [], { signal: signal() }), { code: 'NOT_FOUND' }, 'absent and no origin')
})
