// Test origin: a real HTTP server on 127.0.0.1 whose paths behave well or badly on
// purpose (wrong bytes, cut short, lying Content-Length, slow, redirects), counting hits.

import { createHash, randomBytes } from 'node:crypto'
import { createServer, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'

type Behaviour =
  | { kind: 'ok'; body: Buffer }
  /** Serves these bytes (not the ones the test asks for). */
  | { kind: 'wrong'; body: Buffer }
  /** Announces the full length, sends `sendBytes`, then drops the connection. */
  | { kind: 'cut'; body: Buffer; sendBytes: number }
  /** Announces and sends only the first `sendBytes` (a short but "complete" response). */
  | { kind: 'short'; body: Buffer; sendBytes: number }
  /** Sends the headers and `firstBytes`, then nothing more until the client gives up. */
  | { kind: 'stall'; body: Buffer; firstBytes: number }
  /** Sends `chunk` bytes every `everyMs` ms. */
  | { kind: 'trickle'; body: Buffer; chunk: number; everyMs: number }
  | { kind: 'status'; status: number }
  | { kind: 'redirect'; to: string }

export interface Origin {
  url: string
  hits: Map<string, number>
  /** Registers a path and returns its full URL. */
  route(path: string, b: Behaviour): string
  close(): Promise<void>
}

export const sha256 = (b: Buffer | string) => createHash('sha256').update(b).digest('hex')
export const blob = (n: number) => randomBytes(n)

export async function startOrigin(): Promise<Origin> {
  const routes = new Map<string, Behaviour>()
  const hits = new Map<string, number>()
  const timers = new Set<NodeJS.Timeout>()
  const server: Server = createServer((req, res) => {
    const path = req.url ?? '/'
    hits.set(path, (hits.get(path) ?? 0) + 1)
    const b = routes.get(path)
    if (!b) return void res.writeHead(404).end()
    serve(b, res, timers)
  })
  await new Promise<void>(r => server.listen(0, '127.0.0.1', () => r()))
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  return {
    url,
    hits,
    route(path, b) {
      routes.set(path, b)
      return url + path
    },
    close: () =>
      new Promise<void>(r => {
        for (const t of timers) clearInterval(t)
        server.close(() => r())
        server.closeAllConnections()
      }),
  }
}

function serve(b: Behaviour, res: ServerResponse, timers: Set<NodeJS.Timeout>): void {
  const head = (len: number) => res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(len) })
  switch (b.kind) {
    case 'ok':
    case 'wrong':
      head(b.body.length)
      res.end(b.body)
      return
    case 'cut':
      head(b.body.length)
      res.write(b.body.subarray(0, b.sendBytes), () => setTimeout(() => res.socket?.destroy(), 20))
      return
    case 'short':
      head(b.sendBytes)
      res.end(b.body.subarray(0, b.sendBytes))
      return
    case 'stall':
      head(b.body.length)
      res.write(b.body.subarray(0, b.firstBytes))
      return
    case 'trickle': {
      head(b.body.length)
      let at = 0
      const t = setInterval(() => {
        if (res.destroyed) return void clearInterval(t)
        const next = Math.min(at + b.chunk, b.body.length)
        res.write(b.body.subarray(at, next))
        at = next
        if (at >= b.body.length) {
          clearInterval(t)
          res.end()
        }
      }, b.everyMs)
      timers.add(t)
      return
    }
    case 'status':
      res.writeHead(b.status).end()
      return
    case 'redirect':
      res.writeHead(302, { location: b.to }).end()
      return
  }
}
