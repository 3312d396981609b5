// `cairn agent`: loads the configuration, runs the agent with the features of other
// rooms plugged in (OTA, and on Cairn OS the OS updater found by image-build/os-update),
// restarts it in place when asked (restart-agent, SIGHUP with changed settings), and
// stops cleanly on SIGTERM.

import { systemClock } from '../protocol/clock.js'
import { loadConfig, type LoadedConfig } from '../agent/config/load-config.js'
import type { Layer } from '../protocol/config-layers.js'
import type { Level } from 'pino'
import { createLogger, LogRing } from '../protocol/log.js'
import { startAgent, type RunningAgent } from '../agent/agent.js'
import type { AgentCore } from '../agent/core/extension.js'
import { createSystemPort } from '../agent/core/system.js'
import { createCommandRunner } from '../hw/index.js'
import { VERSION } from '../protocol/version.js'
import { launcherFromEnv, otaExtension, type OtaHooks } from '../ota/ota-service.js'
import { detectCairnOs } from '../image-build/os-update/agent-os.js'
import { EXIT_SWITCH } from '../ota/slots.js'

export interface RunAgentOptions {
  configFile?: string | undefined
  flags: Layer
  env: NodeJS.ProcessEnv
  out?: { write(chunk: string): unknown }
  /** Called with each started agent (demo, tests). */
  onStart?: (agent: RunningAgent) => void
  signals?: boolean
  /** Test seams of the OTA updater. */
  ota?: OtaHooks
  /** Overrides the bundled version (tests). */
  version?: string
}

/** Runs until SIGTERM/SIGINT (or `stop()` on the returned handle). Returns the exit
 * code: 0, or EXIT_SWITCH when an OTA step hands over to the launcher. */
export async function runAgent(opts: RunAgentOptions): Promise<number> {
  const load = (remote?: Record<string, unknown>): LoadedConfig => loadConfig({ configFile: opts.configFile, env: opts.env, flags: opts.flags }, remote)
  let loaded = load()
  const ring = new LogRing(1000)
  const log = createLogger({ level: loaded.config.log.level as Level, ring, ...(opts.out ? { out: opts.out } : {}) })
  let current: RunningAgent | undefined
  let shuttingDown = false
  let exitCode = 0
  const launcher = launcherFromEnv(opts.env)
  const onTerm = () => {
    shuttingDown = true
    void current?.stop('shutdown')
  }
  const onHup = () => current?.reload()
  if (opts.signals !== false) {
    process.on('SIGTERM', onTerm)
    process.on('SIGINT', onTerm)
    process.on('SIGHUP', onHup)
  }
  try {
    for (;;) {
      current = await startAgent({
        loaded,
        reload: load,
        log,
        ring,
        clock: systemClock,
        hw: { root: loaded.config.hw.root, run: createCommandRunner() },
        system: createSystemPort(loaded.config.system.rebootCommand),
        version: opts.version ?? VERSION,
        extensions: [otaExtension({ launcher, hooks: opts.ota, os: findCairnOs })],
      })
      opts.onStart?.(current)
      if (shuttingDown) void current.stop('shutdown')
      const reason = await current.done
      if (reason === 'update') exitCode = EXIT_SWITCH
      if (reason !== 'restart' || shuttingDown) break
      log.info('restarting in place')
      try {
        loaded = load()
      } catch (err) {
        // A configuration broken since the last start must not keep the device off its fleet.
        log.error({ err }, 'configuration no longer valid; restarting with the previous one')
      }
    }
  } finally {
    if (opts.signals !== false) {
      process.off('SIGTERM', onTerm)
      process.off('SIGINT', onTerm)
      process.off('SIGHUP', onHup)
    }
  }
  log.info(exitCode === EXIT_SWITCH ? 'agent stopped: the launcher starts the new slot' : 'agent stopped')
  return exitCode
}

/** Cairn OS on this machine: the OS release that runs, and whether it updates itself. */
function findCairnOs(core: AgentCore): ReturnType<typeof detectCairnOs> {
  const c = core.config()
  return detectCairnOs({ stateDir: c.stateDir, osDir: c.ota.osDir, enabled: c.ota.osUpdates, now: () => core.clock.now(), sleep: ms => new Promise(r => setTimeout(r, ms).unref()) })
}
