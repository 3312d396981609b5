// The cache's HTTP server: GET and HEAD of `/c/<sha256 | CIDv1>`, nothing else.
// A name either matches the hash pattern exactly or the request is refused before the
// filesystem is touched, so no path can reach outside the store. Bodies stream from an
// open file descriptor under a lease (eviction waits; an fd also survives an unlink),
// with backpressure, and every response reports the body bytes the socket accepted.

import { closeSync, constants, createReadStream, fstatSync, openSync, readSync, type ReadStream } from 'node:fs'
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { systemClock, type Clock } from '../../protocol/clock.js'
import type { Logger } from '../../protocol/log.js'
import { cidFromSha256, parseContentId } from './cid.js'
import { ifRangeAllows, noneMatch, parseRange } from './range.js'
import type { ContentStore } from './store.js'

const CACHE_PATH_PREFIX = '/c/'
const MAX_URL = 1024
const CHUNK = 256 * 1024
/** Bodies up to this size are read in one call and sent in one write. */
const SMALL = 64 * 1024

/** One answered request for a stored object. */
export interface ServedRecord {
  sha256: string
  method: 'GET' | 'HEAD'
  status: 200 | 206 | 304 | 416
  /** Body bytes the socket accepted (a client that leaves mid-body counts what was written). */
  bytes: number
  /** The inclusive byte range of a 206. */
  range?: [number, number]
  /** ms since the epoch, when the request arrived. */
  ts: number
}

export interface CacheServerOptions {
  store: ContentStore
  host: string
  port: number
  log?: Logger
  clock?: Clock
  onServed?: (r: ServedRecord) => void
  /** A connection with no socket activity this long is closed (default 60 s): a client
   * that stops reading would otherwise hold its lease and descriptor for ever. */
  idleTimeoutMs?: number
  /** Connections served at once (default 256; each may hold an object descriptor too). */
  maxConnections?: number
}

export interface CacheServer {
  readonly server: Server
  readonly port: number
  /** http://host:port */
  readonly url: string
  close(): Promise<void>
}

export async function startCacheServer(o: CacheServerOptions): Promise<CacheServer> {
  const clock = o.clock ?? systemClock
  const server = createServer((req, res) => {
    handle(o, clock, req, res).catch(err => {
      o.log?.error({ err }, 'cache request failed')
      if (!res.headersSent) res.writeHead(500, { 'content-type': 'text/plain' }).end('internal error\n')
      else res.destroy()
    })
  })
  server.keepAliveTimeout = 5000
  server.setTimeout(o.idleTimeoutMs ?? 60_000)
  server.maxConnections = o.maxConnections ?? 256
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(o.port, o.host, () => {
      server.off('error', reject)
      resolve()
    })
  })
  const port = (server.address() as AddressInfo).port
  const host = o.host.includes(':') ? `[${o.host}]` : o.host
  return {
    server,
    port,
    url: `http://${host}:${port}`,
    close: () =>
      new Promise<void>(resolve => {
        server.close(() => resolve())
        server.closeAllConnections()
      }),
  }
}

const one = (h: string | string[] | undefined): string | undefined => (Array.isArray(h) ? h.join(', ') : h)

function plain(res: ServerResponse, status: number, text: string, extra: Record<string, string> = {}): void {
  res.writeHead(status, { 'content-type': 'text/plain; charset=utf-8', 'content-length': String(Buffer.byteLength(text) + 1), ...extra }).end(text + '\n')
}

/** The sha256 a request path names, or an HTTP error. */
export function resolvePath(url: string): { sha256: string } | { status: number; message: string } {
  if (url.length > MAX_URL) return { status: 414, message: 'URL too long' }
  const q = url.indexOf('?')
  const path = q < 0 ? url : url.slice(0, q)
  if (!path.startsWith(CACHE_PATH_PREFIX)) return { status: 404, message: 'not found: objects live under /c/<sha256 or CID>' }
  // No decoding, no normalisation: the raw name must be a hash or a CID as is.
  const sha256 = parseContentId(path.slice(CACHE_PATH_PREFIX.length))
  if (sha256 === undefined) return { status: 400, message: 'bad content id: expected /c/<64 lowercase hex> or /c/<CIDv1 raw sha2-256, bafkrei…>' }
  return { sha256 }
}

