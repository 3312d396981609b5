// One connected local API client: reads and validates its frames, runs its requests,
// sends it the events it subscribed to, and keeps what it is sent bounded. A client
// that stops reading first loses telemetry, then events; one that stays over the bound
// is closed (1008). Nothing a client sends can throw out of here.

import { Value } from '@sinclair/typebox/value'
import type WebSocket from 'ws'
import { CairnError, errorBody, type ErrorCode } from '../../protocol/errors.js'
import type { Logger } from '../../protocol/log.js'
import { releaseLines, runOp, type LentLine, type LocalApiHost, type OpSession } from './ops.js'
import { OPS, RequestEnvelopeSchema, type Op, type Topic } from './protocol.js'

/** How long a client may stay over its queue bound before it is closed. */
const SLOW_CLIENT_GRACE_MS = 2000
/** Requests one client may have running at once before its socket stops being read
 * (TCP back-pressure slows a flood without refusing anything)... */
const PAUSE_IN_FLIGHT = 32
/** ...and, counting frames already read when reading paused, the most before a request is answered UNAVAILABLE. */
const MAX_IN_FLIGHT = 256

export interface SessionOptions {
  host: LocalApiHost
  log: Logger
  maxQueueBytes: number
  maxFrameBytes: number
  /** Fan-out of gpio events to every subscribed client. */
  gpioEvent(pin: number, value: 0 | 1, edge: 'rising' | 'falling'): void
  onClosed(session: Session): void
}

export type SendClass = 'reply' | 'telemetry' | 'event'

export class Session implements OpSession {
  readonly topics = new Set<Topic>()
  kinds: string[] | undefined
  readonly lines = new Map<number, LentLine>()
  /** Frames dropped because the client did not read, by class. */
  readonly dropped = { telemetry: 0, event: 0 }
  private inFlight = 0
  private closed = false
  private overTimer: NodeJS.Timeout | undefined
  /** Reading stopped because the client does not read its replies. */
  private backlogged = false

  constructor(
    private readonly ws: WebSocket,
    private readonly o: SessionOptions,
  ) {
    ws.on('message', (data, isBinary) => {
      // A throw here would surface in ws's socket 'data' handler and take the agent down.
      try {
        this.onMessage(data as Buffer, isBinary)
      } catch (err) {
        o.log.error({ err }, 'local API: a frame could not be handled')
        this.errorFrame('INTERNAL', 'the agent could not handle this frame')
      }
    })
    ws.on('error', err => o.log.debug({ err }, 'local API client error'))
    ws.on('close', () => void this.onClose())
    this.interceptOversized()
  }

  gpioEvent(pin: number, value: 0 | 1, edge: 'rising' | 'falling'): void {
    this.o.gpioEvent(pin, value, edge)
  }

  /** Whether an 'event'-topic frame of this kind goes to this client. */
  wantsKind(kind: string): boolean {
    return this.kinds === undefined || this.kinds.some(k => kind.startsWith(k))
  }

  /** Sends one serialised frame, unless the client is too far behind for its class. */
  send(text: string, cls: SendClass): void {
    if (this.closed) return
    const queued = this.ws.bufferedAmount
    const max = this.o.maxQueueBytes
    if (cls === 'telemetry' && queued > max / 2) {
      this.dropped.telemetry++
      return this.watchBacklog()
    }
    if (cls === 'event' && queued > max) {
      this.dropped.event++
      return this.watchBacklog()
    }
    this.ws.send(text, err => {
      if (err) return this.o.log.debug({ err }, 'local API send failed')
      // Called once this frame reached the socket: the backlog may have drained.
      if (this.backlogged && this.ws.bufferedAmount <= max / 2) {
        this.backlogged = false
        this.updateReading()
      }
    })
    if (this.ws.bufferedAmount > max) {
      // Replies are never dropped, so a client that sends requests and does not read the
      // answers is not read either until it catches up (or is closed by watchBacklog).
      if (cls === 'reply' && !this.backlogged) {
        this.backlogged = true
        this.updateReading()
      }
      this.watchBacklog()
    }
  }

  /** Ends the connection (agent stopping). */
  close(code: number, reason: string): void {
    this.ws.close(code, reason)
    // A client that does not read never answers the close handshake.
    setTimeout(() => this.ws.terminate(), 1000).unref()
  }

