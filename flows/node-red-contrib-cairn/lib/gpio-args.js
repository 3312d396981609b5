// Checks of GPIO settings and values shared by `cairn gpio in` / `cairn gpio out`, so a
// wrong pin or value is named here rather than as a generic refusal from the agent.
'use strict'

const { codeError } = require('./connection.js')

// What the local API takes; the 40-pin header is BCM 0-27 on every Raspberry Pi, and
// the agent refuses a line its GPIO chip does not have.
const MAX_BCM = 63

function parsePin(v) {
  const pin = typeof v === 'string' && v.trim() !== '' ? Number(v) : v
  if (!Number.isInteger(pin) || pin < 0 || pin > MAX_BCM) {
    throw codeError('BAD_REQUEST', `pin must be a BCM number from 0 to ${MAX_BCM} (GPIO17 is 17, on physical pin 11), not ${JSON.stringify(v)}`)
  }
  return pin
}

/** msg.payload → 0 or 1; accepts 0/1, true/false and the strings "0"/"1"/"true"/"false"/"on"/"off". */
function parseLevel(v) {
  if (v === 0 || v === 1) return v
  if (v === true || v === false) return v ? 1 : 0
  if (typeof v === 'string') {
    const s = v.trim().toLowerCase()
    if (s === '1' || s === 'true' || s === 'on') return 1
    if (s === '0' || s === 'false' || s === 'off') return 0
  }
  const shown = Buffer.isBuffer(v) ? 'a Buffer' : (JSON.stringify(v) ?? String(v))
  throw codeError('BAD_REQUEST', `msg.payload must be 0, 1, true or false (or "on"/"off"), not ${shown}`)
}

/** Closes a node's GPIO line once an open still in flight has settled. The agent
 * releases a client's lines when it disconnects, but on a redeploy the connection
 * stays: a line left open would make the node that replaces this one get PIN_BUSY.
 * Calls `done` whatever happens. */
function releaseLine(conn, pin, opening, isOpened, done) {
  Promise.resolve(opening)
    .catch(() => {})
    .then(() => (isOpened() ? conn.request('gpio.close', { pin }) : undefined))
    .then(
      () => done(),
      () => done(),
    )
}

module.exports = { parseLevel, parsePin, releaseLine }