async function handle(o: CacheServerOptions, clock: Clock, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const ts = clock.now()
  const method = req.method
  if (method !== 'GET' && method !== 'HEAD') return plain(res, 405, 'method not allowed', { allow: 'GET, HEAD' })
  const target = resolvePath(req.url ?? '/')
  if ('status' in target) return plain(res, target.status, target.message)
  const { sha256 } = target
  const lease = o.store.leaseLocal(sha256)
  if (!lease) return plain(res, 404, `not found: ${sha256}`)
  let fd: number
  let size: number
  try {
    // Synchronous open and fstat: metadata calls that take microseconds, where a trip
    // through the libuv thread pool for each would cost more than the call.
    // O_NOFOLLOW: only the store's own regular files, never a symlink planted among them.
    fd = openSync(lease.path, constants.O_RDONLY | constants.O_NOFOLLOW)
    size = fstatSync(fd).size
  } catch (err) {
    lease.release()
    // Deleted behind the store's back: the next repair forgets it.
    o.log?.warn({ sha256, err }, 'cache object missing on disk')
    return plain(res, 404, `not found: ${sha256}`)
  }
  if (size !== lease.bytes) {
    // Changed behind the store's back (truncated, overwritten): these cannot be the bytes
    // the name promises. Not served; the next repair re-hashes the file.
    closeSync(fd)
    lease.release()
    o.log?.error({ sha256, size, indexed: lease.bytes }, 'cache object damaged on disk: not served')
    return plain(res, 404, `not found: ${sha256}`)
  }
  let released = false
  const done = (status: ServedRecord['status'], bytes: number, range?: [number, number]) => {
    if (released) return
    released = true
    lease.release()
    o.onServed?.({ sha256, method, status, bytes, ...(range ? { range } : {}), ts })
  }
  const etag = `"${sha256}"`
  const common: Record<string, string> = {
    etag,
    'cache-control': 'public, max-age=31536000, immutable',
    'accept-ranges': 'bytes',
    'x-content-sha256': sha256,
    'x-content-cid': cidFromSha256(sha256),
  }
  if (noneMatch(req.headers['if-none-match'], etag)) {
    closeSync(fd)
    res.writeHead(304, common).end()
    return done(304, 0)
  }
  const r = ifRangeAllows(one(req.headers['if-range']), etag) ? parseRange(req.headers.range, size) : ({ kind: 'full' } as const)
  if (r.kind === 'unsatisfiable') {
    closeSync(fd)
    res.writeHead(416, { ...common, 'content-range': `bytes */${size}`, 'content-length': '0' }).end()
    return done(416, 0)
  }
  const start = r.kind === 'partial' ? r.start : 0
  const end = r.kind === 'partial' ? r.end : size - 1
  const length = end - start + 1
  const status = r.kind === 'partial' ? 206 : 200
  const headers: Record<string, string> = { ...common, 'content-type': 'application/octet-stream', 'content-length': String(length) }
  if (r.kind === 'partial') headers['content-range'] = `bytes ${start}-${end}/${size}`
  const range: [number, number] | undefined = r.kind === 'partial' ? [start, end] : undefined
  res.writeHead(status, headers)
  if (method === 'HEAD' || length === 0) {
    closeSync(fd)
    res.end()
    return done(status, 0, range)
  }
  // Counted in write callbacks: a byte counts once the socket took it, so a client that
  // disconnects mid-body is not credited with what was never written.
  let sent = 0
  res.once('close', () => {
    stream?.destroy()
    // Write callbacks of the last chunks run before 'close'; one turn later is safe.
    setImmediate(() => done(status, sent, range))
  })
  let stream: ReadStream | undefined
  if (length <= SMALL) {
    // One synchronous read and one write. For a small object in the page cache a trip
    // through the thread pool costs more than the read itself (4 KiB objects here: about
    // 11k -> 17k requests/s); an uncached read from an SD card blocks the loop for a
    // millisecond or so, which is why bodies over SMALL stream instead.
    const buf = Buffer.allocUnsafe(length)
    let n = 0
    try {
      n = readSync(fd, buf, 0, length, start)
    } finally {
      closeSync(fd)
    }
    if (n !== length) {
      o.log?.error({ sha256, err: `short read ${n}/${length}` }, 'cache read failed')
      return void res.destroy()
    }
    res.write(buf, e => {
      if (!e) sent += length
    })
    res.end()
    return
  }
  stream = createReadStream('', { fd, start, end, highWaterMark: CHUNK, autoClose: true })
  stream.on('data', chunk => {
    const n = chunk.length
    const more = res.write(chunk, err => {
      if (!err) sent += n
    })
    if (!more) {
      stream!.pause()
      res.once('drain', () => stream!.resume())
    }
  })
  stream.once('end', () => res.end())
  stream.once('error', err => {
    o.log?.error({ sha256, err }, 'cache read failed')
    res.destroy(err)
  })
}
