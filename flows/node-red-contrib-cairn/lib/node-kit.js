// What every Cairn node does the same way: find its `cairn-agent` config node, show the
// connection's state as its status, and turn bad input into `done(err)` with a stable
// code and a red status, so Catch nodes see it and nothing crashes.
'use strict'

const { codeError, reasonText } = require('./connection.js')

const MAX_STATUS = 48

function short(s) {
  return s.length > MAX_STATUS ? s.slice(0, MAX_STATUS - 1) + '…' : s
}

/** Node-RED status object for a connection state. */
function stateStatus(st) {
  switch (st.state) {
    case 'connected':
      return { fill: 'green', shape: 'dot', text: 'connected' }
    case 'idle':
    case 'connecting':
      return { fill: 'yellow', shape: 'ring', text: st.reason ? short(`connecting: ${st.reason}`) : 'connecting' }
    case 'disconnected':
      return { fill: 'red', shape: 'ring', text: st.reason ? short(`disconnected: ${st.reason}`) : 'disconnected' }
    default:
      return { fill: 'red', shape: 'ring', text: short(st.reason || 'error') }
  }
}

/**
 * Binds a node to its config node's connection. Returns the connection, or undefined
 * (with a red status) when none is configured. `onState` runs after the status is set.
 */
function bindAgent(RED, node, agentId, onState) {
  const agent = agentId ? RED.nodes.getNode(agentId) : null
  if (!agent || !agent.conn) {
    node.status({ fill: 'red', shape: 'ring', text: 'no Cairn agent configured' })
    return undefined
  }
  const release = agent.conn.use(node, st => {
    node.status(stateStatus(st))
    if (onState) onState(st)
  })
  node.on('close', release)
  return agent.conn
}

/** Reports a failed message: red status, `done(err)` (Catch nodes see it), never a throw. */
function fail(node, done, err, code) {
  const e = err instanceof Error ? err : codeError(code || 'BAD_REQUEST', String(err))
  if (code && !e.code) e.code = code
  node.status({ fill: 'red', shape: 'dot', text: short(e.code ? `${e.code}: ${e.message}` : e.message) })
  done(e)
}

/** For input handlers: any throw or rejection becomes `fail`, so one bad message never crashes Node-RED. */
function guarded(node, handler) {
  return (msg, send, done) => {
    let p
    try {
      p = handler(msg, send, done)
    } catch (err) {
      fail(node, done, err)
      return
    }
    if (p && typeof p.then === 'function') p.catch(err => fail(node, done, err))
  }
}

function numberOr(v, dflt) {
  if (v === undefined || v === null || v === '') return dflt
  const n = Number(v)
  return Number.isFinite(n) ? n : dflt
}

/** Comma/space separated list → trimmed non-empty strings. */
function list(v) {
  return String(v || '')
    .split(/[\s,]+/)
    .map(s => s.trim())
    .filter(Boolean)
}

module.exports = { bindAgent, codeError, fail, guarded, list, numberOr, reasonText, short }
