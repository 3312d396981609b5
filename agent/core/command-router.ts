// Turns an incoming cmd/<name> message into a reply: the signed-inbound gate (size,
// JSON, envelope from a trusted operator for this fleet and device, unexpired, replay
// store), then body schema and handler.
// Replies to authenticated commands go through the outbox (durable, QoS 1); refusals of
// unauthenticated input are sent once, QoS 0 and rate-limited, so junk on the command
// topic can neither fill the outbox nor wear the SD card.

import type { IPublishPacket } from 'mqtt'
import { Value } from '@sinclair/typebox/value'
import type { Clock } from '../../protocol/clock.js'
import type { Json } from '../../protocol/canonical.js'
import type { CommandContext, CommandDef, CommandTable } from './commands.js'
import type { Envelope } from '../../protocol/envelope.js'
import { CairnError, errorBody, type ErrorCode } from '../../protocol/errors.js'
import type { Logger } from '../../protocol/log.js'
import type { Metrics } from './metrics.js'
import type { OperatorKeys } from './operators.js'
import { MsgClass, type Outbox } from './outbox.js'
import { correlationProps, replyRoute, type PublishProps } from '../../protocol/mqtt-props.js'
import { crashPoint } from '../../protocol/crash-points.js'
import { RefusalLog } from '../../protocol/refusal-log.js'
import type { ReplayStore } from '../../protocol/replay-guard.js'
import { readSignedInbound } from '../../protocol/signed-inbound.js'
import { signReply, type ReplyMessage } from '../../protocol/reply.js'
import { commandName, deviceTopics } from '../../protocol/topics.js'
import { newId } from '../../protocol/ids.js'
import type { KeyPair } from '../../protocol/keys.js'

export interface RouterOptions {
  fleet: string
  deviceId: string
  clock: Clock
  maxPayloadBytes: number
  maxTtlMs: number
  skewMs: number
  operators: OperatorKeys
  replay: ReplayStore
  outbox: Outbox
  log: Logger
  metrics: Metrics
  /** The device key: every reply is signed with it (protocol/reply.ts). */
  identity: KeyPair
  /** QoS 0 publish for refusals; may drop when offline. */
  publishQuick(topic: string, payload: Buffer, props: PublishProps | undefined): void
  context(env: Envelope): CommandContext
  commands: CommandTable
}

const UNAUTH_REPLY_BURST = 10
const UNAUTH_REPLY_PER_S = 2

export class CommandRouter {
  private readonly refusals: RefusalLog
  private tokens = UNAUTH_REPLY_BURST
  private tokensAt = 0

  constructor(private readonly o: RouterOptions) {
    this.refusals = new RefusalLog(o.log, 'command')
  }

  async handle(topic: string, payload: Buffer, packet: IPublishPacket): Promise<void> {
    const o = this.o
    const { reply } = deviceTopics(o.fleet, o.deviceId)
    const route = replyRoute(packet, reply)
    const replyTopic = route.responseTopic ?? reply
    const props = correlationProps(route.correlation)
    let env: Envelope | undefined
    let requestId: string | null = null
    let requestIss: string | null = null
    try {
      const name = commandName(topic, o.fleet, o.deviceId)
      if (name === null) throw new CairnError('UNKNOWN_COMMAND', `not a command topic: ${topic.slice(0, 200)}`)
      // A command seen before is a REPLAY (cheap, not durable); a new one is admitted to
      // the replay store with its reply, ok or refused (below).
      const read = this.read(payload, { sub: o.deviceId, expectType: t => t === `cmd.${name}` })
      // Echo the id when the request carries a well-formed one, even if it is refused.
      requestId = read.echo.id
      requestIss = read.echo.iss
      if (!read.ok) throw read.error
      env = read.env
      const cmd = o.commands.find(name)
      const data = await this.run(name, cmd, env)
      o.log.info({ cmd: name, id: env.id, by: env.iss.slice(0, 12) }, 'command done')
      this.replyDurableOrQuick(replyTopic, props, { id: env.id, status: 'ok', data }, env)
    } catch (err) {
      const body = errorBody(err)
      o.metrics.inc('cairn_commands_total', { result: body.code })
      if (body.code === 'INTERNAL') o.log.error({ err, topic }, 'command failed')
      else if (env && authenticatedFailure(body.code)) o.log.warn({ topic: topic.slice(0, 200), code: body.code, msg: body.message, id: env.id }, 'command refused')
      else this.refusals.refused(body.code, { topic: topic.slice(0, 200), msg: body.message })
      const reply: ReplyMessage = { id: env?.id ?? requestId, status: 'error', error: body }
      // Only a command we authenticated earns a durable reply.
      if (env && authenticatedFailure(body.code)) this.replyDurableOrQuick(replyTopic, props, reply, env)
      else this.replyQuick(replyTopic, props, reply, requestIss)
    }
  }

