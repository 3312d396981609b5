// `cairn infer`: runs one inference through the agent's own task runner (same model
// cache, backend choice and signed receipt as tasks sent over MQTT). The image or
// tensor is checked here first, so a wrong payload gets a clear error at once.
'use strict'

const { bindAgent, codeError, fail, guarded, numberOr } = require('../lib/node-kit.js')

// Base64 grows 4/3; the agent's frames are at most 8 MiB by default.
const MAX_IMAGE_BYTES = 6 * 1024 * 1024
const DTYPES = ['float32', 'int32', 'uint8']

module.exports = function (RED) {
  function CairnInferNode(config) {
    RED.nodes.createNode(this, config)
    const node = this
    const model = (config.model || 'demo').trim()
    const topK = numberOr(config.topK, 3)
    const timeoutMs = Math.max(1, numberOr(config.timeout, 60)) * 1000
    const conn = bindAgent(RED, node, config.agent)

    node.on(
      'input',
      guarded(node, async (msg, send, done) => {
        if (!conn) return fail(node, done, codeError('INVALID_CONFIG', 'no Cairn agent configured on this node'))
        const args = { model: typeof msg.model === 'string' && msg.model ? msg.model : model, input: inputOf(msg.payload) }
        const k = msg.topK !== undefined ? msg.topK : topK
        if (!Number.isInteger(k) || k < 1 || k > 100) throw codeError('BAD_REQUEST', `topK must be an integer from 1 to 100, not ${JSON.stringify(k)}`)
        args.topK = k
        node.status({ fill: 'blue', shape: 'dot', text: 'running' })
        const res = await conn.request('infer', args, timeoutMs)
        const result = res && res.result
        msg.payload = result && Array.isArray(result.labels) ? result.labels : result
        msg.result = result
        msg.receipt = res && res.receipt
        msg.taskId = res && res.taskId
        const top = Array.isArray(msg.payload) ? msg.payload[0] : undefined
        node.status({ fill: 'green', shape: 'dot', text: top && top.label !== undefined ? `${top.label} ${fmt(top.score)}` : 'done' })
        send(msg)
        done()
      }),
    )
  }

  RED.nodes.registerType('cairn-infer', CairnInferNode)
}

function fmt(score) {
  return typeof score === 'number' ? score.toFixed(2) : ''
}

/** msg.payload → the `input` of the infer op; throws BAD_REQUEST/TOO_LARGE naming what is wrong. */
function inputOf(p) {
  if (Buffer.isBuffer(p)) {
    if (p.length === 0) throw codeError('BAD_REQUEST', 'msg.payload is an empty Buffer; expected the bytes of a PNG or JPEG image')
    if (p.length > MAX_IMAGE_BYTES) throw codeError('TOO_LARGE', `msg.payload image is ${p.length} bytes; at most ${MAX_IMAGE_BYTES} fit in one local API frame`)
    const png = p.length >= 8 && p.readUInt32BE(0) === 0x89504e47
    const jpeg = p.length >= 3 && p[0] === 0xff && p[1] === 0xd8 && p[2] === 0xff
    if (!png && !jpeg) throw codeError('BAD_REQUEST', `msg.payload is a Buffer but not a PNG or JPEG image (it starts with ${p.subarray(0, 4).toString('hex')})`)
    return { image: { data: p.toString('base64') } }
  }
  if (p && typeof p === 'object' && !Array.isArray(p) && p.tensor !== undefined) return { tensor: checkTensor(p.tensor) }
  const what = p === undefined ? 'missing' : Array.isArray(p) ? 'an array' : typeof p === 'string' ? 'a string' : typeof p
  throw codeError('BAD_REQUEST', `msg.payload is ${what}; expected a Buffer holding a PNG or JPEG image, or { tensor: { shape, dtype, data } }`)
}

function checkTensor(t) {
  if (!t || typeof t !== 'object') throw codeError('BAD_REQUEST', 'msg.payload.tensor must be an object { shape, dtype, data }')
  const { shape, dtype, data } = t
  if (!Array.isArray(shape) || shape.length === 0 || !shape.every(d => Number.isInteger(d) && d > 0)) {
    throw codeError('BAD_REQUEST', 'msg.payload.tensor.shape must be a non-empty array of positive integers')
  }
  if (!DTYPES.includes(dtype)) throw codeError('BAD_REQUEST', `msg.payload.tensor.dtype must be one of ${DTYPES.join(', ')}, not ${JSON.stringify(dtype)}`)
  // A string is base64 of the little-endian values; the agent checks its length.
  if (typeof data === 'string' && data.length > 0) return { shape, dtype, data }
  const values = ArrayBuffer.isView(data) ? Array.from(data) : data
  if (!Array.isArray(values) || !values.every(v => typeof v === 'number' && Number.isFinite(v))) {
    throw codeError('BAD_REQUEST', 'msg.payload.tensor.data must be an array (or typed array) of finite numbers, or a base64 string of little-endian values')
  }
  const size = shape.reduce((a, b) => a * b, 1)
  if (values.length !== size) throw codeError('BAD_REQUEST', `msg.payload.tensor.data has ${values.length} values; shape [${shape.join(', ')}] needs ${size}`)
  return { shape, dtype, data: values }
}

module.exports.inputOf = inputOf
