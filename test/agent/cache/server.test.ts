// The cache HTTP server on 127.0.0.1 with a real store: names, ranges, conditional
// requests, HEAD, traversal attempts over raw sockets, many clients, and readers that
// keep every byte while eviction (or an unlink behind the store's back) happens.

import t, { type Test } from 'tap'
import { request } from 'node:http'
import { connect } from 'node:net'
import { rmSync, writeFileSync } from 'node:fs'
import { cidFromSha256 } from '../../../agent/cache/cid.js'
import { startCacheServer, type ServedRecord } from '../../../agent/cache/http-server.js'
import { ContentStore } from '../../../agent/cache/store.js'
import { tmp, until } from '../../helpers/agent.js'
import { blob, sha256 } from './origin.js'

interface Res {
  status: number
  headers: Record<string, string | string[] | undefined>
  body: Buffer
}

function get(url: string, headers: Record<string, string> = {}, method = 'GET'): Promise<Res> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method, headers, agent: false }, res => {
      const chunks: Buffer[] = []
      res.on('data', c => chunks.push(c))
      res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body: Buffer.concat(chunks) }))
      res.on('error', reject)
    })
    req.on('error', reject)
    req.end()
  })
}

/** Sends raw request bytes (paths no HTTP client would send) and returns the status line. */
function raw(port: number, text: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = connect(port, '127.0.0.1', () => s.end(text))
    let data = ''
    s.on('data', d => (data += d.toString('latin1')))
    s.on('close', () => resolve(data.split('\r\n')[0] ?? ''))
    s.on('error', reject)
  })
}

async function setup(t: Test, quotaBytes = 64 * 1024 * 1024) {
  const store = await ContentStore.open({ dir: tmp('cairn-cache-srv-'), quotaBytes, maxObjectBytes: 32 * 1024 * 1024, diskFree: () => 1e12 })
  const served: ServedRecord[] = []
  const srv = await startCacheServer({ store, host: '127.0.0.1', port: 0, onServed: r => served.push(r) })
  t.teardown(async () => {
    await srv.close()
    store.close()
  })
  return { store, srv, served }
}

t.test('GET by hex and by CID, HEAD, headers', async t => {
  const { store, srv } = await setup(t)
  const body = blob(100_000)
  const h = sha256(body)
  await store.put(h, body)
  for (const name of [h, cidFromSha256(h)]) {
    const r = await get(`${srv.url}/c/${name}`)
    t.equal(r.status, 200, name)
    t.ok(r.body.equals(body), 'every byte')
    t.equal(r.headers['content-length'], String(body.length))
    t.equal(r.headers.etag, `"${h}"`)
    t.equal(r.headers['accept-ranges'], 'bytes')
    t.equal(r.headers['cache-control'], 'public, max-age=31536000, immutable')
    t.equal(r.headers['x-content-cid'], cidFromSha256(h))
  }
  const head = await get(`${srv.url}/c/${h}`, {}, 'HEAD')
  t.equal(head.status, 200)
  t.equal(head.headers['content-length'], String(body.length), 'HEAD: the length of what GET would send')
  t.equal(head.body.length, 0)
  t.equal((await get(`${srv.url}/c/${sha256('absent')}`)).status, 404)
  t.equal((await get(`${srv.url}/c/${h}`, {}, 'DELETE')).status, 405)
  t.equal((await get(`${srv.url}/c/${h}`, {}, 'PUT')).headers.allow, 'GET, HEAD')
})