  private onMessage(data: Buffer, isBinary: boolean): void {
    if (isBinary) return this.errorFrame('BAD_REQUEST', 'frames are JSON text, not binary')
    let frame: unknown
    try {
      frame = JSON.parse(data.toString('utf8'))
    } catch (err) {
      return this.errorFrame('BAD_JSON', `frame is not JSON: ${(err as Error).message}`)
    }
    if (!Value.Check(RequestEnvelopeSchema, frame)) {
      const id = (frame as { id?: unknown } | null)?.id
      const why = firstError(RequestEnvelopeSchema, frame)
      if (typeof id === 'string' && id.length > 0 && id.length <= 64) return this.reply(id, new CairnError('BAD_REQUEST', `not a request frame: ${why}`))
      return this.errorFrame('BAD_REQUEST', `not a request frame ({ v: 1, type: 'req', id, op, args? }): ${why}`)
    }
    const { id, op } = frame
    if (!Object.hasOwn(OPS, op)) return this.reply(id, new CairnError('UNKNOWN_OP', `unknown op ${JSON.stringify(op)}; ops: ${Object.keys(OPS).join(', ')}`))
    const schema = OPS[op as Op].args
    const args = frame.args ?? {}
    if (!Value.Check(schema, args)) return this.reply(id, new CairnError('BAD_REQUEST', `${op}: ${firstError(schema, args)}`))
    if (this.inFlight >= MAX_IN_FLIGHT) return this.reply(id, new CairnError('UNAVAILABLE', `more than ${MAX_IN_FLIGHT} requests in flight on this connection; wait for replies`))
    this.inFlight++
    this.updateReading()
    runOp(op as Op, args as never, this, this.o.host)
      .then(
        data => this.done(id, data),
        err => this.done(id, err instanceof Error ? err : new Error(String(err))),
      )
      .catch(err => this.o.log.error({ err }, 'local API: a reply could not be sent'))
  }

  private done(id: string, result: unknown): void {
    this.inFlight--
    this.updateReading()
    // A line opened by a request that finished after its client left is released now.
    if (this.closed) return void releaseLines(this).catch(() => undefined)
    this.reply(id, result)
  }

  /** Reads from the client only while it has few requests running and reads its replies. */
  private updateReading(): void {
    if (this.closed) return
    const pause = this.inFlight >= PAUSE_IN_FLIGHT || this.backlogged
    if (pause && !this.ws.isPaused) this.ws.pause()
    else if (!pause && this.ws.isPaused) this.ws.resume()
  }

  private reply(id: string, result: unknown): void {
    if (result instanceof Error) {
      const body = errorBody(result)
      if (body.code === 'INTERNAL') this.o.log.error({ err: result }, 'local API request failed')
      return this.send(JSON.stringify({ v: 1, type: 'res', id, ok: false, error: body }), 'reply')
    }
    let text: string
    try {
      text = JSON.stringify({ v: 1, type: 'res', id, ok: true, data: result ?? null })
    } catch (err) {
      // A result that is not JSON (a BigInt, a cycle) from a part of the agent: an error, not a crash.
      return this.reply(id, new Error(`the result of this request cannot be sent as JSON: ${(err as Error).message}`))
    }
    this.send(text, 'reply')
  }

  private errorFrame(code: ErrorCode, message: string): void {
    this.send(JSON.stringify({ v: 1, type: 'error', error: { code, message } }), 'reply')
  }

  private watchBacklog(): void {
    if (this.overTimer || this.closed) return
    this.overTimer = setTimeout(() => {
      this.overTimer = undefined
      if (this.ws.bufferedAmount <= this.o.maxQueueBytes) return
      this.o.log.warn({ queued: this.ws.bufferedAmount, dropped: this.dropped }, 'local API client does not read; closing it')
      this.close(1008, 'slow client: not reading')
    }, SLOW_CLIENT_GRACE_MS)
    this.overTimer.unref()
  }

  /**
   * ws closes a connection whose frame is over maxPayload (1009) before its 'error'
   * event, so the client would never learn why. Its receiver reports the error first:
   * an error frame sent from there goes out just ahead of the close frame. This
   * reaches into ws's `_receiver` (checked by test/agent/local-api/limits.test.ts); without
   * it the client still gets close code 1009.
   */
  private interceptOversized(): void {
    const receiver = (this.ws as unknown as { _receiver?: { prependListener?: (e: string, f: (err: Error & { code?: string }) => void) => void } })._receiver
    receiver?.prependListener?.('error', err => {
      if (err.code === 'WS_ERR_UNSUPPORTED_MESSAGE_LENGTH') this.errorFrame('TOO_LARGE', `frame over localApi.maxFrameBytes (${this.o.maxFrameBytes} bytes); closing the connection (1009)`)
    })
  }

  private async onClose(): Promise<void> {
    if (this.closed) return
    this.closed = true
    if (this.overTimer) clearTimeout(this.overTimer)
    this.o.onClosed(this)
    await releaseLines(this).catch(err => this.o.log.warn({ err }, "releasing a client's GPIO lines failed"))
  }
}

function firstError(schema: Parameters<typeof Value.Errors>[0], value: unknown): string {
  const e = Value.Errors(schema, value).First()
  if (!e) return 'invalid'
  return `${e.path || '/'} ${e.message}`
}
