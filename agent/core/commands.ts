// The commands an operator can send a device: the core's own, and a table that features
// add theirs to (OTA registers update, pause-updates, pin-version). Each has a body
// schema and a handler; the router (command-router.ts) verifies the signature, replay
// and expiry first.

import { Type, type Static, type TSchema } from '@sinclair/typebox'
import type { Json } from '../../protocol/canonical.js'
import { CairnError } from '../../protocol/errors.js'
import { keyIdOf, parsePublicKey } from '../../protocol/keys.js'
import type { OperatorKeys } from './operators.js'
import type { LogRing } from '../../protocol/log.js'

export interface CommandContext {
  /** Key id of the operator who signed the command. */
  issuer: string
  now: number
  deviceId: string
  startedAt: number
  operators: OperatorKeys
  logs: LogRing
  getConfig(): { config: unknown; sources: Record<string, string> }
  setConfig(patch: Record<string, unknown>): { applied: string[]; shadowed: string[] }
  /** Runs after the reply is on its way. */
  afterReply(action: 'restart-agent' | 'reboot'): void
  uptimeS(): number | undefined
}

export interface CommandDef<S extends TSchema = TSchema> {
  name: string
  summary: string
  body: S
  run(body: Static<S>, ctx: CommandContext): Json | Promise<Json>
}

const Empty = Type.Object({}, { additionalProperties: false })

const def = <S extends TSchema>(d: CommandDef<S>): CommandDef => d as unknown as CommandDef

/** The core's own commands. */
export const BUILTIN_COMMANDS: readonly CommandDef[] = [
  def({
    name: 'ping',
    summary: 'liveness check; replies with the device time and uptime',
    body: Empty,
    run: (_b, ctx) => ({ pong: true, ts: ctx.now, agentUptimeS: Math.round((ctx.now - ctx.startedAt) / 1000), ...(ctx.uptimeS() !== undefined ? { uptimeS: ctx.uptimeS()! } : {}) }),
  }),
  def({
    name: 'get-config',
    summary: 'the effective configuration (secrets redacted) and where each value came from',
    body: Empty,
    run: (_b, ctx) => ctx.getConfig() as unknown as Json,
  }),
  def({
    name: 'set-config',
    summary: 'change telemetry, outbox or log settings; validated, persisted in the state dir, applied live',
    body: Type.Object(
      {
        telemetry: Type.Optional(Type.Record(Type.String(), Type.Unknown())),
        outbox: Type.Optional(Type.Record(Type.String(), Type.Unknown())),
        log: Type.Optional(Type.Record(Type.String(), Type.Unknown())),
      },
      { additionalProperties: false, minProperties: 1 },
    ),
    run: (body, ctx) => ctx.setConfig(body as Record<string, unknown>),
  }),
  def({
    name: 'restart-agent',
    summary: 'restart the agent process in place (re-reads the configuration)',
    body: Empty,
    run: (_b, ctx) => {
      ctx.afterReply('restart-agent')
      return { restarting: true }
    },
  }),
  def({
    name: 'reboot',
    summary: 'reboot the device (after the reply is delivered)',
    body: Empty,
    run: (_b, ctx) => {
      ctx.afterReply('reboot')
      return { rebooting: true }
    },
  }),
  def({
    name: 'logs',
    summary: 'the last N log lines (default 100, at most 1000)',
    body: Type.Object({ lines: Type.Optional(Type.Integer({ minimum: 1, maximum: 1000 })) }, { additionalProperties: false }),
    run: (body, ctx) => ({ lines: ctx.logs.last(body.lines ?? 100) }),
  }),
  def({
    name: 'operator-list',
    summary: 'the operator keys this device trusts',
    body: Empty,
    run: (_b, ctx) => ({ keys: ctx.operators.list() }),
  }),
  def({
    name: 'operator-add',
    summary: 'trust another operator key (PEM SPKI or key id)',
    body: Type.Object({ publicKey: Type.String({ minLength: 52, maxLength: 1024 }) }, { additionalProperties: false }),
    run: (body, ctx) => {
      const keyId = keyIdOf(parsePublicKey(body.publicKey, 'publicKey'))
      ctx.operators.add(keyId, ctx.issuer, ctx.now)
      return { keyId, keys: ctx.operators.list() }
    },
  }),
  def({
    name: 'operator-revoke',
    summary: 'stop trusting an operator key, at once',
    body: Type.Object({ keyId: Type.String({ pattern: '^[a-z2-7]{52}$' }) }, { additionalProperties: false }),
    run: (body, ctx) => {
      ctx.operators.revoke(body.keyId, ctx.issuer, ctx.now)
      return { revoked: body.keyId, keys: ctx.operators.list() }
    },
  }),
]

/** Every command a device answers: the built-in ones and those features registered. */
export class CommandTable {
  private readonly byName = new Map<string, CommandDef>()

  constructor(defs: readonly CommandDef[]) {
    for (const d of defs) {
      if (this.byName.has(d.name)) throw new Error(`command ${d.name} registered twice`)
      this.byName.set(d.name, d)
    }
  }

  get(name: string): CommandDef | undefined {
    return this.byName.get(name)
  }

  /** The command, or UNKNOWN_COMMAND naming those there are. */
  find(name: string): CommandDef {
    const cmd = this.byName.get(name)
    if (!cmd) throw new CairnError('UNKNOWN_COMMAND', `unknown command ${name}; known: ${this.names().join(', ')}`)
    return cmd
  }

  names(): string[] {
    return [...this.byName.keys()]
  }

  all(): CommandDef[] {
    return [...this.byName.values()]
  }
}
