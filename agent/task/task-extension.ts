// Inference and cache tasks (docs/tasks.md) plugged into the agent core: the queue and
// its signed requests, and the built-in executors (the cache's, and inference in its
// worker process, started by the first inference task: nothing waits for it).

import { accelerators, type HwContext } from '../../hw/index.js'
import { readPublicKeyFile } from '../../protocol/keys.js'
import type { ContentStore } from '../cache/store.js'
import type { AgentCore, AgentExtension } from '../core/extension.js'
import { startBuiltinExecutors } from './builtin-executors.js'
import type { TaskExecutor } from './executor-port.js'
import { TaskService } from './task-service.js'

export interface TaskExtensionOptions {
  /** the content store cache tasks fill and inference reads models from */
  store: ContentStore
  hw: Omit<HwContext, 'diskPaths'>
  /** Executors in place of the built-in ones (tests). */
  executors?: readonly TaskExecutor[] | undefined
  /** The queue's test seams. */
  timings?: { graceMs?: number; coolDownMs?: number; tickMs?: number } | undefined
}

export function taskExtension(core: AgentCore, o: TaskExtensionOptions): { service: TaskService; extension: AgentExtension } {
  const config = core.config()
  const dispatchers = config.tasks.dispatcherKeys.map(f => readPublicKeyFile(f))
  const service = new TaskService({
    db: core.db,
    outbox: core.outbox,
    clock: core.clock,
    log: core.log.child({ mod: 'task' }),
    metrics: core.metrics,
    identity: core.identity,
    fleet: config.fleet,
    config: config.tasks,
    dispatchers,
    isOperator: k => core.isOperator(k),
    replay: core.replay,
    skewMs: config.commands.skewS * 1000,
    maxTtlMs: config.commands.maxTtlS * 1000,
    executors: o.executors ?? [],
    // The built-in executors join after start; tasks of their types wait for them.
    pendingTypes: o.executors ? [] : config.tasks.types,
    telemetry: () => core.lastSample(),
    bus: core.bus,
    publishQuick: (topic, payload, props) => core.publishQuick(topic, payload, props),
    // Executors join after start, and the inference backend is confirmed only once its
    // worker is up: the status says so.
    onStatusChange: () => core.refreshStatus(),
    ...o.timings,
  })
  if (dispatchers.length === 0) core.log.info('no dispatcher key is trusted: every task request will be refused (use --dispatcher-key FILE)')
  return {
    service,
    extension: {
      name: 'tasks',
      filters: () => service.filters(),
      handle: (topic, payload, packet) => service.handle(topic, payload, packet),
      statusFields: () => ({ tasks: service.status() }),
      start: () => {
        service.start()
        if (!o.executors) {
          void startBuiltinExecutors({
            types: config.tasks.types,
            store: o.store,
            stateDir: config.stateDir,
            log: core.log.child({ mod: 'task' }),
            inferenceIdleStopMs: config.tasks.inference.idleStopS * 1000,
            add: e => service.addExecutor(e),
            failed: type => service.executorFailed(type),
            backendChanged: type => service.backendChanged(type),
            accelerators: () => accelerators({ ...o.hw, diskPaths: config.hw.diskPaths }, core.board),
          })
        }
      },
      stop: () => service.stop(),
    },
  }
}
