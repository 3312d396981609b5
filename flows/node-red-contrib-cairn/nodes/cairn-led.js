// `cairn led`: sets the pattern of the status LED the agent drives (its own pin, so no
// flow fights the agent over it). 'auto' hands the LED back to the agent's state.
'use strict'

const { bindAgent, codeError, fail, guarded } = require('../lib/node-kit.js')

const PATTERNS = ['off', 'on', 'online', 'offline', 'error', 'updating', 'blink', 'auto']

module.exports = function (RED) {
  function CairnLedNode(config) {
    RED.nodes.createNode(this, config)
    const node = this
    const fixed = PATTERNS.includes(config.pattern) ? config.pattern : ''
    const conn = bindAgent(RED, node, config.agent)

    node.on(
      'input',
      guarded(node, async (msg, send, done) => {
        if (!conn) return fail(node, done, codeError('INVALID_CONFIG', 'no Cairn agent configured on this node'))
        const pattern = fixed || (typeof msg.payload === 'string' ? msg.payload.trim().toLowerCase() : msg.payload)
        if (!PATTERNS.includes(pattern)) {
          throw codeError('BAD_REQUEST', `msg.payload must be an LED pattern (${PATTERNS.join(', ')}), not ${JSON.stringify(pattern) ?? String(pattern)}`)
        }
        const res = await conn.request('led.set', { pattern })
        node.status({ fill: 'green', shape: 'dot', text: `led: ${pattern}` })
        msg.payload = pattern
        if (res !== undefined) msg.led = res
        send(msg)
        done()
      }),
    )
  }

  RED.nodes.registerType('cairn-led', CairnLedNode)
}
