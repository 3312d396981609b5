// The agent's local API (docs/local-api.md): WebSocket on a Unix socket in the state
// dir (mode 0660, for the device's `cairn` group) and, only when configured, on a
// loopback TCP port. A bearer token from a 0640 file is checked before the upgrade.
// Fans the agent's telemetry, events, state and GPIO edges out to subscribed clients.

import { createServer, type IncomingMessage, type Server } from 'node:http'
import { connect } from 'node:net'
import type { Duplex } from 'node:stream'
import { chmodSync, lstatSync, unlinkSync } from 'node:fs'
import { join } from 'node:path'
import { WebSocketServer } from 'ws'
import type { Config } from '../config/config-schema.js'
import { CairnError } from '../../protocol/errors.js'
import type { Logger } from '../../protocol/log.js'
import type { LocalEvent } from '../core/local-bus.js'
import type { AgentStateSnapshot } from '../device-ui/agent-state.js'
import type { TelemetrySample } from '../../hw/index.js'
import type { LocalApiHost } from './ops.js'
import { API_PATH, API_VERSION, type Hello } from './protocol.js'
import { Session } from './session.js'
import { loadOrCreateToken, SOCKET_FILE, TOKEN_FILE, tokenMatches } from './token.js'

export interface LocalApiOptions {
  config: Config['localApi']
  stateDir: string
  log: Logger
  host: LocalApiHost
  now?: () => number
}

export interface LocalApi {
  /** The Unix socket, when it is listening. */
  readonly socketPath: string | undefined
  /** The TCP port, when localApi.port is set and listening. */
  readonly port: number | undefined
  readonly tokenFile: string
  readonly clientCount: number
  close(): Promise<void>
}

// Unix socket paths are limited by sun_path (108 bytes on Linux, with the NUL).
const MAX_SOCKET_PATH = 107

