// `cairn telemetry`: the agent's hardware samples (CPU, memory, temperatures, Pi
// throttling, fan, power, GPU) as messages, optionally cut down to some fields and
// thinned to at most one per interval. An input message asks for the latest sample now.
'use strict'

const { bindAgent, codeError, fail, guarded, list, numberOr } = require('../lib/node-kit.js')

module.exports = function (RED) {
  function CairnTelemetryNode(config) {
    RED.nodes.createNode(this, config)
    const node = this
    const fields = list(config.fields)
    const intervalMs = Math.max(0, numberOr(config.interval, 0) * 1000)
    let last // { sample, ts }
    let lastSentAt = 0

    const conn = bindAgent(RED, node, config.agent)
    if (conn) {
      node.on('close', conn.subscribe('telemetry'))
      const onEvent = (topic, data, ts) => {
        if (topic !== 'telemetry' || !data || typeof data !== 'object') return
        last = { sample: data, ts }
        if (intervalMs > 0 && ts - lastSentAt < intervalMs) return
        lastSentAt = ts
        node.send(toMsg({}, last))
      }
      node.on('close', conn.onEvent(onEvent))
    }

    function toMsg(msg, { sample, ts }) {
      msg.topic = 'telemetry'
      // A copy: the sample is shared with every other telemetry node and kept for the
      // next input message, so a flow that changes its msg.payload must not change it.
      msg.payload = structuredClone(pick(sample, fields))
      msg.ts = ts
      // Two readings most flows want, without digging through arrays.
      const hottest = hottestCelsius(sample)
      if (hottest !== undefined) msg.hottest = hottest
      msg.throttled = isThrottled(sample)
      return msg
    }

    node.on(
      'input',
      guarded(node, (msg, send, done) => {
        if (!conn) return fail(node, done, codeError('INVALID_CONFIG', 'no Cairn agent configured on this node'))
        if (!last) return fail(node, done, codeError('UNAVAILABLE', 'no telemetry sample received from the agent yet'))
        send(toMsg(msg, last))
        done()
      }),
    )
  }

  RED.nodes.registerType('cairn-telemetry', CairnTelemetryNode)
}

function pick(sample, fields) {
  if (fields.length === 0) return sample
  const out = {}
  for (const f of fields) if (sample[f] !== undefined) out[f] = sample[f]
  return out
}

function hottestCelsius(s) {
  let max
  for (const z of Array.isArray(s.thermal) ? s.thermal : []) if (z && typeof z.celsius === 'number' && (max === undefined || z.celsius > max)) max = z.celsius
  if (s.gpu && typeof s.gpu.celsius === 'number' && (max === undefined || s.gpu.celsius > max)) max = s.gpu.celsius
  return max
}

/** True when the Pi reports under-voltage, capping, throttling or the soft limit right now. */
function isThrottled(s) {
  const now = s.throttle && s.throttle.now
  return !!(now && (now.underVoltage || now.armFreqCapped || now.throttled || now.softTempLimit))
}

module.exports.hottestCelsius = hottestCelsius
module.exports.isThrottled = isThrottled
