// The flags every Cairn tool takes to reach a broker (--broker, --mqtt-version,
// --username, --password, --ca), declared once, and what they come to: the URL, the
// protocol version and the client options of the one MQTT client factory
// (protocol/mqtt-client.ts).

import type { Command } from 'commander'
import type { IClientOptions } from 'mqtt'
import { CairnError } from './errors.js'
import { toolClientOptions } from './mqtt-client.js'

export interface BrokerFlags {
  broker: string
  mqttVersion: string
  username?: string | undefined
  password?: string | undefined
  ca?: string | undefined
}

export interface BrokerConnection {
  url: string
  mqttVersion: 4 | 5
  clientOptions: IClientOptions
}

export function withBrokerFlags(cmd: Command): Command {
  return cmd
    .option('--broker <url>', 'MQTT broker URL', 'mqtt://127.0.0.1:1883')
    .option('--mqtt-version <version>', '5 or 4 (MQTT 3.1.1)', '5')
    .option('--username <u>', 'broker user name')
    .option('--password <p>', 'broker password')
    .option('--ca <file>', 'PEM file of the CA that signed the broker certificate')
}

export function brokerConnection(f: BrokerFlags, timing: { keepaliveS?: number; connectTimeoutMs?: number } = {}): BrokerConnection {
  const mqttVersion = Number(f.mqttVersion)
  if (mqttVersion !== 4 && mqttVersion !== 5) throw new CairnError('BAD_REQUEST', '--mqtt-version must be 5 or 4')
  return { url: f.broker, mqttVersion, clientOptions: toolClientOptions({ url: f.broker, mqttVersion, username: f.username, password: f.password, ca: f.ca, ...timing }) }
}
