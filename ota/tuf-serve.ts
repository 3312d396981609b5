// `cairn release serve`: the published tree as static files over HTTP, for development and
// tests. Loopback only (127.0.0.1): production hosting is any static server or CDN. GET
// and HEAD, single byte ranges (206, 416), Content-Length, no directory listings, nothing
// outside the root (no "..", no symlinks out).

import { createReadStream, realpathSync, statSync } from 'node:fs'
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { join, sep } from 'node:path'

export interface StaticServer {
  readonly server: Server
  readonly port: number
  /** http://127.0.0.1:PORT */
  readonly url: string
  close(): Promise<void>
}

export interface ServeOptions {
  root: string
  port?: number
  /** Called once per request (method, path, status), e.g. for a log line. */
  onRequest?: (method: string, path: string, status: number) => void
}

export async function serveStatic(opts: ServeOptions): Promise<StaticServer> {
  const root = realpathSync(opts.root)
  const server = createServer((req, res) => {
    const status = handle(root, req, res)
    opts.onRequest?.(req.method ?? '?', req.url ?? '?', status)
  })
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(opts.port ?? 0, '127.0.0.1', () => resolve())
  })
  const port = (server.address() as AddressInfo).port
  return {
    server,
    port,
    url: `http://127.0.0.1:${port}`,
    close: () =>
      new Promise<void>(resolve => {
        server.closeAllConnections()
        server.close(() => resolve())
      }),
  }
}

/** Parses a Range header against a file of `size` bytes: the range, 'unsatisfiable', or
 * null to ignore it (absent, malformed or multi-range: RFC 9110 lets a server send 200). */
export function parseRange(header: string | undefined, size: number): { start: number; end: number } | 'unsatisfiable' | null {
  if (!header) return null
  const m = /^bytes=(\d*)-(\d*)$/.exec(header.trim())
  if (!m || (m[1] === '' && m[2] === '')) return null
  if (m[1] === '') {
    const suffix = Number(m[2])
    if (suffix === 0) return 'unsatisfiable'
    return { start: Math.max(0, size - suffix), end: size - 1 }
  }
  const start = Number(m[1])
  const end = m[2] === '' ? size - 1 : Math.min(Number(m[2]), size - 1)
  if (m[2] !== '' && Number(m[2]) < start) return null
  if (start >= size) return 'unsatisfiable'
  return { start, end }
}

function handle(root: string, req: IncomingMessage, res: ServerResponse): number {
  const send = (status: number, text: string, headers: Record<string, string | number> = {}): number => {
    res.writeHead(status, { 'Content-Type': 'text/plain; charset=utf-8', 'Content-Length': Buffer.byteLength(text), ...headers })
    res.end(req.method === 'HEAD' ? undefined : text)
    return status
  }
  if (req.method !== 'GET' && req.method !== 'HEAD') return send(405, 'method not allowed\n', { Allow: 'GET, HEAD' })
  const file = resolvePath(root, req.url ?? '/')
  if (!file) return send(404, 'not found\n')
  let size: number
  try {
    const st = statSync(file)
    if (!st.isFile()) return send(404, 'not found\n') // no directory listings
    size = st.size
  } catch {
    return send(404, 'not found\n')
  }
  const headers: Record<string, string | number> = {
    'Content-Type': file.endsWith('.json') ? 'application/json' : 'application/octet-stream',
    'Accept-Ranges': 'bytes',
    // timestamp.json changes in place; every other published file is named by version or hash.
    'Cache-Control': file.endsWith(`${sep}timestamp.json`) ? 'no-cache' : 'public, max-age=31536000, immutable',
  }
  const range = parseRange(req.headers.range, size)
  if (range === 'unsatisfiable') return send(416, 'range not satisfiable\n', { 'Content-Range': `bytes */${size}` })
  const { start, end } = range ?? { start: 0, end: size - 1 }
  const status = range ? 206 : 200
  if (range) headers['Content-Range'] = `bytes ${start}-${end}/${size}`
  headers['Content-Length'] = size === 0 ? 0 : end - start + 1
  res.writeHead(status, headers)
  if (req.method === 'HEAD' || size === 0) {
    res.end()
    return status
  }
  const stream = createReadStream(file, { start, end })
  stream.on('error', () => res.destroy())
  stream.pipe(res)
  return status
}

/** Maps a URL path to a file under root, or null when it would leave root. */
function resolvePath(root: string, url: string): string | null {
  let path: string
  try {
    path = decodeURIComponent(new URL(url, 'http://x').pathname)
  } catch {
    return null
  }
  if (path.includes('\0')) return null
  const parts = path.split('/').filter(p => p !== '')
  if (parts.some(p => p === '..' || p === '.' || p.includes('\\'))) return null
  const candidate = join(root, ...parts)
  try {
    const real = realpathSync(candidate)
    return real === root || real.startsWith(root + sep) ? real : null
  } catch {
    return null
  }
}
