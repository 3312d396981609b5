// A client of the agent's local API (docs/local-api.md) for programs on the device:
// Node-RED's Cairn nodes (bundled into their package with esbuild), scripts, tests.
// It owns one WebSocket, matches replies to requests, and, with `reconnect`, comes
// back after the agent restarts (backoff 0.5 s doubling to 10 s) and subscribes again
// to what it was subscribed to. Depends on `ws` and Node built-ins only.

import { EventEmitter } from 'node:events'
import WebSocket from 'ws'
import type { Hello, Op, OpArgs, OpResult, Topic } from './protocol.js'
import { readTokenFile } from './token.js'

export { readTokenFile }
export type { Hello, Op, Topic }

export type LocalApiLog = (level: 'debug' | 'info' | 'warn', message: string) => void

export interface LocalApiClientOptions {
  /** Unix socket of the agent, e.g. /var/lib/cairn/api.sock. One of socketPath or url. */
  socketPath?: string
  /** ws://127.0.0.1:PORT (when the agent has localApi.port set); the /v1 path is added. */
  url?: string
  token: string
  /** Re-read the token from this file before each attempt (an agent that lost its file makes a new one). */
  tokenFile?: string
  /** Reconnect after a lost connection or a failed attempt; default false. */
  reconnect?: boolean
  log?: LocalApiLog
  /** Reply timeout when request() is given none; default 30 s. */
  timeoutMs?: number
}

/** An Error with the stable code of protocol/errors.ts ('UNAUTHORIZED', 'TIMEOUT', 'PIN_BUSY', ...). */
export class LocalApiError extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message)
    this.name = 'LocalApiError'
  }
}

interface Pending {
  resolve(data: unknown): void
  reject(err: Error): void
  timer: NodeJS.Timeout
}

const MIN_BACKOFF_MS = 500
const MAX_BACKOFF_MS = 10_000

export interface LocalApiClientEvents {
  hello: [Hello]
  event: [topic: Topic, data: unknown, ts: number]
  connected: []
  disconnected: [reason: string]
  error: [Error]
}

export class LocalApiClient extends EventEmitter<LocalApiClientEvents> {
  private ws: WebSocket | undefined
  private readonly pending = new Map<string, Pending>()
  private nextId = 0
  private closed = false
  private backoff = MIN_BACKOFF_MS
  private retryTimer: NodeJS.Timeout | undefined
  private topics: Topic[] = []
  private kinds: string[] | undefined
  private helloSeen: Hello | undefined
  /** Callers of connect() waiting for the next hello (or the next failure). */
  private waiters: Array<{ resolve(h: Hello): void; reject(e: Error): void }> = []

  constructor(private readonly opts: LocalApiClientOptions) {
    super()
    if ((opts.socketPath === undefined) === (opts.url === undefined)) throw new LocalApiError('BAD_REQUEST', 'give exactly one of socketPath and url')
  }

  /** The agent's hello of the current connection, if connected. */
  get hello(): Hello | undefined {
    return this.helloSeen
  }

  get connected(): boolean {
    return this.helloSeen !== undefined && this.ws?.readyState === WebSocket.OPEN
  }

  /** Resolves with the first hello. Rejects if the first attempt fails (code
   * UNAUTHORIZED, UNAVAILABLE, DISCONNECTED); with `reconnect` it keeps trying after that. */
  connect(): Promise<Hello> {
    if (this.helloSeen) return Promise.resolve(this.helloSeen)
    return new Promise((resolve, reject) => {
      this.waiters.push({ resolve, reject })
      this.closed = false
      if (this.ws) return
      // Called again while a retry waits: try now instead, and only once.
      if (this.retryTimer) clearTimeout(this.retryTimer)
      this.retryTimer = undefined
      this.open()
    })
  }

