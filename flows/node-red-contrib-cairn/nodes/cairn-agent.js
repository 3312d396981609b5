// Config node: one connection to a Cairn agent's local API (Unix socket or ws:// URL plus
// the token file), shared by every Cairn node that names it.
'use strict'

const { AgentConnection } = require('../lib/connection.js')

module.exports = function (RED) {
  function loadClient() {
    // Required lazily so the palette still loads (and says why) if the bundle is missing.
    return require('../lib/client.cjs')
  }

  function CairnAgentNode(config) {
    RED.nodes.createNode(this, config)
    const useUrl = config.transport === 'url'
    const socketPath = (config.socket || '/var/lib/cairn/api.sock').trim()
    const url = (config.url || '').trim()
    const tokenFile = (config.tokenFile || '/var/lib/cairn/api.token').trim()
    const opts = useUrl ? { url, tokenFile, log: this } : { socketPath, tokenFile, log: this }
    this.conn = new AgentConnection(opts, loadClient)
    if (useUrl && !/^wss?:\/\//.test(url)) {
      this.conn.setState('error', `not a ws:// URL: ${JSON.stringify(url)}`)
      this.conn.closed = true
    }
    this.on('close', (removed, done) => {
      this.conn.close().then(
        () => done(),
        () => done(),
      )
    })
  }

  RED.nodes.registerType('cairn-agent', CairnAgentNode)
}
