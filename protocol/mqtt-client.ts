// The one MQTT client factory: every Cairn program (the agent's link, the validator, the
// fleet simulator, the operator tools, the demo) connects through it, so the options
// that matter are set in one place: protocol version (5, or 4 for 3.1.1), credentials
// and TLS, client id, clean or persistent session, keepalive, reconnect policy, connect
// timeout, MQTT 5 Maximum Packet Size, TCP_NODELAY on every (re)connected socket, and
// acknowledging a message only once it is handled (the same in MQTT 5 and 3.1.1).
// (bench/ keeps raw mqtt.js on purpose: it measures the library, not Cairn.)

import { readFileSync } from 'node:fs'
import mqtt, { type IClientOptions, type IPublishPacket, type MqttClient } from 'mqtt'

/** The broker settings a program is configured with. The agent's config `broker`
 * section satisfies it; the tools build one from their flags (toolClientOptions). */
export interface BrokerOptions {
  url: string
  mqttVersion: 4 | 5
  username?: string
  password?: string
  /** Read at connection time; wins over password. */
  passwordFile?: string
  /** PEM files: the CA that signed the broker certificate, and a client certificate and key (mutual TLS). */
  ca?: string
  cert?: string
  key?: string
  rejectUnauthorized: boolean
  keepaliveS: number
  connectTimeoutMs: number
}

/** mqtt.js options for a broker: protocol version, keepalive, connect timeout,
 * credentials and TLS (files read now). */
export function brokerClientOptions(broker: BrokerOptions): IClientOptions {
  const opts: IClientOptions = {
    protocolVersion: broker.mqttVersion,
    keepalive: broker.keepaliveS,
    connectTimeout: broker.connectTimeoutMs,
    rejectUnauthorized: broker.rejectUnauthorized,
  }
  if (broker.username !== undefined) opts.username = broker.username
  const password = broker.passwordFile !== undefined ? readFileSync(broker.passwordFile, 'utf8').replace(/\r?\n$/, '') : broker.password
  if (password !== undefined) opts.password = password
  if (broker.ca !== undefined) opts.ca = readFileSync(broker.ca)
  if (broker.cert !== undefined) opts.cert = readFileSync(broker.cert)
  if (broker.key !== undefined) opts.key = readFileSync(broker.key)
  return opts
}

/** Client options for the command-line tools (fleet cmd, validator, sim, rollout, task):
 * the agent's defaults plus what their --username/--password/--ca flags give. */
export function toolClientOptions(o: {
  url: string
  mqttVersion: 4 | 5
  username?: string | undefined
  password?: string | undefined
  ca?: string | undefined
  keepaliveS?: number
  connectTimeoutMs?: number
}): IClientOptions {
  return brokerClientOptions({
    url: o.url,
    mqttVersion: o.mqttVersion,
    rejectUnauthorized: true,
    keepaliveS: o.keepaliveS ?? 30,
    connectTimeoutMs: o.connectTimeoutMs ?? 10_000,
    ...(o.username ? { username: o.username } : {}),
    ...(o.password ? { password: o.password } : {}),
    ...(o.ca ? { ca: o.ca } : {}),
  })
}

export interface MqttConnectOptions {
  url: string
  /** Credentials, TLS, protocol version, keepalive and connect timeout: brokerClientOptions or toolClientOptions. */
  base?: IClientOptions
  /** Wins over base.protocolVersion; default base's, else 5. */
  mqttVersion?: 4 | 5
  clientId?: string
  /** false: a persistent session (the broker keeps subscriptions and queued QoS 1
   * messages while the client is away). Default true. */
  clean?: boolean
  /** MQTT 5: how long the broker keeps the session after a disconnect. */
  sessionExpiryS?: number
  /** MQTT 5 Maximum Packet Size: the largest packet this client accepts. The broker
   * drops a larger message for this client instead of sending it, so a flood of
   * oversized junk never reaches the program. Size it to the largest message the
   * program reads, plus headroom for the topic and properties. Required: every Cairn
   * connection says what it accepts (MQTT 3.1.1 cannot: the broker's max_packet_size
   * must, docs/protocol.md). */
  maximumPacketSize: number
  /** Milliseconds between reconnect attempts; 0 for none (one-shot tools, and the
   * agent's link, which reconnects itself with backoff and jitter). */
  reconnectPeriodMs: number
  keepaliveS?: number
  connectTimeoutMs?: number
  will?: IClientOptions['will']
  resubscribe?: boolean
  /** Store-then-ack: see `BeforeAck`. */
  beforeAck?: BeforeAck
  /** With beforeAck: how many messages may be at the handler at once (default 1, one
   * after another). Above 1 the next packets are read while earlier ones are still being
   * stored, so a handler can store them together (one transaction for many), and each
   * PUBACK is still sent only once its message is handled, in the order the messages
   * came (as MQTT requires): a handled message waits for those before it. A handler that
   * gives up on one (`ack(err)`) drops the connection, so that it and every later
   * message not yet acknowledged come again. */
  inFlight?: number
}

