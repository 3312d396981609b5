// The one MQTT client factory: every Cairn program (the agent's link, the validator, the
// fleet simulator, the operator tools, the demo) connects through it, so the options
// that matter are set in one place: protocol version (5, or 4 for 3.1.1), credentials
// and TLS, client id, clean or persistent session, keepalive, reconnect policy, connect
// timeout, MQTT 5 Maximum Packet Size, and TCP_NODELAY on every (re)connected socket.
// (bench/ keeps raw mqtt.js on purpose: it measures the library, not Cairn.)

import { readFileSync } from 'node:fs'
import mqtt, { type IClientOptions, type MqttClient } from 'mqtt'

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
  customHandleAcks?: IClientOptions['customHandleAcks']
}

/** The mqtt.js options connectMqtt uses (exported for tests and diagnostics). */
export function mqttClientOptions(o: MqttConnectOptions): IClientOptions {
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
    ...(o.customHandleAcks !== undefined ? { customHandleAcks: o.customHandleAcks } : {}),
  }
}

/** What a one-shot tool reads (a reply, a task update or receipt, a retained status):
 * 4 MiB is far above any of them. */
export const TOOL_MAX_PACKET_BYTES = 4 * 1024 * 1024

/** Connects (and, with a reconnect period, keeps reconnecting) in the background. */
export function connectMqtt(o: MqttConnectOptions): MqttClient {
  const client = mqtt.connect(o.url, mqttClientOptions(o))
  // Registered first, so it runs before the caller's own 'connect' listeners.
  client.on('connect', () => noDelay(client))
  return client
}

/** Resolves once connected (rejects on a connection error). */
export async function connectMqttAsync(o: MqttConnectOptions): Promise<MqttClient> {
  const client = await mqtt.connectAsync(o.url, mqttClientOptions(o))
  noDelay(client)
  client.on('connect', () => noDelay(client))
  return client
}

/** Turns off Nagle's algorithm on the connection: a small publish (a challenge response,
 * a reply) otherwise waits for the peer's delayed ACK, adding ~40 ms to every round trip. */
function noDelay(client: MqttClient): void {
  const stream = client.stream as { setNoDelay?: (on: boolean) => unknown } | undefined
  stream?.setNoDelay?.(true)
}
