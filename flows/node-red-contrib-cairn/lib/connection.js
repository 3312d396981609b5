// The one connection a `cairn-agent` config node owns to the agent's local API, shared
// by every Cairn node that points at it. It starts when the first node uses it, keeps
// reconnecting (the agent may start after Node-RED, or restart for an update), tells
// every user node its state so each can show it, re-subscribes and re-runs the users'
// set-up (GPIO lines are released by the agent when a client goes away) after every
// reconnect, and fans events out. The protocol itself lives in lib/client.cjs, bundled
// from the agent's own agent/local-api/api-client.ts.
'use strict'

const { EventEmitter } = require('node:events')

const TOKEN_RETRY_MS = 5000
// With no node left using it, the connection closes after this long: a redeploy of the
// nodes (config node unchanged) picks it up again within the grace, without a reconnect.
const IDLE_CLOSE_MS = 5000

class AgentConnection extends EventEmitter {
  /**
   * @param {{ socketPath?: string, url?: string, tokenFile: string, log: { log(m: string): void, warn(m: string): void }, idleCloseMs?: number }} opts
   * @param {() => { LocalApiClient: any, readTokenFile: (p: string) => string }} loadClient
   */
  constructor(opts, loadClient) {
    super()
    this.setMaxListeners(0)
    this.opts = opts
    this.loadClient = loadClient
    /** @type {{ state: 'idle'|'connecting'|'connected'|'disconnected'|'error', reason?: string }} */
    this.state = { state: 'idle' }
    this.client = undefined
    this.users = new Set()
    this.topics = new Map() // topic -> users subscribed
    this.setups = new Set() // async (conn) => void, re-run after each (re)connect
    this.hello = undefined
    this.closed = false
    this.retry = undefined
    this.idle = undefined
  }

  /** Registers a node: it is told the state now and on every change. Returns a release function. */
  use(node, onState) {
    this.users.add(node)
    if (this.idle) clearTimeout(this.idle)
    this.idle = undefined
    this.on('state', onState)
    safely(this.opts.log, () => onState(this.state))
    this.start()
    return () => {
      this.users.delete(node)
      this.off('state', onState)
      if (this.users.size === 0 && !this.closed && !this.idle) {
        this.idle = setTimeout(() => {
          this.idle = undefined
          if (this.users.size === 0) this.stop()
        }, this.opts.idleCloseMs ?? IDLE_CLOSE_MS)
        this.idle.unref?.()
      }
    }
  }

  /**
   * Fans an agent event out to the nodes. Each listener runs on its own: a throw in one
   * would otherwise escape into the WebSocket's socket handler and end Node-RED.
   */
  onEvent(listener) {
    const guarded = (topic, data, ts) => safely(this.opts.log, () => listener(topic, data, ts))
    this.on('event', guarded)
    return () => this.off('event', guarded)
  }

  /** Runs `setup` now if connected and after every reconnect; returns its removal. */
  onConnect(setup) {
    this.setups.add(setup)
    if (this.state.state === 'connected') void this.runSetup(setup)
    return () => this.setups.delete(setup)
  }

  /** Adds a topic to this connection's subscription; returns a function that drops it. */
  subscribe(topic) {
    const n = this.topics.get(topic) ?? 0
    this.topics.set(topic, n + 1)
    if (n === 0 && this.state.state === 'connected') void this.sendSubscribe()
    return () => {
      const left = (this.topics.get(topic) ?? 1) - 1
      if (left > 0) {
        this.topics.set(topic, left)
        return
      }
      this.topics.delete(topic)
      if (this.state.state === 'connected' && this.client) {
        this.client.request('unsubscribe', { topics: [topic] }).catch(() => {})
      }
    }
  }

  /** One request to the agent. Rejects with an Error carrying `.code` (DISCONNECTED while offline). */
  async request(op, args, timeoutMs) {
    if (this.state.state !== 'connected' || !this.client) {
      throw codeError('DISCONNECTED', `not connected to the Cairn agent (${this.describe()})`)
    }
    return this.client.request(op, args, timeoutMs)
  }

  describe() {
    const where = this.opts.socketPath ? this.opts.socketPath : this.opts.url
    return this.state.reason ? `${this.state.state}: ${this.state.reason}; ${where}` : `${this.state.state}; ${where}`
  }

  setState(state, reason) {
    this.state = reason ? { state, reason } : { state }
    for (const l of this.listeners('state')) safely(this.opts.log, () => l(this.state))
  }