/** Receives every incoming PUBLISH before it is acknowledged, on MQTT 5 and 3.1.1 alike:
 * mqtt.js sends the PUBACK (QoS 1) only once `ack()` is called, and none when it is
 * called with an error. A broker sends an unacknowledged message again only on a later
 * connection (the persistent session's queue, or another member of a shared group), so
 * a handler that cannot keep a message for good drops the connection. mqtt.js's own
 * customHandleAcks option looks like the tool for this, but it is honoured on MQTT 5
 * connections only: under 3.1.1 the message is acknowledged at once and the handler
 * never runs. Until `ack` is called no further packet of that connection is read. An
 * `ack` that comes after the connection it arrived on was lost is dropped: it must not
 * acknowledge whatever the next connection carries under the same packet id. (The
 * packet's topic is empty only under an MQTT 5 topic alias, which a client gets only by
 * advertising a Topic Alias Maximum; Cairn's clients do not.) */
type BeforeAck = (packet: IPublishPacket, ack: (err?: Error) => void) => void

/** The mqtt.js options connectMqtt uses (exported for tests and diagnostics). */
export function mqttClientOptions(o: Omit<MqttConnectOptions, 'beforeAck'>): IClientOptions {
  const version = o.mqttVersion ?? (o.base?.protocolVersion === 4 ? 4 : 5)
  const v5: NonNullable<IClientOptions['properties']> = {
    ...(o.sessionExpiryS !== undefined ? { sessionExpiryInterval: o.sessionExpiryS } : {}),
    maximumPacketSize: o.maximumPacketSize,
  }
  const { properties: baseProps, ...base } = o.base ?? {}
  const properties = version === 5 ? { ...baseProps, ...v5 } : undefined
  return {
    ...base,
    protocolVersion: version,
    clean: o.clean ?? true,
    reconnectPeriod: o.reconnectPeriodMs,
    ...(o.clientId !== undefined ? { clientId: o.clientId } : {}),
    ...(o.keepaliveS !== undefined ? { keepalive: o.keepaliveS } : {}),
    ...(o.connectTimeoutMs !== undefined ? { connectTimeout: o.connectTimeoutMs } : {}),
    ...(properties && Object.keys(properties).length > 0 ? { properties } : {}),
    ...(o.will !== undefined ? { will: o.will } : {}),
    ...(o.resubscribe !== undefined ? { resubscribe: o.resubscribe } : {}),
  }
}

/** What a one-shot tool reads (a reply, a task update or receipt, a retained status):
 * 4 MiB is far above any of them. */
export const TOOL_MAX_PACKET_BYTES = 4 * 1024 * 1024

/** Connects (and, with a reconnect period, keeps reconnecting) in the background. */
export function connectMqtt(o: MqttConnectOptions): MqttClient {
  const client = mqtt.connect(o.url, mqttClientOptions(o))
  // Before the connection opens: a persistent session's queued messages arrive right
  // behind the CONNACK.
  const beforeAck = o.beforeAck
  if (beforeAck && (o.inFlight ?? 1) > 1) pipelineAcks(client, beforeAck, o.inFlight!)
  else if (beforeAck) {
    client.handleMessage = (packet, callback) => {
      const stream = client.stream
      beforeAck(packet, err => {
        // not on another connection, nor queued by mqtt.js to go out on the next one
        if (client.stream === stream && client.connected) callback(err)
      })
    }
  }
  // Registered first, so it runs before the caller's own 'connect' listeners.
  client.on('connect', () => noDelay(client))
  return client
}

type SendPacket = (packet: { cmd: string; messageId?: number }, cb?: (err?: Error) => void, cbStorePut?: unknown, noStore?: boolean) => void

/** beforeAck with up to `max` messages at the handler (MqttConnectOptions.inFlight).
 * mqtt.js reads the next packet once handleMessage calls back, and then sends the PUBACK
 * through its _sendPacket; so handleMessage calls back at once (while fewer than `max`
 * are in flight) and _sendPacket holds each PUBACK until its message is handled and
 * every one before it has gone. No library gives store-then-ack with several messages in
 * flight on both protocol versions (mqtt.js's customHandleAcks is MQTT 5 only and still
 * one at a time); _sendPacket is mqtt.js's own (5.x), and test/protocol/mqtt-client.test.ts
 * holds it to this contract on each version. */
