// Test vectors for the task protocol (docs/vectors/tasks-v1.json): a request, a cancel,
// a receipt and an update signed with fixed RFC 8032 keys, with their signed bytes, hashes and
// the binding of the receipt to the request, so any implementation can check its
// bytes against ours. Deterministic: fixed ids and times, and ed25519 signs
// deterministically, so `npm run docs:gen` always writes the same file.

import { signEnvelope, signedBytes, type Envelope, type SignInput } from '../../protocol/envelope.js'
import { keyPairFromSeed, publicKeyPem, rawPublicKey, type KeyPair } from '../../protocol/keys.js'
import { asJson, encodeTaskMessage, taskMessageHash, TaskMsg, type TaskReceiptBody, type TaskRequestBody } from '../../protocol/task-format.js'
import { signTaskUpdate } from '../../protocol/task-update.js'

/** RFC 8032 section 7.1 TEST 1 (dispatcher) and TEST 2 (device) secret keys. */
const DISPATCHER_SEED = '9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60'
const DEVICE_SEED = '4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb'

const FLEET = 'demo'
/** 2026-01-01T00:00:00Z */
const T0 = 1_767_225_600_000

function describe(name: string, env: Envelope) {
  return {
    name,
    envelope: env,
    wireUtf8: encodeTaskMessage(env).toString('utf8'),
    signedBytesUtf8: signedBytes(env).toString('utf8'),
    signedBytesHex: signedBytes(env).toString('hex'),
    signatureHex: Buffer.from(env.sig, 'base64url').toString('hex'),
    sha256: taskMessageHash(env),
  }
}

function keyInfo(seedHex: string, key: KeyPair) {
  return { seedHex, publicKeyHex: Buffer.from(rawPublicKey(key.publicKey)).toString('hex'), keyId: key.keyId, publicKeyPem: publicKeyPem(key.publicKey) }
}

export function taskVectors() {
  const dispatcher = keyPairFromSeed(DISPATCHER_SEED)
  const device = keyPairFromSeed(DEVICE_SEED)
  const sign = (key: KeyPair, input: Omit<SignInput, 'fleet'>) => signEnvelope(key, { ...input, fleet: FLEET })

  const requestBody: TaskRequestBody = {
    task: 'vector-task-0001',
    type: 'inference',
    params: { model: { sha256: 'a'.repeat(64) }, input: { tensor: { shape: [1, 2], dtype: 'float32', data: [0.25, 0.75] } }, topK: 2 },
    deadline: T0 + 60_000,
    priority: 5,
  }
  const request = sign(dispatcher, { type: TaskMsg.request, id: 'vector-req-0001', sub: device.keyId, iat: T0, exp: T0 + 300_000, body: asJson(requestBody) })
  const cancel = sign(dispatcher, { type: TaskMsg.cancel, id: 'vector-cancel-0001', sub: device.keyId, iat: T0 + 1000, exp: T0 + 301_000, body: { task: 'vector-task-0002' } })
  const receiptBody: TaskReceiptBody = {
    task: requestBody.task,
    type: 'inference',
    request: taskMessageHash(request),
    dispatcher: dispatcher.keyId,
    local: false,
    outcome: 'done',
    error: null,
    inputs: [{ name: 'input', sha256: '3'.repeat(64), bytes: 8 }],
    model: { name: 'demo', sha256: 'a'.repeat(64), bytes: 302_412, format: 'tfjs-layers' },
    outputs: [{ name: 'output', sha256: '4'.repeat(64), bytes: 16 }],
    result: {
      top: [
        { label: 'circle', p: 0.875 },
        { label: 'square', p: 0.125 },
      ],
    },
    backend: 'wasm',
    timings: { fetch: 0, load: 12.5, decode: 0.25, infer: 3.75 },
    resources: { peakRssBytes: 52_428_800, cpuMs: 17 },
    received: T0 + 150,
    started: T0 + 160,
    finished: T0 + 180,
    attempts: 1,
  }
  const receipt = sign(device, { type: TaskMsg.receipt, id: 'vector-rcpt-0001', sub: dispatcher.keyId, iat: T0 + 180, exp: T0 + 180 + 30 * 86_400_000, body: asJson(receiptBody) })
  const update = signTaskUpdate(
    device,
    { task: requestBody.task, request: request.id, event: 'accepted', state: 'queued', position: 0 },
    { fleet: FLEET, to: dispatcher.keyId, now: T0 + 150, exp: T0 + 300_000, id: 'vector-upd-0001' },
  )
  return {
    description:
      'Cairn task protocol v1 test vectors (docs/tasks.md). Every message, updates included, is the signing envelope: signedBytes = "CAIRN-SIG-1\\n" || type || "\\n" || JCS(envelope without sig). sha256 = SHA-256(JCS(envelope with sig)); a receipt\'s body.request is the sha256 of its request.',
    dispatcher: keyInfo(DISPATCHER_SEED, dispatcher),
    device: keyInfo(DEVICE_SEED, device),
    vectors: [
      describe('task.request (inference)', request),
      describe('task.cancel', cancel),
      describe('task.receipt (done), answering the request above', receipt),
      describe('task.update (accepted), answering the request above', update),
    ],
  }
}
