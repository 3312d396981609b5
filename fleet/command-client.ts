// The operator side of commands: sign a command, publish it (QoS 1), wait for the reply.
// MQTT 5 uses a response topic and correlation data; 3.1.1 matches the request id on
// the device's reply topic.

import { randomBytes } from 'node:crypto'
import type { IClientOptions } from 'mqtt'
import type { Json } from '../protocol/canonical.js'
import { signEnvelope, type Envelope } from '../protocol/envelope.js'
import { CairnError } from '../protocol/errors.js'
import { newId } from '../protocol/ids.js'
import type { KeyPair } from '../protocol/keys.js'
import type { ReplyMessage } from '../protocol/messages.js'
import { connectMqttAsync, TOOL_MAX_PACKET_BYTES } from '../protocol/mqtt-client.js'
import { deviceTopics } from '../protocol/topics.js'

export interface CommandRequest {
  fleet: string
  device: string
  name: string
  body: Json
  key: KeyPair
  ttlMs: number
  now?: number
}

export function signCommand(req: CommandRequest): Envelope {
  const now = req.now ?? Date.now()
  return signEnvelope(req.key, {
    type: `cmd.${req.name}`,
    id: newId(now),
    fleet: req.fleet,
    sub: req.device,
    iat: now,
    exp: now + req.ttlMs,
    body: req.body,
  })
}

export interface SendOptions {
  url: string
  mqttVersion: 4 | 5
  clientOptions?: IClientOptions
  /** 0: publish only, do not wait for a reply. */
  timeoutMs: number
}

export async function sendCommand(env: Envelope, opts: SendOptions): Promise<ReplyMessage | undefined> {
  const topics = deviceTopics(env.fleet, env.sub)
  const name = env.type.replace(/^cmd\./, '')
  const nonce = randomBytes(6).toString('hex')
  const client = await connectMqttAsync({
    maximumPacketSize: TOOL_MAX_PACKET_BYTES,
    url: opts.url,
    ...(opts.clientOptions ? { base: opts.clientOptions } : {}),
    mqttVersion: opts.mqttVersion,
    clientId: `cairn-op-${nonce}`,
    reconnectPeriodMs: 0,
    connectTimeoutMs: 10_000,
  })
  try {
    const wait = opts.timeoutMs > 0
    const responseTopic = opts.mqttVersion === 5 ? `${topics.reply}/${nonce}` : topics.reply
    const correlation = Buffer.from(env.id)
    let settle!: (r: ReplyMessage) => void
    const replied = new Promise<ReplyMessage>(r => (settle = r))
    if (wait) {
      client.on('message', (_topic, payload, packet) => {
        let reply: ReplyMessage
        try {
          reply = JSON.parse(payload.toString('utf8')) as ReplyMessage
        } catch {
          return
        }
        const corr = packet.properties?.correlationData
        if ((corr && Buffer.from(corr).equals(correlation)) || reply.id === env.id) settle(reply)
      })
      // Also the plain reply topic: a device on MQTT 3.1.1 answers there, by request id.
      await client.subscribeAsync([...new Set([responseTopic, topics.reply])], { qos: 1 })
    }
    await client.publishAsync(topics.cmd(name), JSON.stringify(env), {
      qos: 1,
      ...(opts.mqttVersion === 5 ? { properties: { responseTopic, correlationData: correlation, messageExpiryInterval: Math.max(1, Math.ceil((env.exp - Date.now()) / 1000)) } } : {}),
    })
    if (!wait) return undefined
    let timer: NodeJS.Timeout | undefined
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new CairnError('EXPIRED', `no reply within ${opts.timeoutMs} ms (the device may be offline: the command stays queued until it expires)`)), opts.timeoutMs)
    })
    try {
      return await Promise.race([replied, timeout])
    } finally {
      clearTimeout(timer)
    }
  } finally {
    await client.endAsync()
  }
}