function pipelineAcks(client: MqttClient, beforeAck: BeforeAck, max: number): void {
  interface Entry {
    readonly id: number | undefined
    readonly stream: MqttClient['stream']
    handled: boolean
    /** mqtt.js's PUBACK for it, held; `true` for a QoS 0 message, which has none */
    puback: Parameters<SendPacket>[0] | true | undefined
  }
  let queue: Entry[] = []
  let inFlight = 0
  let waiting: (() => void) | undefined
  const c = client as unknown as { _sendPacket: SendPacket }
  const send = c._sendPacket.bind(client)
  const flush = () => {
    while (queue[0]?.handled && queue[0].puback !== undefined) {
      const { puback, stream } = queue.shift()!
      inFlight--
      // only on the connection it came on (mqtt.js would queue it for the next one)
      if (typeof puback === 'object' && stream === client.stream && client.connected && !stream.destroyed) send(puback, undefined, undefined, true)
    }
    if (waiting && inFlight < max) {
      const go = waiting
      waiting = undefined
      go()
    }
  }
  c._sendPacket = (packet, cb, cbStorePut, noStore) => {
    const e = packet.cmd === 'puback' ? queue.find(x => x.id === packet.messageId && x.puback === undefined && x.stream === client.stream) : undefined
    if (!e) return send(packet, cb, cbStorePut, noStore)
    e.puback = packet
    cb?.() // mqtt.js reads on; the PUBACK goes in order, once handled
    flush()
  }
  client.on('close', () => {
    // the connection's unacknowledged messages come again on the next one
    queue = []
    inFlight = 0
    waiting = undefined
  })
  client.handleMessage = (packet, callback) => {
    const stream = client.stream
    // QoS 1 is what Cairn subscribes at; QoS 0 (and 2, which mqtt.js answers with
    // PUBREC/PUBCOMP, not PUBACK) wait for no PUBACK here
    const e: Entry = { id: packet.qos === 1 ? packet.messageId : undefined, stream, handled: false, puback: packet.qos === 1 ? undefined : true }
    queue.push(e)
    const go = () => {
      if (client.stream !== stream) return
      inFlight++
      beforeAck(packet, err => {
        if (client.stream !== stream || !queue.includes(e)) return
        if (err) {
          // not kept: neither it nor what came after may be acknowledged now
          stream.destroy()
          return
        }
        e.handled = true
        flush()
      })
      callback()
    }
    // the next packet is read once this one is at the handler: at most `max` there
    if (inFlight < max) go()
    else waiting = go
  }
}

/** Resolves once connected (rejects on a connection error). */
export async function connectMqttAsync(o: Omit<MqttConnectOptions, 'beforeAck'>): Promise<MqttClient> {
  const client = await mqtt.connectAsync(o.url, mqttClientOptions(o)).catch((err: unknown) => {
    throw notMqtt(err) ?? err
  })
  noDelay(client)
  client.on('connect', () => noDelay(client))
  return client
}

/** An operator tool's one-shot connection (fleet cmd, task submit, rollouts): no
 * reconnects, a 10 s connect timeout, and the tool packet limit. */
export function connectTool(o: { url: string; clientOptions?: IClientOptions | undefined; mqttVersion?: 4 | 5 | undefined; clientId?: string; clean?: boolean }): Promise<MqttClient> {
  return connectMqttAsync({
    maximumPacketSize: TOOL_MAX_PACKET_BYTES,
    url: o.url,
    ...(o.clientOptions ? { base: o.clientOptions } : {}),
    mqttVersion: o.mqttVersion ?? 5,
    ...(o.clientId !== undefined ? { clientId: o.clientId } : {}),
    ...(o.clean !== undefined ? { clean: o.clean } : {}),
    reconnectPeriodMs: 0,
    connectTimeoutMs: 10_000,
  })
}

/** Turns off Nagle's algorithm on the connection: a small publish (a challenge response,
 * a reply) otherwise waits for the peer's delayed ACK, adding ~40 ms to every round trip. */
function noDelay(client: MqttClient): void {
  const stream = client.stream as { setNoDelay?: (on: boolean) => unknown } | undefined
  stream?.setNoDelay?.(true)
}

/** A connect that failed because the peer sent bytes that are not MQTT (mqtt-packet's
 * parser threw: another kind of server on that port), as an EPROTO error that says so.
 * Socket errors carry an errno code, a broker's refusal says "Connection refused: …",
 * and mqtt.js's own timeout is "connack timeout": those pass through unchanged. */
function notMqtt(err: unknown): Error | undefined {
  if (!(err instanceof Error) || (err as NodeJS.ErrnoException).code !== undefined) return undefined
  if (err.message.startsWith('Connection refused') || err.message === 'connack timeout') return undefined
  return Object.assign(new Error(`the server does not speak MQTT (${err.message})`), { code: 'EPROTO', cause: err })
}