  /** Sends one request and waits for its reply; rejects with a LocalApiError. */
  request<O extends Op>(op: O, args?: OpArgs<O>, timeoutMs?: number): Promise<OpResult<O>>
  request<T = unknown>(op: string, args?: unknown, timeoutMs?: number): Promise<T>
  request(op: string, args?: unknown, timeoutMs?: number): Promise<unknown> {
    const ws = this.ws
    if (!ws || ws.readyState !== WebSocket.OPEN || !this.helloSeen) return Promise.reject(new LocalApiError('DISCONNECTED', 'not connected to the Cairn agent'))
    const id = String(++this.nextId)
    const frame = JSON.stringify({ v: 1, type: 'req', id, op, ...(args === undefined ? {} : { args }) })
    return new Promise((resolve, reject) => {
      const timer = setTimeout(
        () => {
          this.pending.delete(id)
          reject(new LocalApiError('TIMEOUT', `no reply to ${op} within ${timeoutMs ?? this.opts.timeoutMs ?? 30_000} ms`))
        },
        timeoutMs ?? this.opts.timeoutMs ?? 30_000,
      )
      this.pending.set(id, {
        resolve: data => {
          if (op === 'subscribe' || op === 'unsubscribe') this.remember(data)
          resolve(data)
        },
        reject,
        timer,
      })
      ws.send(frame, err => {
        if (!err) return
        const p = this.pending.get(id)
        if (!p) return
        this.pending.delete(id)
        clearTimeout(p.timer)
        reject(new LocalApiError('DISCONNECTED', `could not send ${op}: ${err.message}`))
      })
    })
  }

  /** Subscribes to topics (and, for 'event', kind prefixes); kept across reconnects. */
  subscribe(topics: Topic[], kinds?: string[]): Promise<OpResult<'subscribe'>> {
    return this.request('subscribe', { topics, ...(kinds ? { kinds } : {}) })
  }

  close(): void {
    this.closed = true
    if (this.retryTimer) clearTimeout(this.retryTimer)
    this.retryTimer = undefined
    this.failPending('DISCONNECTED', 'client closed')
    const ws = this.ws
    this.ws = undefined
    this.helloSeen = undefined
    if (ws) {
      ws.removeAllListeners()
      ws.on('error', () => undefined)
      if (ws.readyState === WebSocket.OPEN) ws.close(1000)
      else ws.terminate()
    }
    this.settleWaiters(new LocalApiError('DISCONNECTED', 'client closed'))
  }

  private open(): void {
    let token = this.opts.token
    if (this.opts.tokenFile !== undefined) {
      try {
        token = readTokenFile(this.opts.tokenFile)
      } catch (err) {
        return this.failed(new LocalApiError('UNAUTHORIZED', (err as Error).message))
      }
    }
    const address = this.opts.socketPath !== undefined ? `ws+unix://${this.opts.socketPath}:/v1` : `${this.opts.url!.replace(/\/+$/, '').replace(/\/v1$/, '')}/v1`
    const ws = new WebSocket(address, { headers: { authorization: `Bearer ${token}` }, perMessageDeflate: false, handshakeTimeout: 10_000 })
    this.ws = ws
    let failure: LocalApiError | undefined
    ws.on('unexpected-response', (_req, res) => {
      const code = res.statusCode === 401 ? 'UNAUTHORIZED' : res.statusCode === 503 ? 'UNAVAILABLE' : 'DISCONNECTED'
      failure = new LocalApiError(
        code,
        `the agent refused the connection: HTTP ${res.statusCode}${code === 'UNAUTHORIZED' ? ' (wrong or missing token)' : code === 'UNAVAILABLE' ? ' (too many clients)' : ''}`,
      )
      res.resume()
      ws.terminate()
    })
    ws.on('error', err => {
      failure ??= new LocalApiError('DISCONNECTED', `cannot reach the Cairn agent: ${err.message}`)
    })
    ws.on('message', (data, isBinary) => {
      if (ws !== this.ws) return
      this.onFrame(ws, isBinary ? '' : data.toString())
    })
    ws.on('close', (code, reason) => {
      if (ws !== this.ws) return
      this.ws = undefined
      const wasUp = this.helloSeen !== undefined
      this.helloSeen = undefined
      const why = failure?.message ?? `closed (${code}${reason.length ? ` ${reason.toString()}` : ''})`
      this.failPending(code === 1009 ? 'TOO_LARGE' : 'DISCONNECTED', code === 1009 ? "a frame was over the agent's localApi.maxFrameBytes; the agent closed the connection" : `connection lost: ${why}`)
      if (wasUp) {
        this.opts.log?.('warn', `disconnected from the Cairn agent: ${why}`)
        this.emit('disconnected', why)
      }
      this.failed(failure ?? new LocalApiError('DISCONNECTED', why))
    })
  }

