// Local health endpoints: /healthz (JSON) and /metrics (Prometheus text), on
// 127.0.0.1 unless configured otherwise.

import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import type { Logger } from '../../protocol/log.js'
import type { Metrics } from './metrics.js'

export interface HealthSource {
  health(): { ok: boolean; [k: string]: unknown }
  metrics: Metrics
}

async function startHealthServer(host: string, port: number, src: HealthSource): Promise<{ server: Server; port: number }> {
  const server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0]
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD' }).end()
      return
    }
    if (path === '/healthz') {
      const h = src.health()
      res.writeHead(h.ok ? 200 : 503, { 'content-type': 'application/json' }).end(JSON.stringify(h) + '\n')
    } else if (path === '/metrics') {
      res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4' }).end(src.metrics.render())
    } else {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n')
    }
  })
  server.requestTimeout = 10_000
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(port, host, () => {
      server.off('error', reject)
      resolve()
    })
  })
  return { server, port: (server.address() as AddressInfo).port }
}

/** The health endpoint as the agent runs it: a port that cannot be bound is logged and
 * left off (health is a convenience; a busy port must not keep the device off its fleet). */
export async function startHealthEndpoint(cfg: { enabled: boolean; host: string; port: number }, src: HealthSource, log: Logger): Promise<{ server: Server; port: number } | undefined> {
  if (!cfg.enabled) return undefined
  try {
    const h = await startHealthServer(cfg.host, cfg.port, src)
    log.info({ url: `http://${cfg.host}:${h.port}/healthz` }, 'health endpoint up')
    return h
  } catch (err) {
    log.error({ err, port: cfg.port }, 'health endpoint not started')
    return undefined
  }
}

/** Closes the server and every connection still open on it. */
export async function closeHealthEndpoint(h: { server: Server } | undefined): Promise<void> {
  if (!h) return
  await new Promise<void>(r => h.server.close(() => r()))
  h.server.closeAllConnections()
}