export async function startLocalApi(o: LocalApiOptions): Promise<LocalApi> {
  const { config, log, host } = o
  const now = o.now ?? Date.now
  const tokenFile = config.tokenFile ?? join(o.stateDir, TOKEN_FILE)
  const { token, created } = loadOrCreateToken(tokenFile)
  if (created) log.info({ tokenFile }, 'made a new local API token')
  const sessions = new Set<Session>()
  let upgrading = 0
  let stopping = false
  let lastRefusalLog = -Infinity
  let refusedSinceLog = 0
  /** Connections not (yet) WebSockets: ended at once on close, so an unfinished upgrade
   * request cannot hold the agent's stop for the header timeout. */
  const unupgraded = new Set<Duplex>()
  // allowSynchronousEvents off: ws hands over one message per macrotask, so the replies
  // and GPIO work of earlier requests run between the frames of a burst, and a flood
  // backs up into the socket (TCP back-pressure) instead of into memory.
  const wss = new WebSocketServer({ noServer: true, maxPayload: config.maxFrameBytes, perMessageDeflate: false, clientTracking: false, allowSynchronousEvents: false })
  const hello: Hello = { v: 1, type: 'hello', api: API_VERSION, ...host.hello }

  const broadcast = (topic: 'telemetry' | 'status' | 'gpio', data: unknown, cls: 'telemetry' | 'event') => {
    let text: string | undefined
    for (const s of sessions) {
      if (!s.topics.has(topic)) continue
      text ??= JSON.stringify({ v: 1, type: 'event', topic, ts: now(), data })
      s.send(text, cls)
    }
  }
  const onTelemetry = (sample: TelemetrySample, ts: number) => {
    let text: string | undefined
    for (const s of sessions) {
      if (!s.topics.has('telemetry')) continue
      text ??= JSON.stringify({ v: 1, type: 'event', topic: 'telemetry', ts, data: sample })
      s.send(text, 'telemetry')
    }
  }
  const onEvent = (e: LocalEvent) => {
    let text: string | undefined
    for (const s of sessions) {
      if (!s.topics.has('event') || !s.wantsKind(e.kind)) continue
      text ??= JSON.stringify({ v: 1, type: 'event', topic: 'event', ts: e.ts, data: { kind: e.kind, data: e.data } })
      s.send(text, 'event')
    }
  }
  const onState = (snap: AgentStateSnapshot) => broadcast('status', snap, 'event')
  host.bus.on('telemetry', onTelemetry)
  host.bus.on('event', onEvent)
  host.state.on('change', onState)

  const refuse = (socket: Duplex, status: number, text: string, body: string) => {
    socket.end(`HTTP/1.1 ${status} ${text}\r\nConnection: close\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`)
  }
  const onUpgrade = (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    socket.on('error', err => log.debug({ err }, 'local API socket error'))
    if (stopping) return refuse(socket, 503, 'Service Unavailable', 'the agent is stopping\n')
    const path = (req.url ?? '').split('?')[0]
    if (path !== API_PATH) return refuse(socket, 404, 'Not Found', `the local API is at ${API_PATH}\n`)
    if (!tokenMatches(req.headers.authorization, token)) {
      // At most one line per 10 s: anyone who can reach the socket could fill the journal.
      refusedSinceLog++
      if (now() - lastRefusalLog >= 10_000) {
        log.warn({ path, hasHeader: req.headers.authorization !== undefined, refused: refusedSinceLog }, 'local API: refused a client with a missing or wrong token')
        lastRefusalLog = now()
        refusedSinceLog = 0
      }
      return refuse(socket, 401, 'Unauthorized', `send Authorization: Bearer <token from ${tokenFile}>\n`)
    }
    if (sessions.size + upgrading >= config.maxClients) {
      log.warn({ maxClients: config.maxClients }, 'local API: refused a client, too many connected')
      return refuse(socket, 503, 'Service Unavailable', `at most ${config.maxClients} local API clients (localApi.maxClients)\n`)
    }
    // ws never calls back for a handshake it refuses (bad Sec-WebSocket-* headers) or a
    // socket that closed meanwhile: the slot is given back on either outcome, once.
    upgrading++
    let counted = true
    const settle = () => {
      if (counted) upgrading--
      counted = false
    }
    socket.once('close', settle)
    wss.handleUpgrade(req, socket, head, ws => {
      settle()
      socket.off('close', settle)
      unupgraded.delete(socket)
      if (stopping) return ws.terminate()
      const session: Session = new Session(ws, {
        host,
        log,
        maxQueueBytes: config.maxQueueBytes,
        maxFrameBytes: config.maxFrameBytes,
        gpioEvent: (pin, value, edge) => broadcast('gpio', { pin, value, edge }, 'event'),
        onClosed: s => sessions.delete(s),
      })
      sessions.add(session)
      session.send(JSON.stringify(hello), 'reply')
      log.debug({ clients: sessions.size }, 'local API client connected')
    })
  }
  const servers: Server[] = []
  const makeServer = () => {
    // Short header/request timeouts: a peer that never finishes its upgrade request (no
    // token checked yet) holds a connection for seconds, not minutes.
    const server = createServer({ headersTimeout: 10_000, requestTimeout: 10_000, connectionsCheckingInterval: 2_000 }, (_req, res) => {
      res.writeHead(426, { 'content-type': 'text/plain; charset=utf-8', upgrade: 'websocket' })
      res.end(`this is the Cairn local API: open a WebSocket to ${API_PATH} (docs/local-api.md)\n`)
    })
    server.on('upgrade', onUpgrade)
    server.on('clientError', (_err, socket) => socket.destroy())
    server.on('connection', socket => {
      unupgraded.add(socket)
      socket.once('close', () => unupgraded.delete(socket))
    })
    servers.push(server)
    return server
  }

  let socketPath: string | undefined
  let port: number | undefined
  // Idempotent: the agent may close it from stop() and again from start-up.
  let closing: Promise<void> | undefined
  const close = (): Promise<void> => (closing ??= closeOnce())
  const closeOnce = async () => {
    stopping = true
    host.bus.off('telemetry', onTelemetry)
    host.bus.off('event', onEvent)
    host.state.off('change', onState)
    for (const s of sessions) s.close(1001, 'agent stopping')
    const closed = Promise.all(servers.map(s => new Promise<void>(r => s.close(() => r()))))
    // Upgraded connections end with their session's close handshake (or its 1 s terminate).
    for (const s of unupgraded) s.destroy()
    await closed
    if (socketPath) removeSocket(socketPath, log)
  }
  try {
    socketPath = await listenUnix(makeServer(), config.socket ?? join(o.stateDir, SOCKET_FILE))
    if (config.port !== 0) {
      if (!isLoopback(config.host)) log.warn({ host: config.host, port: config.port }, 'local API: TCP listens beyond loopback; anyone on that network who has the token can use it')
      port = await listenTcp(makeServer(), config.host, config.port)
    }
  } catch (err) {
    await close()
    throw err
  }
  log.info({ socket: socketPath, ...(port !== undefined ? { tcp: `${config.host}:${port}` } : {}) }, 'local API up')
  return {
    socketPath,
    port,
    tokenFile,
    get clientCount() {
      return sessions.size
    },
    close,
  }
}