  private failed(err: LocalApiError): void {
    this.settleWaiters(err)
    this.report(err)
    if (this.closed || !this.opts.reconnect) return
    const delay = this.backoff
    this.backoff = Math.min(MAX_BACKOFF_MS, this.backoff * 2)
    this.opts.log?.('debug', `reconnecting in ${delay} ms`)
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined
      if (!this.closed) this.open()
    }, delay)
    this.retryTimer.unref?.()
  }

  private onFrame(ws: WebSocket, text: string): void {
    let f: Record<string, unknown>
    try {
      f = JSON.parse(text) as Record<string, unknown>
    } catch {
      return this.report(new LocalApiError('BAD_JSON', 'the agent sent a frame that is not JSON'))
    }
    // A throw here would escape ws's socket handler and take the host (Node-RED) down.
    if (typeof f !== 'object' || f === null || Array.isArray(f)) return this.report(new LocalApiError('BAD_JSON', 'the agent sent a frame that is not a JSON object'))
    if (f.type === 'hello') return void this.onHello(ws, f as unknown as Hello).catch(err => this.report(err as Error))
    if (f.type === 'res' && typeof f.id === 'string') {
      const p = this.pending.get(f.id)
      if (!p) return
      this.pending.delete(f.id)
      clearTimeout(p.timer)
      if (f.ok === true) p.resolve(f.data)
      else {
        const e = (f.error ?? {}) as { code?: string; message?: string }
        p.reject(new LocalApiError(e.code ?? 'INTERNAL', e.message ?? 'request failed'))
      }
      return
    }
    if (f.type === 'event' && typeof f.topic === 'string') return void this.emit('event', f.topic as Topic, f.data, typeof f.ts === 'number' ? f.ts : Date.now())
    if (f.type === 'error') {
      const e = (f.error ?? {}) as { code?: string; message?: string }
      this.report(new LocalApiError(e.code ?? 'INTERNAL', e.message ?? 'the agent reported an error'))
    }
  }

  private async onHello(ws: WebSocket, h: Hello): Promise<void> {
    this.helloSeen = h
    this.backoff = MIN_BACKOFF_MS
    if (this.topics.length > 0) {
      try {
        await this.request('subscribe', { topics: this.topics, ...(this.kinds ? { kinds: this.kinds } : {}) })
      } catch (err) {
        this.report(err as Error)
      }
    }
    // Lost (or closed) while re-subscribing: 'disconnected' went out already, so no
    // 'connected' after it; the next connection says hello again.
    if (this.ws !== ws || this.helloSeen !== h) return
    this.opts.log?.('info', `connected to the Cairn agent ${h.device} (${h.version})`)
    this.emit('hello', h)
    this.emit('connected')
    const waiters = this.waiters
    this.waiters = []
    for (const w of waiters) w.resolve(h)
  }

  private settleWaiters(err: Error): void {
    const waiters = this.waiters
    this.waiters = []
    for (const w of waiters) w.reject(err)
  }

  private remember(data: unknown): void {
    const d = data as { topics?: Topic[]; kinds?: string[] }
    if (Array.isArray(d.topics)) this.topics = d.topics
    this.kinds = Array.isArray(d.kinds) ? d.kinds : undefined
  }

  private failPending(code: string, message: string): void {
    for (const [id, p] of this.pending) {
      clearTimeout(p.timer)
      this.pending.delete(id)
      p.reject(new LocalApiError(code, message))
    }
  }

  /** 'error' only when someone listens: an unhandled 'error' would kill the host process. */
  private report(err: Error): void {
    if (this.listenerCount('error') > 0) this.emit('error', err)
    else this.opts.log?.('warn', err.message)
  }
}
