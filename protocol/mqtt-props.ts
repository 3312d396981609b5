// MQTT 5 request/response properties, handled in one place. A request's response topic
// (only one under the receiver's own reply topic is honoured) and correlation data are
// read from the packet into the form the outbox stores (correlation data as base64);
// on the way out they become packet properties again on an MQTT 5 connection only. A
// 3.1.1 client matches answers by the ids carried in the payload instead.

import type { IClientPublishOptions, IPublishPacket } from 'mqtt'
import { isAllowedResponseTopic } from './topics.js'

/** Publish properties as stored with a message (JSON-safe). */
export interface PublishProps {
  responseTopic?: string
  correlationData?: string // base64
  messageExpiryInterval?: number
  userProperties?: Record<string, string>
}

/** Where and how to answer a request. */
export interface ReplyRoute {
  /** The request's response topic when it is one this receiver may publish to (`replyTopic` or one level under it); else null. */
  responseTopic: string | null
  /** The request's correlation data, base64; null when it had none. */
  correlation: string | null
}

export function replyRoute(packet: Pick<IPublishPacket, 'properties'> | undefined, replyTopic: string): ReplyRoute {
  const rt = packet?.properties?.responseTopic
  const corr = packet?.properties?.correlationData
  return {
    responseTopic: rt !== undefined && isAllowedResponseTopic(rt, replyTopic) ? rt : null,
    correlation: corr && corr.length > 0 ? Buffer.from(corr).toString('base64') : null,
  }
}

/** Stored properties for an answer that carries the request's correlation data back. */
export function correlationProps(correlation: string | null): PublishProps | undefined {
  return correlation ? { correlationData: correlation } : undefined
}

/** Packet properties for a publish: on MQTT 5 only (a 3.1.1 packet has none). */
export function publishProperties(props: PublishProps | undefined, mqttVersion: 4 | 5): IClientPublishOptions['properties'] | undefined {
  if (mqttVersion !== 5 || !props) return undefined
  const out: NonNullable<IClientPublishOptions['properties']> = {
    ...(props.responseTopic !== undefined ? { responseTopic: props.responseTopic } : {}),
    ...(props.correlationData !== undefined ? { correlationData: Buffer.from(props.correlationData, 'base64') } : {}),
    ...(props.messageExpiryInterval !== undefined ? { messageExpiryInterval: props.messageExpiryInterval } : {}),
    ...(props.userProperties !== undefined ? { userProperties: props.userProperties } : {}),
  }
  return Object.keys(out).length > 0 ? out : undefined
}
