// Builds the local API's view of a running agent (LocalApiHost) from the agent's parts
// and starts the server. A local API that cannot start (socket path too long, another
// agent on the socket) is logged and left off: it must never keep the device off its fleet.

import type { Config } from '../config/config-schema.js'
import type { Json } from '../../protocol/canonical.js'
import type { Logger } from '../../protocol/log.js'
import type { LocalBus } from '../core/local-bus.js'
import type { DeviceUi } from '../device-ui/device-ui.js'
import type { Board } from '../../hw/index.js'
import type { AgentExtension } from '../core/extension.js'
import { runSelfTest } from '../core/self-test.js'
import type { LocalApiHost } from './ops.js'
import { startLocalApi, type LocalApi } from './api-server.js'

export interface AgentParts {
  config: Readonly<Config>
  log: Logger
  version: string
  deviceId: string
  board: Board
  bus: LocalBus
  ui: DeviceUi
  connected(): boolean
  outboxDepth(): number
  /** Features whose state the status shows, each under its name. */
  extensions: readonly AgentExtension[]
  tasks: { status(): unknown; runLocal(type: 'inference', params: unknown, opts?: { timeoutMs?: number }): Promise<{ taskId: string; result: Json; receipt: unknown }> } | undefined
  sample(): Promise<unknown>
}

function agentHost(p: AgentParts): LocalApiHost {
  const tasks = p.tasks
  return {
    hello: { device: p.deviceId, fleet: p.config.fleet, version: p.version },
    status: async () => ({
      connected: p.connected(),
      board: p.board.kind,
      model: p.board.model,
      outboxDepth: p.outboxDepth(),
      ...(tasks ? { tasks: tasks.status() } : {}),
      ...Object.fromEntries(p.extensions.flatMap(x => (x.localStatus ? [[x.name, x.localStatus()]] : []))),
    }),
    bus: p.bus,
    state: p.ui.state,
    gpio: p.ui.gpio,
    led: () => p.ui.light,
    // The same checks an OTA trial runs: durable state-dir write, device key, a telemetry sample.
    selfTest: () => runSelfTest({ stateDir: p.config.stateDir, sample: p.sample }),
    runLocal: tasks ? (type, params, opts) => tasks.runLocal(type, params, opts) : undefined,
  }
}

export async function startAgentLocalApi(p: AgentParts): Promise<LocalApi | undefined> {
  if (!p.config.localApi.enabled) return undefined
  const log = p.log.child({ mod: 'local-api' })
  try {
    return await startLocalApi({ config: p.config.localApi, stateDir: p.config.stateDir, log, host: agentHost(p) })
  } catch (err) {
    log.error({ err }, 'local API not started')
    return undefined
  }
}
