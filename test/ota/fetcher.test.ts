// The target fetcher (ota/fetcher.ts) against real loopback servers that misbehave on
// purpose: dropped connections resumed with Range, servers ignoring Range (200) or
// refusing it (416), stalls, wrong lengths and wrong bytes.

import t, { type Test } from 'tap'
import { createHash } from 'node:crypto'
import { existsSync, readFileSync, statSync, writeFileSync } from 'node:fs'
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { join } from 'node:path'
import { fetchTarget } from '../../ota/fetcher.js'
import { parseRange, serveStatic } from '../../ota/tuf-serve.js'
import { payload, tmp } from '../helpers/release.js'

const SIZE = 300_000
const dir = tmp()
const file = payload(dir, 'blob.bin', SIZE)
const body = readFileSync(file)
const sha256 = createHash('sha256').update(body).digest('hex')

type Handler = (req: IncomingMessage, res: ServerResponse, n: number) => void
async function server(t: Test, handler: Handler): Promise<{ url: string; ranges: Array<string | undefined> }> {
  const ranges: Array<string | undefined> = []
  const s = createServer((req, res) => {
    ranges.push(req.headers.range)
    handler(req, res, ranges.length)
  })
  await new Promise<void>(r => s.listen(0, '127.0.0.1', r))
  t.teardown(() => new Promise<void>(r => (s.closeAllConnections(), s.close(() => r()))))
  return { url: `http://127.0.0.1:${(s.address() as AddressInfo).port}/blob.bin`, ranges }
}

/** Serves `data` honouring a single Range, as a good static server does. */
function sendRanged(req: IncomingMessage, res: ServerResponse, data: Buffer): void {
  const r = parseRange(req.headers.range, data.length)
  if (r === 'unsatisfiable') return void res.writeHead(416, { 'Content-Range': `bytes */${data.length}` }).end()
  if (!r) return void res.writeHead(200, { 'Content-Length': data.length }).end(data)
  res.writeHead(206, { 'Content-Length': r.end - r.start + 1, 'Content-Range': `bytes ${r.start}-${r.end}/${data.length}` })
  res.end(data.subarray(r.start, r.end + 1))
}

/** Sends the first `cut` bytes of a full response, then kills the connection. */
function sendAndDrop(res: ServerResponse, data: Buffer, cut: number): void {
  res.writeHead(200, { 'Content-Length': data.length })
  res.write(data.subarray(0, cut), () => setTimeout(() => res.socket?.destroy(), 20))
}

const fast = { retryDelayMs: 10, idleTimeoutMs: 2000 }

t.test('plain download with progress; a second call finds it complete and fetches nothing', async t => {
  const s = await server(t, (req, res) => sendRanged(req, res, body))
  const out = join(tmp(), 'a.bin')
  const seen: number[] = []
  const r = await fetchTarget({ url: s.url, file: out, length: SIZE, hashes: { sha256 }, onProgress: p => seen.push(p.bytes), ...fast })
  t.same(r, { received: SIZE, refetched: 0, cached: false, attempts: 1 })
  t.equal(seen.at(-1), SIZE, 'progress reaches the total')
  t.ok(
    seen.every((b, i) => i === 0 || b >= seen[i - 1]!),
    'progress never goes back',
  )
  t.ok(readFileSync(out).equals(body))
  const again = await fetchTarget({ url: s.url, file: out, length: SIZE, hashes: { sha256 }, ...fast })
  t.equal(again.cached, true)
  t.equal(s.ranges.length, 1, 'no second request')
})