t.test('Range edge cases', async t => {
  const { store, srv } = await setup(t)
  const body = blob(1000)
  const h = sha256(body)
  await store.put(h, body)
  const url = `${srv.url}/c/${h}`
  const part = async (range: string, start: number, end: number) => {
    const r = await get(url, { range })
    t.equal(r.status, 206, range)
    t.equal(r.headers['content-range'], `bytes ${start}-${end}/1000`, `${range}: Content-Range`)
    t.equal(r.headers['content-length'], String(end - start + 1), `${range}: Content-Length`)
    t.ok(r.body.equals(body.subarray(start, end + 1)), `${range}: the right bytes`)
  }
  await part('bytes=0-0', 0, 0)
  await part('bytes=999-999', 999, 999)
  await part('bytes=-10', 990, 999)
  await part('bytes=500-', 500, 999)
  await part('bytes=990-5000', 990, 999)
  for (const range of ['bytes=1000-', 'bytes=1000-2000', 'bytes=-0']) {
    const r = await get(url, { range })
    t.equal(r.status, 416, range)
    t.equal(r.headers['content-range'], 'bytes */1000', `${range}: Content-Range bytes */size`)
  }
  for (const range of ['bytes=5-1', 'bytes=x-y', 'lines=1-2', 'bytes=0-1,5-9']) {
    const r = await get(url, { range })
    t.equal(r.status, 200, `${range}: ignored, whole object`)
    t.equal(r.body.length, 1000)
  }
  const empty = Buffer.alloc(0)
  await store.put(sha256(empty), empty)
  const e = await get(`${srv.url}/c/${sha256(empty)}`)
  t.equal(e.status, 200, 'empty object')
  t.equal(e.headers['content-length'], '0')
  t.equal((await get(`${srv.url}/c/${sha256(empty)}`, { range: 'bytes=0-' })).status, 416, 'any range of an empty object')
  const hr = await get(url, { range: 'bytes=10-19' }, 'HEAD')
  t.equal(hr.status, 206, 'HEAD with Range')
  t.equal(hr.headers['content-length'], '10')
})

t.test('ETag, If-None-Match, If-Range', async t => {
  const { store, srv } = await setup(t)
  const body = blob(5000)
  const h = sha256(body)
  await store.put(h, body)
  const url = `${srv.url}/c/${h}`
  const nm = await get(url, { 'if-none-match': `"${h}"` })
  t.equal(nm.status, 304)
  t.equal(nm.body.length, 0)
  t.equal(nm.headers.etag, `"${h}"`)
  t.equal((await get(url, { 'if-none-match': `W/"${h}"` })).status, 304, 'weak comparison')
  t.equal((await get(url, { 'if-none-match': '"other"' })).status, 200)
  const ir = await get(url, { range: 'bytes=0-9', 'if-range': `"${h}"` })
  t.equal(ir.status, 206, 'If-Range matches: the range')
  const stale = await get(url, { range: 'bytes=0-9', 'if-range': '"something-else"' })
  t.equal(stale.status, 200, 'If-Range does not match: the whole object')
  t.equal(stale.body.length, 5000)
})

t.test('no path escapes the store', async t => {
  const { store, srv } = await setup(t)
  const body = blob(10)
  await store.put(sha256(body), body)
  const h = sha256(body)
  const attempts = [
    `/c/../index.db`,
    `/c/%2e%2e/index.db`,
    `/c/..%2findex.db`,
    `/c/${h.slice(0, 2)}%2f${h}`,
    `/c/${h.slice(0, 2)}/${h}`,
    `/c/../../../../etc/passwd`,
    `/c/${h}/..`,
    `/c/${h}%00`,
    `/objects/${h.slice(0, 2)}/${h}`,
    `/index.db`,
    `/../index.db`,
  ]
  for (const p of attempts) {
    const line = await raw(srv.port, `GET ${p} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`)
    t.match(line, /^HTTP\/1\.1 (400|404) /, `${p}: ${line}`)
  }
  t.match(await raw(srv.port, `GET /c/${h}\u0000 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`), /^HTTP\/1\.1 400 /, 'raw NUL')
  t.match(await raw(srv.port, `GET /c/${'a'.repeat(4000)} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`), /^HTTP\/1\.1 414 /, 'very long path')
  t.match(await raw(srv.port, `GET /c/${'a'.repeat(100_000)} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`), /^HTTP\/1\.1 (414|431) /, 'longer than the header limit')
  t.match(await raw(srv.port, `GET http://evil/c/${h} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`), /^HTTP\/1\.1 404 /, 'absolute-form target')
})

t.test('a file changed behind the store is not served', async t => {
  const { store, srv, served } = await setup(t)
  const body = blob(100_000)
  const h = sha256(body)
  await store.put(h, body)
  writeFileSync(store.objectPath(h), body.subarray(0, 99_000))
  t.equal((await get(`${srv.url}/c/${h}`)).status, 404, 'truncated: not served')
  t.equal(store.stat(h)?.leases, 0, 'lease released')
  t.same(served, [], 'nothing counted')
  t.same((await store.repair()).deleted, 1, 'the next repair re-hashes and deletes it')
})