  /** A signed command on a fleet-wide topic (the OTA release topic): sub "*" or this
   * device, one of `allowed`, verified and replay-checked like any command, and run
   * without a reply (no one waits on a reply topic). The outcome tells the caller
   * whether it was a genuine command; anything else there is untrusted input. */
  async handleBroadcast(payload: Buffer, allowed: ReadonlySet<string>): Promise<{ ok: true; name: string; data: Json } | { ok: false; code: ErrorCode; message: string }> {
    const o = this.o
    try {
      const read = this.read(payload, { sub: o.deviceId, allowBroadcast: true, expectType: t => t.startsWith('cmd.') && allowed.has(t.slice(4)) })
      if (!read.ok) throw read.error
      const env = read.env
      const name = env.type.slice(4)
      const data = await this.run(name, o.commands.find(name), env)
      // After the effect (pause, pin, check: each idempotent), so a crash before this
      // line runs it again when the broker redelivers, rather than never.
      o.replay.admit(env.id, env.exp, o.clock.now())
      o.log.info({ cmd: name, id: env.id, by: env.iss.slice(0, 12), broadcast: env.sub === '*' }, 'broadcast command done')
      return { ok: true, name, data }
    } catch (err) {
      const body = errorBody(err)
      // A retained broadcast comes again with every reconnect: REPLAY is the normal case.
      if (body.code !== 'REPLAY') o.metrics.inc('cairn_commands_total', { result: body.code })
      o.log.debug({ code: body.code, msg: body.message }, 'not a broadcast command')
      return { ok: false, ...body }
    }
  }

  /** The signed-inbound gate with the command settings: operator keys, this fleet, the
   * command lifetime and clock bounds, and the replay store (admitted at once). */
  private read(payload: Buffer, target: { sub: string; allowBroadcast?: boolean; expectType: (t: string) => boolean }) {
    const o = this.o
    return readSignedInbound(payload, {
      maxBytes: o.maxPayloadBytes,
      fleet: o.fleet,
      ...target,
      trusted: keyId => o.operators.isTrusted(keyId),
      clock: { now: o.clock.now(), maxTtlMs: o.maxTtlMs, skewMs: o.skewMs },
      replay: o.replay,
    })
  }

  private async run(name: string, cmd: CommandDef, env: Envelope): Promise<Json> {
    if (!Value.Check(cmd.body, env.body)) {
      const e = [...Value.Errors(cmd.body, env.body)][0]
      throw new CairnError('BAD_REQUEST', `${name}: body${e?.path ?? ''} ${e?.message ?? 'invalid'}`)
    }
    const data = await cmd.run(env.body as never, this.o.context(env))
    this.o.metrics.inc('cairn_commands_total', { result: 'ok' })
    return data
  }

  /** The reply to an authenticated command, committed in ONE transaction with the
   * command's id in the replay store: a crash before it leaves neither (the broker
   * redelivers the command, which is answered), after it both (a redelivery is a
   * REPLAY, and the stored reply is sent). A reply that cannot be stored (disk full) is
   * still sent once, directly. */
  private replyDurableOrQuick(topic: string, props: PublishProps | undefined, reply: ReplyMessage, env: Envelope): void {
    const o = this.o
    try {
      o.outbox.enqueueWith(() => {
        o.replay.admit(env.id, env.exp, o.clock.now())
        crashPoint('command.after-admit')
        return { id: newId(o.clock.now()), cls: MsgClass.reply, topic, payload: this.sign(reply, env.iss, env.exp), ...(props ? { props } : {}), expires: env.exp }
      })
    } catch (err) {
      if (errorBody(err).code === 'REPLAY') return // a second copy raced this one here: the first answers
      o.log.error({ err }, 'reply could not be stored; sending it once without the outbox')
      o.publishQuick(topic, this.sign(reply, env.iss, env.exp), props)
    }
  }

  /** The reply as a signed envelope: bound to the command (body.cmd), its signer (sub)
   * and this device (iss). */
  private sign(reply: ReplyMessage, to: string | null, exp?: number): Buffer {
    return Buffer.from(JSON.stringify(signReply(this.o.identity, reply, { fleet: this.o.fleet, to, now: this.o.clock.now(), exp })))
  }

  private replyQuick(topic: string, props: PublishProps | undefined, reply: ReplyMessage, to: string | null): void {
    const now = this.o.clock.now()
    this.tokens = Math.min(UNAUTH_REPLY_BURST, this.tokens + ((now - this.tokensAt) / 1000) * UNAUTH_REPLY_PER_S)
    this.tokensAt = now
    if (this.tokens < 1) {
      this.o.metrics.inc('cairn_replies_suppressed_total')
      return
    }
    this.tokens -= 1
    this.o.publishQuick(topic, this.sign(reply, to), props)
  }
}

/** Errors raised after the envelope verified: the sender is a trusted operator. */
function authenticatedFailure(code: ErrorCode): boolean {
  return code !== 'REPLAY' && code !== 'BAD_JSON' && code !== 'BAD_SIGNATURE' && code !== 'UNTRUSTED_KEY' && code !== 'TOO_LARGE'
}
