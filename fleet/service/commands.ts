// Commands through the fleet service, and their audit log. The service never holds an
// operator's key: a command arrives signed (in the operator's browser, or by the CLI),
// the service checks it as a device would (shape, fleet, target, lifetime, signature;
// and the signer, where `--operator-key` pins who may send through it), logs it, then
// publishes it on the device's command topic. The device's answer comes back on its
// reply topic; only a reply signed by that device, for that command and that operator,
// is recorded as the answer (protocol/reply.ts). Anything else that claims to answer it
// is counted as refused, with the reason, beside the command: the log says what the
// device said, never what the broker said for it.

import type { Clock } from '../../protocol/clock.js'
import { checkEnvelope, ID_PATTERN, type Envelope } from '../../protocol/envelope.js'
import { CairnError } from '../../protocol/errors.js'
import type { Logger } from '../../protocol/log.js'
import { readReply } from '../../protocol/reply.js'
import { RefusalLog } from '../../protocol/refusal-log.js'
import { deviceTopics, releaseTopic, TOPIC_ROOT } from '../../protocol/topics.js'
import type { CommandRow, FleetStore } from './fleet-store.js'

/** A command's name: what the agent's command topics accept. */
const COMMAND_TYPE = /^cmd\.[a-z][a-z0-9-]{0,39}$/
/** The longest lifetime a command sent through the service may have. */
const MAX_COMMAND_TTL_MS = 86_400_000
/** Clocks of an operator's machine, the service and a device may disagree this much. */
const SKEW_MS = 5 * 60_000
/** The largest reply read (a `logs` answer of 1000 long lines, a `get-config`). */
export const MAX_REPLY_BYTES = 512 * 1024
const ID = new RegExp(ID_PATTERN)

interface Publish {
  (topic: string, payload: string, o: { responseTopic?: string; correlation?: string; expirySeconds: number; retain?: boolean }): void
}

export interface CommandDeskOptions {
  store: FleetStore
  fleet: string
  clock: Clock
  log: Logger
  /** Key ids allowed to send through the service; null: any key whose signature verifies
   * (each device still checks its own list of trusted operators). */
  operators: ReadonlySet<string> | null
  publish: Publish
  /** whether a publish can be handed to the broker client yet */
  ready: () => boolean
  onChange?: (device: string) => void
}

/** The subscription for replies: every device of the fleet. */
export function replyFilter(fleet: string): string {
  return `${TOPIC_ROOT}/${fleet}/+/reply`
}

export function isReplyTopic(topic: string, fleet: string): string | null {
  const parts = topic.split('/')
  if (parts.length !== 5 || `${parts[0]}/${parts[1]}` !== TOPIC_ROOT || parts[2] !== fleet || parts[4] !== 'reply') return null
  return /^[a-z2-7]{52}$/.test(parts[3]!) ? parts[3]! : null
}

export class CommandDesk {
  private readonly refusals: RefusalLog

  constructor(private readonly o: CommandDeskOptions) {
    this.refusals = new RefusalLog(o.log, 'command reply')
  }

  /** Checks a signed command for `device`, logs it and publishes it. Throws CairnError:
   * BAD_REQUEST and the envelope codes (the command is not sent), NOT_FOUND (no such
   * device), UNTRUSTED_KEY (not a key this service sends for), REPLAY (sent before). */
  async send(input: unknown, device: string, by: string): Promise<CommandRow> {
    const now = this.o.clock.now()
    const env: Envelope = checkEnvelope(input, {
      trusted: keyId => this.o.operators === null || this.o.operators.has(keyId),
      fleet: this.o.fleet,
      sub: device,
      expectType: t => COMMAND_TYPE.test(t),
      clock: { now, maxTtlMs: MAX_COMMAND_TTL_MS, skewMs: SKEW_MS },
    })
    if (!(await this.o.store.getDevice(device))) throw new CairnError('NOT_FOUND', `no device ${device} in fleet ${this.o.fleet}`)
    if (!this.o.ready()) throw new CairnError('UNAVAILABLE', 'the service is still connecting to the broker: try again')
    const name = env.type.slice('cmd.'.length)
    const payload = JSON.stringify(env)
    const logged = await this.o.store.addCommand({ id: env.id, device, name, operator: env.iss, by, sentAt: now, exp: env.exp, envelope: payload })
    if (!logged) throw new CairnError('REPLAY', `command ${env.id} was sent before: sign a new one`)
    // Logged first, so a quick reply finds it. The broker client queues the message while
    // it is offline; the command's own expiry bounds how long it can matter.
    const topics = deviceTopics(this.o.fleet, device)
    this.o.publish(topics.cmd(name), payload, { responseTopic: topics.reply, correlation: env.id, expirySeconds: Math.max(1, Math.ceil((env.exp - now) / 1000)) })
    this.o.onChange?.(device)
    return (await this.o.store.getCommand(env.id, now))!
  }