t.test('a client that stops reading is cut off after the idle timeout, releasing its lease', async t => {
  const store = await ContentStore.open({ dir: tmp('cairn-cache-srv-'), quotaBytes: 1 << 26, maxObjectBytes: 1 << 25, diskFree: () => 1e12 })
  const served: ServedRecord[] = []
  const srv = await startCacheServer({ store, host: '127.0.0.1', port: 0, idleTimeoutMs: 300, onServed: r => served.push(r) })
  t.teardown(async () => {
    await srv.close()
    store.close()
  })
  const body = blob(24 * 1024 * 1024)
  const h = sha256(body)
  await store.put(h, body)
  const r = slowReader(`${srv.url}/c/${h}`)
  await r.started
  // The paused reader never resumes: only the server's idle timeout can end this.
  await until(() => served.length === 1, 60_000, 'the stalled response closed')
  t.equal(store.stat(h)?.leases, 0, 'lease released')
  t.ok(served[0]!.bytes < body.length, `counted what was written (${served[0]!.bytes}), not the whole object`)
})

t.test('many concurrent clients get every byte', async t => {
  const { store, srv } = await setup(t)
  const body = blob(1024 * 1024)
  const h = sha256(body)
  await store.put(h, body)
  const results = await Promise.all(Array.from({ length: 50 }, (_, i) => get(`${srv.url}/c/${h}`, i % 2 ? { range: `bytes=${i * 1000}-` } : {})))
  results.forEach((r, i) => {
    const want = i % 2 ? body.subarray(i * 1000) : body
    if (!r.body.equals(want)) t.fail(`client ${i}: wrong bytes`)
  })
  t.pass('50 clients, all bytes right')
})

/** Starts reading and stops after the first chunk; resumes when told. */
function slowReader(url: string) {
  let resume!: () => Promise<Buffer>
  const started = new Promise<void>((ready, reject) => {
    request(url, { agent: false }, res => {
      const chunks: Buffer[] = []
      res.once('data', c => {
        chunks.push(c)
        res.pause()
        ready()
      })
      resume = () =>
        new Promise(done => {
          res.on('data', c => chunks.push(c))
          res.on('end', () => done(Buffer.concat(chunks)))
          res.resume()
        })
    })
      .on('error', reject)
      .end()
  })
  return { started, resume: () => resume() }
}

t.test('readers keep every correct byte while eviction runs and when the file is unlinked', async t => {
  // Larger than loopback socket buffers (up to ~10 MiB with autotuning), so the paused
  // readers' responses cannot finish, and release their leases, before the eviction.
  const size = 24 * 1024 * 1024
  const { store, srv } = await setup(t, 2 * size)
  const a = blob(size)
  const c = blob(size)
  await store.put(sha256(a), a)
  await store.put(sha256(c), c)
  const readers = Array.from({ length: 4 }, () => slowReader(`${srv.url}/c/${sha256(a)}`))
  await Promise.all(readers.map(r => r.started))
  t.equal(store.stat(sha256(a))?.leases, 4, 'each reader holds a lease')
  const b = blob(size)
  await store.put(sha256(b), b)
  t.ok(store.has(sha256(a)), 'a is being read: kept')
  t.notOk(store.has(sha256(c)), 'c evicted instead, although a is older')
  // Behind the store's back: the open descriptors still read the whole file.
  rmSync(store.objectPath(sha256(a)))
  const bodies = await Promise.all(readers.map(r => r.resume()))
  for (const got of bodies) t.ok(got.equals(a), 'reader got every correct byte')
  // The server releases a lease when its side of the response closes, which can be just after the client's end.
  await until(() => store.stat(sha256(a))?.leases === 0, 60_000, 'leases released when the responses end')
  t.pass('leases released when the responses end')
  t.equal((await get(`${srv.url}/c/${sha256(a)}`)).status, 404, 'a deleted file is not served')
  t.same((await store.repair()).forgotten, 1, 'and the next repair forgets it')
})