async function listenUnix(server: Server, path: string): Promise<string> {
  if (Buffer.byteLength(path) > MAX_SOCKET_PATH) throw new CairnError('INVALID_CONFIG', `localApi.socket: ${path} is longer than ${MAX_SOCKET_PATH} bytes, the limit of a Unix socket path`)
  const st = lstatOrUndefined(path)
  if (st) {
    // Only a socket is ever removed: a mistyped localApi.socket naming a real file, or a
    // symlink someone planted, is refused rather than deleted or followed.
    if (!st.isSocket()) throw new CairnError('INVALID_CONFIG', `localApi.socket: ${path} exists and is ${st.isSymbolicLink() ? 'a symlink' : 'not a socket'}; refusing to replace it`)
    // A socket file left by a crash is removed; one that answers belongs to a running agent.
    if (await answers(path)) throw new CairnError('LOCKED', `another process serves the local API on ${path}`)
    unlinkSync(path)
  }
  // bind() makes the socket file with the process umask: made owner-only here, so no
  // other user can connect in the moment before the chmod to 0660. listen() binds
  // synchronously, so the umask is back before any other code runs.
  const umask = setUmask(0o077)
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject)
      server.listen(path, () => {
        server.off('error', reject)
        resolve()
      })
      if (umask !== undefined) setUmask(umask)
    })
  } finally {
    if (umask !== undefined) setUmask(umask)
  }
  try {
    chmodSync(path, 0o660)
  } catch (err) {
    await new Promise<void>(r => server.close(() => r()))
    removeSocket(path)
    throw err
  }
  return path
}

/** process.umask(mask), or undefined where it cannot be set (worker threads). */
function setUmask(mask: number): number | undefined {
  try {
    return process.umask(mask)
  } catch {
    return undefined
  }
}

function lstatOrUndefined(path: string): ReturnType<typeof lstatSync> | undefined {
  try {
    return lstatSync(path)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined
    throw err
  }
}

/** Removes our socket file, and only a socket (never what may have replaced it). */
function removeSocket(path: string, log?: Logger): void {
  try {
    if (lstatOrUndefined(path)?.isSocket()) unlinkSync(path)
  } catch (err) {
    log?.warn({ err, path }, 'could not remove the local API socket')
  }
}

function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\./.test(host)
}

async function listenTcp(server: Server, host: string, port: number): Promise<number> {
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(port, host, () => {
      server.off('error', reject)
      resolve()
    })
  })
  return (server.address() as { port: number }).port
}

function answers(path: string): Promise<boolean> {
  return new Promise(resolve => {
    const sock = connect(path)
    sock.once('connect', () => {
      sock.destroy()
      resolve(true)
    })
    sock.once('error', () => resolve(false))
  })
}
