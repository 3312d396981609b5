// `cairn gpio out`: drives a BCM pin through the agent's GPIO drivers (works on the
// Pi 5). msg.payload 0/1/true/false sets the logical level; after a reconnect the line
// is opened again at the last level written, so an LED does not blink off.
'use strict'

const { bindAgent, fail, guarded, reasonText, short } = require('../lib/node-kit.js')
const { parseLevel, parsePin, releaseLine } = require('../lib/gpio-args.js')

module.exports = function (RED) {
  function CairnGpioOutNode(config) {
    RED.nodes.createNode(this, config)
    const node = this
    let pin
    let bad
    try {
      pin = parsePin(config.pin)
    } catch (err) {
      bad = err
    }
    const activeLow = config.activeLow === true || config.activeLow === 'true'
    let level = config.initial === 1 || config.initial === '1' ? 1 : 0
    let opened = false
    let openError
    let closing = false
    let opening // the gpio.open in flight, so close can wait for it

    const conn = bindAgent(RED, node, config.agent, st => {
      if (st.state !== 'connected') opened = false
      if (bad) node.status({ fill: 'red', shape: 'dot', text: short(bad.message) })
    })
    const label = `pin ${pin}`
    if (conn && !bad) {
      node.on(
        'close',
        conn.onConnect(async c => {
          if (closing) return
          try {
            opening = c.request('gpio.open', { pin, mode: 'out', activeLow, initial: level })
            await opening
            opened = true
            openError = undefined
            if (closing) return
            node.status({ fill: 'green', shape: 'dot', text: `${label}: ${level}` })
          } catch (err) {
            if (closing) return
            openError = err
            node.status({ fill: 'red', shape: 'ring', text: short(`${label}: ${reasonText(err)}`) })
          }
        }),
      )
      node.on('close', (removed, done) => {
        closing = true
        releaseLine(conn, pin, opening, () => opened, done)
      })
    }

    node.on(
      'input',
      guarded(node, async (msg, send, done) => {
        if (bad) return fail(node, done, bad)
        if (!conn) return fail(node, done, new Error('no Cairn agent configured on this node'), 'INVALID_CONFIG')
        const value = parseLevel(msg.payload)
        if (!opened && openError) throw openError
        await conn.request('gpio.write', { pin, value })
        level = value
        node.status({ fill: 'green', shape: 'dot', text: `${label}: ${value}` })
        done()
      }),
    )
  }

  RED.nodes.registerType('cairn-gpio-out', CairnGpioOutNode)
}