t.test('a connection dropped midway is resumed with Range; the overlap is counted as refetched', async t => {
  const s = await server(t, (req, res, n) => (n === 1 ? sendAndDrop(res, body, 200_000) : sendRanged(req, res, body)))
  const out = join(tmp(), 'b.bin')
  const progress: Array<{ bytes: number; refetched: number }> = []
  const r = await fetchTarget({ url: s.url, file: out, length: SIZE, hashes: { sha256 }, resumeOverlap: 1000, onProgress: p => progress.push(p), ...fast })
  t.equal(r.attempts, 2)
  t.equal(s.ranges[0], undefined, 'first request: whole file')
  t.match(s.ranges[1], /^bytes=\d+-$/, 'second request: a Range')
  const from = Number(/^bytes=(\d+)-$/.exec(s.ranges[1]!)![1])
  const partial = from + 1000
  t.ok(partial > 0 && partial <= 200_000, `resumed after ${partial} bytes had arrived`)
  t.equal(r.refetched, 1000, 'exactly the overlap was fetched again')
  t.equal(r.received, partial + (SIZE - from), 'bytes received: the partial, then the rest from the overlap')
  t.equal(progress.at(-1)?.refetched, 1000, 'progress reports refetched bytes')
  t.ok(readFileSync(out).equals(body), 'final file and hash ok')
})

t.test('a partial file from an earlier run (process killed) is resumed', async t => {
  const s = await server(t, (req, res) => sendRanged(req, res, body))
  const out = join(tmp(), 'c.bin')
  writeFileSync(out, body.subarray(0, 123_456))
  const r = await fetchTarget({ url: s.url, file: out, length: SIZE, hashes: { sha256 }, resumeOverlap: 4096, ...fast })
  t.equal(s.ranges[0], `bytes=${123_456 - 4096}-`)
  t.same({ refetched: r.refetched, received: r.received }, { refetched: 4096, received: SIZE - 123_456 + 4096 })
  t.ok(readFileSync(out).equals(body))
})

t.test('a server that ignores Range (200): start over, count the whole partial as refetched', async t => {
  const s = await server(t, (_req, res) => void res.writeHead(200, { 'Content-Length': SIZE }).end(body))
  const out = join(tmp(), 'd.bin')
  writeFileSync(out, body.subarray(0, 50_000))
  const r = await fetchTarget({ url: s.url, file: out, length: SIZE, hashes: { sha256 }, ...fast })
  t.match(s.ranges[0], /^bytes=/, 'it asked for a range')
  t.same({ refetched: r.refetched, received: r.received }, { refetched: 50_000, received: SIZE })
  t.ok(readFileSync(out).equals(body))
})

t.test('416: the partial file does not fit; drop it and fetch the whole file', async t => {
  const s = await server(t, (req, res) => (req.headers.range ? void res.writeHead(416, { 'Content-Range': `bytes */${SIZE}` }).end() : sendRanged(req, res, body)))
  const out = join(tmp(), 'e.bin')
  writeFileSync(out, body.subarray(0, 10_000))
  const r = await fetchTarget({ url: s.url, file: out, length: SIZE, hashes: { sha256 }, ...fast })
  t.same(s.ranges, ['bytes=0-', undefined])
  t.same({ refetched: r.refetched, received: r.received }, { refetched: 10_000, received: SIZE })
  t.ok(readFileSync(out).equals(body))
})

t.test('a stale partial file (other content) fails the hash once, then one fresh download fixes it', async t => {
  const s = await server(t, (req, res) => sendRanged(req, res, body))
  const out = join(tmp(), 'f.bin')
  writeFileSync(out, Buffer.alloc(200_000, 7))
  await fetchTarget({ url: s.url, file: out, length: SIZE, hashes: { sha256 }, resumeOverlap: 0, ...fast })
  t.same(s.ranges, ['bytes=200000-', undefined], 'resumed, hash failed, fetched again from byte 0')
  t.ok(readFileSync(out).equals(body))
})

t.test('wrong bytes of the right length: TARGET_MISMATCH and the file is deleted', async t => {
  const evil = Buffer.from(body)
  evil[1234] = evil[1234]! ^ 0xff
  const s = await server(t, (req, res) => sendRanged(req, res, evil))
  const out = join(tmp(), 'g.bin')
  await t.rejects(fetchTarget({ url: s.url, file: out, length: SIZE, hashes: { sha256 }, ...fast }), { code: 'TARGET_MISMATCH', message: /SHA-256/ })
  t.notOk(existsSync(out), 'deleted')
})

