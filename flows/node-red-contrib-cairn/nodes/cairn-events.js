// `cairn events`: what the agent does, as messages: proof results, tasks, OTA steps,
// button presses, and (optionally) its broker connection status. Filtered by event
// kind prefix, here on the node: one subscription per agent connection serves all.
'use strict'

const { bindAgent, list } = require('../lib/node-kit.js')

module.exports = function (RED) {
  function CairnEventsNode(config) {
    RED.nodes.createNode(this, config)
    const node = this
    const kinds = list(config.kinds)
    const withStatus = config.status === true || config.status === 'true'
    // Absent in flows made before the option existed: events on.
    const withEvents = config.events !== false && config.events !== 'false'
    const conn = bindAgent(RED, node, config.agent)
    if (!conn) return
    if (withEvents) node.on('close', conn.subscribe('event'))
    if (withStatus) node.on('close', conn.subscribe('status'))
    const onEvent = (topic, data, ts) => {
      if (topic === 'event' && withEvents && data && typeof data.kind === 'string') {
        if (kinds.length > 0 && !kinds.some(k => data.kind.startsWith(k))) return
        // Every events node gets the same parsed frame: each message its own copy.
        node.send({ topic: data.kind, payload: structuredClone(data.data ?? {}), ts })
      } else if (topic === 'status' && withStatus) {
        node.send({ topic: 'status', payload: structuredClone(data), ts })
      }
    }
    node.on('close', conn.onEvent(onEvent))
    if (withStatus) {
      // Status events come on changes only: start each connection with the state now.
      node.on(
        'close',
        conn.onConnect(async c => {
          const st = await c.request('status')
          node.send({ topic: 'status', payload: { connected: st.connected, state: st.state }, ts: Date.now(), initial: true })
        }),
      )
    }
  }

  RED.nodes.registerType('cairn-events', CairnEventsNode)
}