  /** A signed fleet-wide pause-updates (or resume): checked, logged (device `*`), and
   * published retained on the release topic, where each device verifies it against its
   * own operators and devices that connect later still find it (docs/ota.md). */
  async pauseUpdates(input: unknown, by: string): Promise<CommandRow> {
    const now = this.o.clock.now()
    const env = checkEnvelope(input, {
      trusted: keyId => this.o.operators === null || this.o.operators.has(keyId),
      fleet: this.o.fleet,
      sub: '*',
      allowBroadcast: true,
      expectType: t => t === 'cmd.pause-updates',
      clock: { now, maxTtlMs: MAX_COMMAND_TTL_MS, skewMs: SKEW_MS },
      body: e => {
        const b = e.body as Record<string, unknown> | null
        if (typeof b !== 'object' || b === null || typeof b.paused !== 'boolean' || Object.keys(b).length !== 1)
          throw new CairnError('BAD_REQUEST', 'pause-updates: the body is {"paused": true|false}')
      },
    })
    if (!this.o.ready()) throw new CairnError('UNAVAILABLE', 'the service is still connecting to the broker: try again')
    const payload = JSON.stringify(env)
    if (!(await this.o.store.addCommand({ id: env.id, device: '*', name: 'pause-updates', operator: env.iss, by, sentAt: now, exp: env.exp, envelope: payload })))
      throw new CairnError('REPLAY', `command ${env.id} was sent before: sign a new one`)
    this.o.publish(releaseTopic(this.o.fleet), payload, { expirySeconds: Math.max(1, Math.ceil((env.exp - now) / 1000)), retain: true })
    return (await this.o.store.getCommand(env.id, now))!
  }

  /** A message on a device's reply topic: the answer to a logged command, if it verifies. */
  async handleReply(topic: string, payload: Buffer): Promise<'stored' | 'refused' | 'ignored'> {
    const device = isReplyTopic(topic, this.o.fleet)
    if (!device || payload.length === 0) return 'ignored'
    if (payload.length > MAX_REPLY_BYTES) {
      this.refusals.refused('TOO_LARGE', { topic: topic.slice(0, 200), bytes: payload.length })
      return 'refused'
    }
    const cmd = claimedCommand(payload)
    if (cmd === null) return 'ignored'
    // A reply to a command sent some other way (the CLI) is not this log's business.
    const target = await this.o.store.commandTarget(cmd)
    if (!target || target.device !== device) return 'ignored'
    const now = this.o.clock.now()
    const r = readReply(payload, { fleet: this.o.fleet, device, operator: target.operator, cmd, now, skewMs: SKEW_MS, maxBytes: MAX_REPLY_BYTES })
    if (!r.ok) {
      this.refusals.refused(r.error.code, { topic: topic.slice(0, 200), cmd })
      await this.o.store.refuseReply(cmd, `${r.error.code}: ${r.error.message}`)
      this.o.onChange?.(device)
      return 'refused'
    }
    const reply = r.reply
    const result = reply.status === 'ok' ? reply.data : reply.error
    await this.o.store.setReply(cmd, { at: now, status: reply.status, result: JSON.stringify(result ?? null), envelope: payload.toString('utf8') })
    this.o.onChange?.(device)
    return 'stored'
  }
}

/** The command id an unverified reply says it answers, or null. */
function claimedCommand(payload: Buffer): string | null {
  try {
    const v = JSON.parse(payload.toString('utf8')) as { body?: { cmd?: unknown } } | null
    const cmd = v?.body?.cmd
    return typeof cmd === 'string' && ID.test(cmd) ? cmd : null
  } catch {
    return null
  }
}
