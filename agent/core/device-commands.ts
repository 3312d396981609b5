// The device's signed commands: the router over the command table (the core's built-in
// commands and those its extensions registered), the context a command runs in, and
// what runs after a reply is on its way (an in-place restart, a reboot).

import type { LogRing } from '../../protocol/log.js'
import { CommandRouter } from './command-router.js'
import { BUILTIN_COMMANDS, CommandTable, type CommandContext } from './commands.js'
import type { AgentCore, AgentExtension, StopReason } from './extension.js'
import type { LiveConfig } from './live-config.js'
import type { MqttLink } from './mqtt-link.js'
import type { OperatorKeys } from './operators.js'
import type { SystemPort } from './system.js'

export interface DeviceCommandsOptions {
  core: AgentCore
  extensions: readonly AgentExtension[]
  operators: OperatorKeys
  live: LiveConfig
  ring: LogRing
  system: SystemPort
  startedAt: number
  link(): MqttLink
  stop(reason: StopReason): Promise<void>
}

export function deviceCommands(o: DeviceCommandsOptions): CommandRouter {
  const { core } = o
  const config = core.config()
  let pending: 'restart-agent' | 'reboot' | undefined
  const act = async (): Promise<void> => {
    const action = pending
    pending = undefined
    if (action === 'restart-agent') await o.stop('restart')
    if (action === 'reboot') {
      await o.link().settle(3000)
      core.outbox.flush()
      try {
        await o.system.reboot()
      } catch (err) {
        core.log.error({ err }, 'reboot failed')
        core.publishEvent('system.reboot-failed', { message: (err as Error).message })
      }
    }
  }
  const context = (env: { iss: string }): CommandContext => ({
    issuer: env.iss,
    now: core.clock.now(),
    deviceId: core.deviceId,
    startedAt: o.startedAt,
    operators: o.operators,
    logs: o.ring,
    uptimeS: () => core.lastSample()?.uptimeS,
    getConfig: () => o.live.view(),
    setConfig: patch => o.live.setRemote(patch),
    afterReply: action => {
      pending = action
      // Let the reply reach the outbox and the broker before acting on it.
      setTimeout(() => void act(), 50)
    },
  })
  return new CommandRouter({
    fleet: config.fleet,
    deviceId: core.deviceId,
    clock: core.clock,
    maxPayloadBytes: config.commands.maxPayloadBytes,
    maxTtlMs: config.commands.maxTtlS * 1000,
    skewMs: config.commands.skewS * 1000,
    operators: o.operators,
    replay: core.replay,
    outbox: core.outbox,
    log: core.log.child({ mod: 'cmd' }),
    metrics: core.metrics,
    identity: core.identity,
    // Dropped when there is no connection: a refusal is never queued.
    publishQuick: (topic, payload, props) => core.publishQuick(topic, payload, props),
    context,
    commands: new CommandTable([...BUILTIN_COMMANDS, ...o.extensions.flatMap(x => x.commands ?? [])]),
  })
}