t.test('a server offering another length is refused before any byte is written', async t => {
  for (const size of [SIZE - 1, SIZE + 1]) {
    const other = readFileSync(payload(tmp(), 'x', size))
    const s = await server(t, (req, res) => sendRanged(req, res, other))
    const out = join(tmp(), 'h.bin')
    await t.rejects(
      fetchTarget({ url: s.url, file: out, length: SIZE, hashes: { sha256 }, ...fast }),
      { code: 'TARGET_MISMATCH', message: /offers \d+ bytes, the signed metadata says 300000/ },
      `${size} bytes`,
    )
    t.notOk(existsSync(out))
  }
})

t.test('a stalled server times out; the partial file stays for the next resume', async t => {
  const s = await server(t, (_req, res) => {
    res.writeHead(200, { 'Content-Length': SIZE })
    res.write(body.subarray(0, 70_000)) // …and then nothing
  })
  const out = join(tmp(), 'i.bin')
  // the server never ends its answer: only the idle limit can end the download
  await t.rejects(fetchTarget({ url: s.url, file: out, length: SIZE, hashes: { sha256 }, idleTimeoutMs: 300, retries: 1, retryDelayMs: 10 }), { code: 'DOWNLOAD', message: /no data for 300 ms/ })
  t.equal(s.ranges.length, 2, 'one retry')
  t.ok(statSync(out).size > 0, 'partial file kept')
})

t.test('HTTP errors are DOWNLOAD errors (transient), after the retries', async t => {
  const s = await server(t, (_req, res) => void res.writeHead(503).end())
  await t.rejects(fetchTarget({ url: s.url, file: join(tmp(), 'j.bin'), length: SIZE, hashes: { sha256 }, retries: 2, retryDelayMs: 10 }), { code: 'DOWNLOAD', message: /HTTP 503/ })
  t.equal(s.ranges.length, 3)
})

t.test('against `cairn release serve`: Range, 206, 416, HEAD, no listing, no escape', async t => {
  const root = tmp()
  payload(join(root, 'targets'), 'x.bin', 1000)
  const srv = await serveStatic({ root })
  t.teardown(() => srv.close())
  const get = (path: string, init: RequestInit = {}) => fetch(`${srv.url}${path}`, init)
  let r = await get('/targets/x.bin')
  t.same([r.status, r.headers.get('content-length'), r.headers.get('accept-ranges')], [200, '1000', 'bytes'])
  r = await get('/targets/x.bin', { headers: { Range: 'bytes=100-199' } })
  t.same([r.status, r.headers.get('content-range'), r.headers.get('content-length'), (await r.arrayBuffer()).byteLength], [206, 'bytes 100-199/1000', '100', 100])
  r = await get('/targets/x.bin', { headers: { Range: 'bytes=-10' } })
  t.same([r.status, r.headers.get('content-range')], [206, 'bytes 990-999/1000'])
  r = await get('/targets/x.bin', { headers: { Range: 'bytes=1000-' } })
  t.same([r.status, r.headers.get('content-range')], [416, 'bytes */1000'])
  r = await get('/targets/x.bin', { method: 'HEAD' })
  t.same([r.status, r.headers.get('content-length')], [200, '1000'])
  t.equal((await get('/targets/')).status, 404, 'no directory listing')
  t.equal((await get('/targets/%2e%2e/%2e%2e/etc/passwd')).status, 404, 'no escape from the root')
  t.equal((await get('/targets/x.bin', { method: 'POST' })).status, 405)
  t.equal(srv.server.address() && (srv.server.address() as AddressInfo).address, '127.0.0.1', 'loopback only')
})
