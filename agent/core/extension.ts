// The port a feature plugs into the agent through. The core offers a feature what it
// may use (`AgentCore`: state, outbox, events, a telemetry sample, signed broadcasts);
// the feature answers with what it adds (`AgentExtension`: commands, subscriptions and a
// message handler, status fields, start/stop). The agent's own features and those of
// other rooms (OTA, handed in by the composition room, cli/run-agent.ts) use the same
// port, so the core never imports a feature's room.

import type { IPublishPacket } from 'mqtt'
import type { Board, TelemetrySample } from '../../hw/index.js'
import type { Clock } from '../../protocol/clock.js'
import type { Identity } from '../../protocol/identity.js'
import type { PublishProps } from '../../protocol/mqtt-props.js'
import type { ReplayStore } from '../../protocol/replay-guard.js'
import type { Logger } from '../../protocol/log.js'
import type { StatusMessage } from '../../protocol/messages.js'
import type { Config } from '../config/config-schema.js'
import type { CommandDef } from './commands.js'
import type { LocalBus } from './local-bus.js'
import type { Metrics } from './metrics.js'
import type { NewMessage, Outbox } from './outbox.js'
import type { Db } from './state-db.js'

/** 'update': hand over to the OTA launcher (the process exits with EXIT_SWITCH). */
export type StopReason = 'shutdown' | 'restart' | 'update'

/** What a signed fleet-wide broadcast came to: run, seen before (a replay, e.g. the
 * retained copy again after a reconnect), or not a valid signed command. */
export type BroadcastOutcome = 'applied' | 'seen' | 'refused'

/** Fields a feature adds to the retained status message (and to agent.started). */
export type StatusFields = Partial<Pick<StatusMessage, 'slot' | 'os' | 'tasks'>>

export interface AgentCore {
  readonly deviceId: string
  readonly identity: Identity
  readonly board: Board
  readonly version: string
  readonly clock: Clock
  readonly log: Logger
  readonly db: Db
  readonly outbox: Outbox
  readonly metrics: Metrics
  readonly bus: LocalBus
  /** The device's store of signed-message ids seen (shared by every signed input). */
  readonly replay: ReplayStore
  /** Whether a key id is a trusted operator now (revocations apply at once). */
  isOperator(keyId: string): boolean
  /** The configuration in force (it changes on a live reload). */
  config(): Readonly<Config>
  connected(): boolean
  /** Queues an event (durable) and tells on-device observers. */
  publishEvent(kind: string, data: Record<string, unknown>): void
  /** An event as an outbox record, for a feature that stores it in its own transaction. */
  eventRecord(kind: string, data: Record<string, unknown>): NewMessage
  /** Takes one telemetry sample now. */
  sample(): Promise<TelemetrySample>
  /** The newest sample the telemetry loop took, if any. */
  lastSample(): TelemetrySample | undefined
  /** Publishes at once, QoS 1, not through the outbox (rejects when not connected). */
  publishNow(topic: string, payload: Buffer): Promise<void>
  /** Publishes once at QoS 0 if connected, else drops it: for answers to unauthenticated input. */
  publishQuick(topic: string, payload: Buffer, props: PublishProps | undefined): void
  /** Publishes the retained status again (a feature's status fields changed). */
  refreshStatus(): void
  /** Runs a signed command that came on a fleet-wide topic, if it is one of `allowed`. */
  runBroadcast(payload: Buffer, allowed: ReadonlySet<string>): Promise<BroadcastOutcome>
  /** Stops the agent; 'update' makes the process exit for the launcher. */
  stop(reason: StopReason): void
}

export interface AgentExtension {
  readonly name: string
  /** Signed commands it adds to the device's command table. */
  readonly commands?: readonly CommandDef[]
  /** MQTT subscriptions, made again on every connection. */
  filters?(): readonly string[]
  /** True when the message was this feature's. */
  handle?(topic: string, payload: Buffer, packet: IPublishPacket): boolean
  statusFields?(): StatusFields
  /** What the local API's status shows of it, under its name. */
  localStatus?(): unknown
  /** The retained online status of this connection was acknowledged. */
  onStatusPublished?(): void
  start?(): void
  stop?(): Promise<void> | void
}

/** Builds a feature for one run of the agent; undefined when it is off. */
export type ExtensionFactory = (core: AgentCore) => AgentExtension | undefined