  start() {
    if (this.client || this.closed || this.retry) return
    let lib
    try {
      lib = this.loadClient()
    } catch (err) {
      // lib/client.cjs is made by the Cairn repository's `npm run build`; a package
      // packed without it cannot connect, and retrying will not help.
      this.opts.log.warn(`cairn: cannot load the local API client: ${reasonText(err)}`)
      this.setState('error', 'lib/client.cjs missing: rebuild the package')
      return
    }
    let token
    try {
      token = lib.readTokenFile(this.opts.tokenFile)
    } catch (err) {
      // The agent writes its token at start; Node-RED may have started first, or lack
      // the group that may read it. Say which, and try again.
      const message = err && err.message ? err.message : String(err)
      const errno = /\b(E[A-Z]{2,})\b/.exec(message)
      if (this.state.state !== 'error') this.opts.log.warn(`cairn: ${message}`)
      // The status has room for little: the reason first, the full text is in the log.
      this.setState('error', errno ? `cannot read token (${errno[1]}) ${this.opts.tokenFile}` : `bad token file ${this.opts.tokenFile}`)
      this.retry = setTimeout(() => {
        this.retry = undefined
        this.start()
      }, TOKEN_RETRY_MS)
      return
    }
    const { LocalApiClient } = lib
    // tokenFile: the client re-reads it before each attempt, so a new token after an
    // agent re-provisioning is picked up without a redeploy.
    const log = this.opts.log
    const o = {
      token,
      tokenFile: this.opts.tokenFile,
      reconnect: true,
      log: (level, message) => (level === 'warn' ? log.warn(`cairn: ${message}`) : level === 'info' ? log.log(`cairn: ${message}`) : undefined),
    }
    if (this.opts.socketPath) o.socketPath = this.opts.socketPath
    else o.url = this.opts.url
    const client = new LocalApiClient(o)
    this.client = client
    client.on('connected', () => this.connected())
    client.on('hello', hello => {
      this.hello = hello
    })
    client.on('disconnected', reason => {
      if (!this.closed) this.setState('disconnected', reasonText(reason))
    })
    client.on('error', err => {
      // A failed attempt (agent not running, wrong token): red with the reason while the
      // client keeps retrying; errors on a live connection are reported by requests.
      if (!this.closed && this.state.state !== 'connected') this.setState(err && err.code === 'UNAUTHORIZED' ? 'error' : 'disconnected', reasonText(err))
    })
    client.on('event', (topic, data, ts) => {
      if (client === this.client) this.emit('event', topic, data, ts)
    })
    this.setState('connecting')
    client.connect().catch(() => {
      // Reported through 'error' above; the client goes on trying.
    })
  }

  async connected() {
    const client = this.client
    if (this.closed || !client) return
    // Subscribed before the nodes turn green: a flow that acts on 'connected' (or a node
    // that asks for the latest sample then) sees every event that follows it.
    const sent = await this.sendSubscribe()
    if (this.closed || this.client !== client || !client.connected) return
    this.setState('connected')
    // A node that subscribed while the first request was out was not in it.
    if ([...this.topics.keys()].some(topic => !sent.includes(topic))) await this.sendSubscribe()
    for (const s of this.setups) await this.runSetup(s)
  }

  /** Sends the whole subscription; returns the topics it held. */
  async sendSubscribe() {
    const topics = [...this.topics.keys()]
    if (topics.length === 0 || !this.client) return topics
    try {
      await this.client.request('subscribe', { topics })
    } catch (err) {
      this.opts.log.warn(`cairn: subscribe ${topics.join(',')} failed: ${reasonText(err)}`)
    }
    return topics
  }

  async runSetup(setup) {
    try {
      await setup(this)
    } catch (err) {
      this.opts.log.warn(`cairn: set-up after connect failed: ${reasonText(err)}`)
    }
  }

  /** Drops the agent connection while no node uses it; the next `use` starts a new one. */
  stop() {
    if (this.retry) clearTimeout(this.retry)
    this.retry = undefined
    const c = this.client
    this.client = undefined
    if (c) {
      c.removeAllListeners()
      c.on('error', () => {})
      c.close()
    }
    if (!this.closed) this.setState('idle')
  }

  async close() {
    this.closed = true
    if (this.idle) clearTimeout(this.idle)
    this.idle = undefined
    this.stop()
    this.removeAllListeners('event')
    this.removeAllListeners('state')
  }
}

/** Runs a node's callback; a throw is logged, never passed up into the socket's handler. */
function safely(log, fn) {
  try {
    fn()
  } catch (err) {
    log.warn(`cairn: a node failed handling an agent message: ${reasonText(err)}`)
  }
}

function codeError(code, message) {
  const err = new Error(message)
  err.code = code
  return err
}

function reasonText(r) {
  if (r === undefined || r === null) return ''
  if (typeof r === 'string') return r
  if (r instanceof Error) return r.code ? `${r.code}: ${r.message}` : r.message
  return String(r)
}

module.exports = { AgentConnection, codeError, reasonText }
