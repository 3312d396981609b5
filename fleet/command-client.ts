// The operator side of commands: sign a command, publish it (QoS 1), wait for the reply.
// MQTT 5 uses a response topic and correlation data; 3.1.1 matches the request id on
// the device's reply topic. Only a reply signed by the device asked, for this command and
// this operator, counts (protocol/reply.ts): anything else on the topic is reported as
// what it is, never as the answer.

import { randomBytes } from 'node:crypto'
import type { IClientOptions } from 'mqtt'
import type { Json } from '../protocol/canonical.js'
import { signEnvelope, type Envelope } from '../protocol/envelope.js'
import { CairnError } from '../protocol/errors.js'
import { newId } from '../protocol/ids.js'
import type { KeyPair } from '../protocol/keys.js'
import { readReply, type ReplyMessage } from '../protocol/reply.js'
import { connectTool, TOOL_MAX_PACKET_BYTES } from '../protocol/mqtt-client.js'
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
  const client = await connectTool({ url: opts.url, clientOptions: opts.clientOptions, mqttVersion: opts.mqttVersion, clientId: `cairn-op-${nonce}` })
  try {
    const wait = opts.timeoutMs > 0
    const responseTopic = opts.mqttVersion === 5 ? `${topics.reply}/${nonce}` : topics.reply
    const correlation = Buffer.from(env.id)
    let settle!: (r: ReplyMessage) => void
    const replied = new Promise<ReplyMessage>(r => (settle = r))
    // Replies that claimed to answer this command but did not verify, and why.
    const refused: string[] = []
    if (wait) {
      client.on('message', (_topic, payload, packet) => {
        const r = readReply(payload, { fleet: env.fleet, device: env.sub, operator: env.iss, cmd: env.id, now: Date.now(), skewMs: REPLY_SKEW_MS, maxBytes: TOOL_MAX_PACKET_BYTES })
        if (r.ok) return settle(r.reply)
        const corr = packet.properties?.correlationData
        if ((corr && Buffer.from(corr).equals(correlation)) || claimsCommand(payload, env.id)) refused.push(`${r.error.code}: ${r.error.message}`)
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
      timer = setTimeout(() => {
        if (refused.length > 0)
          reject(
            new CairnError(
              'BAD_SIGNATURE',
              `no reply signed by device ${env.sub.slice(0, 12)}… within ${opts.timeoutMs} ms; ${refused.length} reply(ies) for this command were refused (${refused[0]})`,
            ),
          )
        else reject(new CairnError('EXPIRED', `no reply within ${opts.timeoutMs} ms (the device may be offline: the command stays queued until it expires)`))
      }, opts.timeoutMs)
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

/** Clocks of an operator's machine and a device may disagree this much. */
const REPLY_SKEW_MS = 5 * 60_000

/** Whether an unverified payload says it answers `cmd` (as a signed reply, or in the
 * older unsigned form): worth reporting when it does not verify. */
function claimsCommand(payload: Buffer, cmd: string): boolean {
  try {
    const v = JSON.parse(payload.toString('utf8')) as { id?: unknown; body?: { cmd?: unknown } } | null
    return v?.body?.cmd === cmd || v?.id === cmd
  } catch {
    return false
  }
}
