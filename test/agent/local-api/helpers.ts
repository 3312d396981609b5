// Helpers for the local API tests: an agent on a real broker with the fake GPIO, a raw
// WebSocket that records every frame the server sends (each checked against the JSON
// Schemas in docs/schemas/local-api-*.json with Ajv), and a way to wait for frames.

import { readFileSync } from 'node:fs'
import { request as httpRequest } from 'node:http'
import { Ajv, type ValidateFunction } from 'ajv'
import WebSocket from 'ws'
import { startTestAgent, type TestAgent } from '../../helpers/agent.js'
import type { FakeGpio } from '../../../hw/gpio/index.js'
import { guardMs } from '../../helpers/patience.js'

const ajv = new Ajv({ allErrors: true, strict: true, strictTuples: false })
for (const name of ['hello', 'request', 'response', 'error', 'event', 'ops']) {
  ajv.addSchema(JSON.parse(readFileSync(new URL(`../../../docs/schemas/local-api-${name}.json`, import.meta.url), 'utf8')))
}
const validator = (id: string): ValidateFunction => ajv.getSchema(id)!

/** Null when `frame` matches what docs/schemas says the server sends, else the errors. */
function frameErrors(frame: unknown): string | null {
  const type = (frame as { type?: string }).type
  const v = validator(`https://cairn.dev/schemas/local-api-${type === 'res' ? 'response' : type}.json`)
  if (!v) return `no schema for frame type ${type}`
  return v(frame) ? null : ajv.errorsText(v.errors)
}

/** Null when `data` matches the documented result of `op`. */
export function resultErrors(op: string, data: unknown): string | null {
  const v = validator(`https://cairn.dev/schemas/local-api-ops.json#/$defs/${op}.result`)
  return v(data) ? null : ajv.errorsText(v.errors)
}

/** Null when `frame` is a request the docs accept. */
export function requestErrors(frame: unknown): string | null {
  const v = validator('https://cairn.dev/schemas/local-api-request.json')
  return v(frame) ? null : ajv.errorsText(v.errors)
}

export interface ApiAgent extends TestAgent {
  socket: string
  token: string
  fake(): Promise<FakeGpio>
}

/** An agent with the fake GPIO and no inference worker: the worker loads TensorFlow in the
 * background, and `infer` answers BUSY or UNSUPPORTED depending on how far it got, so
 * tests would race it (and every agent here would pay for it). The infer op's path to the
 * task queue is tested with a stub runner in api.test.ts. */
export async function startApiAgent(url: string, values: Record<string, unknown> = {}, stateDir?: string): Promise<ApiAgent> {
  const a = await startTestAgent({ url, values: { gpio: { driver: 'fake' }, tasks: { types: ['cache'] }, ...values }, ...(stateDir ? { stateDir } : {}) })
  const api = a.agent.localApi
  if (!api?.socketPath) throw new Error(`local API did not start: ${a.logs.filter(l => l.includes('local API')).join('\n')}`)
  return Object.assign(a, {
    socket: api.socketPath,
    token: readFileSync(api.tokenFile, 'utf8').trim(),
    fake: async () => (await a.agent.deviceUi.gpio.driver()) as FakeGpio,
  })
}

/** A raw client: every frame it receives is kept (and must match the docs schemas). */
export class RawClient {
  readonly frames: Array<Record<string, unknown>> = []
  readonly schemaProblems: string[] = []
  closed: { code: number; reason: string } | undefined
  private n = 0

  private constructor(readonly ws: WebSocket) {
    ws.on('message', data => {
      const f = JSON.parse(data.toString()) as Record<string, unknown>
      const err = frameErrors(f)
      if (err) this.schemaProblems.push(`${JSON.stringify(f).slice(0, 200)}: ${err}`)
      this.frames.push(f)
    })
    ws.on('close', (code, reason) => (this.closed = { code, reason: reason.toString() }))
    ws.on('error', () => undefined)
  }

  static open(address: string, token: string | undefined, opts: WebSocket.ClientOptions = {}): Promise<RawClient> {
    const ws = new WebSocket(address.startsWith('ws') ? address : `ws+unix://${address}:/v1`, { headers: token === undefined ? {} : { authorization: `Bearer ${token}` }, ...opts })
    const c = new RawClient(ws)
    return new Promise((resolve, reject) => {
      ws.once('open', () => resolve(c))
      ws.once('unexpected-response', (_req, res) => reject(Object.assign(new Error(`HTTP ${res.statusCode}`), { status: res.statusCode })))
      ws.once('error', reject)
    })
  }

  sendRaw(data: string | Buffer, binary = false): void {
    this.ws.send(data, { binary })
  }

  /** Sends a request and waits for its reply frame. */
  async req(op: string, args?: unknown): Promise<Record<string, unknown>> {
    const id = `r${++this.n}`
    this.sendRaw(JSON.stringify({ v: 1, type: 'req', id, op, ...(args === undefined ? {} : { args }) }))
    return this.waitFor(f => f.type === 'res' && f.id === id, `reply to ${op}`)
  }

  async waitFor(pred: (f: Record<string, unknown>) => boolean, what: string, timeoutMs = 10_000): Promise<Record<string, unknown>> {
    const end = Date.now() + guardMs(timeoutMs)
    for (;;) {
      const hit = this.frames.find(pred)
      if (hit) return hit
      if (Date.now() > end) throw new Error(`timed out waiting for ${what}; last frames: ${JSON.stringify(this.frames.slice(-3)).slice(0, 600)}`)
      if (this.closed) throw new Error(`connection closed (${this.closed.code} ${this.closed.reason}) while waiting for ${what}`)
      await new Promise(r => setTimeout(r, 20))
    }
  }

  async waitClosed(timeoutMs = 10_000): Promise<{ code: number; reason: string }> {
    const end = Date.now() + guardMs(timeoutMs)
    while (!this.closed) {
      if (Date.now() > end) throw new Error('timed out waiting for the close')
      await new Promise(r => setTimeout(r, 20))
    }
    return this.closed
  }

  close(): void {
    this.ws.terminate()
  }
}

/** An upgrade request over the Unix socket, answered with a plain HTTP status. */
export function upgradeStatus(socketPath: string, headers: Record<string, string>, path = '/v1'): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({
      socketPath,
      path,
      headers: { connection: 'Upgrade', upgrade: 'websocket', 'sec-websocket-version': '13', 'sec-websocket-key': 'dGhlIHNhbXBsZSBub25jZQ==', ...headers },
    })
    req.on('response', res => {
      let body = ''
      res.on('data', d => (body += d))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }))
    })
    req.on('upgrade', (res, socket) => {
      socket.destroy()
      resolve({ status: res.statusCode ?? 101, body: '' })
    })
    req.on('error', reject)
    req.end()
  })
}
