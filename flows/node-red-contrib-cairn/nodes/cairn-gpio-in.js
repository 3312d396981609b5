// `cairn gpio in`: a BCM pin read through the agent's GPIO drivers (sysfs with the right
// chip base, or libgpiod), so it works on the Pi 5 and on kernels >= 6.6 where the
// usual Node-RED GPIO nodes do not. Sends the debounced level on every edge; an input
// message reads the pin now.
'use strict'

const { bindAgent, codeError, fail, guarded, numberOr, reasonText, short } = require('../lib/node-kit.js')
const { parsePin, releaseLine } = require('../lib/gpio-args.js')

const EDGES = ['rising', 'falling', 'both']

module.exports = function (RED) {
  function CairnGpioInNode(config) {
    RED.nodes.createNode(this, config)
    const node = this
    let pin
    let bad
    try {
      pin = parsePin(config.pin)
    } catch (err) {
      bad = err
    }
    const edge = EDGES.includes(config.edge) ? config.edge : 'both'
    const debounceMs = Math.max(0, numberOr(config.debounce, 20))
    const activeLow = config.activeLow === true || config.activeLow === 'true'
    const sendInitial = config.initial === true || config.initial === 'true'
    let opened = false
    let openError
    let closing = false
    let opening // the gpio.open in flight, so close can wait for it

    const conn = bindAgent(RED, node, config.agent, st => {
      if (st.state !== 'connected') opened = false
      if (bad) node.status({ fill: 'red', shape: 'dot', text: short(bad.message) })
    })
    const label = `pin ${pin}`
    node.on(
      'input',
      guarded(node, async (msg, send, done) => {
        if (bad) return fail(node, done, bad)
        if (!conn) return fail(node, done, codeError('INVALID_CONFIG', 'no Cairn agent configured on this node'))
        if (!opened && openError) throw openError
        const { value } = await conn.request('gpio.read', { pin })
        msg.topic = `gpio/${pin}`
        msg.payload = value
        msg.pin = pin
        node.status({ fill: 'green', shape: 'dot', text: `${label}: ${value}` })
        send(msg)
        done()
      }),
    )
    if (!conn || bad) return // the status says why; inputs fail with the same message

    node.on('close', conn.subscribe('gpio'))
    node.on(
      'close',
      conn.onConnect(async c => {
        if (closing) return
        try {
          opening = c.request('gpio.open', { pin, mode: 'in', edge, debounceMs, activeLow })
          await opening
          opened = true
          openError = undefined
          if (closing) return // close() releases the line once this open is done
          const { value } = await c.request('gpio.read', { pin })
          if (closing) return
          node.status({ fill: 'green', shape: 'dot', text: `${label}: ${value}` })
          if (sendInitial) node.send({ topic: `gpio/${pin}`, payload: value, pin, initial: true })
        } catch (err) {
          if (closing) return
          openError = err
          node.status({ fill: 'red', shape: 'ring', text: short(`${label}: ${reasonText(err)}`) })
        }
      }),
    )
    const onEvent = (topic, data, ts) => {
      if (closing || topic !== 'gpio' || !data || data.pin !== pin) return
      node.status({ fill: 'green', shape: 'dot', text: `${label}: ${data.value}` })
      node.send({ topic: `gpio/${pin}`, payload: data.value, pin, ts })
    }
    conn.on('event', onEvent)
    node.on('close', () => conn.off('event', onEvent))
    node.on('close', (removed, done) => {
      closing = true
      releaseLine(conn, pin, opening, () => opened, done)
    })
  }

  RED.nodes.registerType('cairn-gpio-in', CairnGpioInNode)
}
