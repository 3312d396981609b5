// The built-in task executors as the agent runs them: `cache` on the agent's content
// store (agent/cache/), and `inference` (agent/infer/), whose worker process (TensorFlow.js)
// starts with the first inference task and stops after tasks.inference.idleStopS without
// one, so an agent that runs no inference holds no worker. Tests inject their own
// executors instead.

import { join } from 'node:path'
import type { Accelerator } from '../../hw/accelerators.js'
import type { Logger } from '../../protocol/log.js'
import type { ContentStore } from '../cache/store.js'
import { createCacheExecutor } from '../cache/cache-executor.js'
import { createInferenceExecutor } from '../infer/infer-executor.js'
import type { TaskExecutor, TaskType } from './executor-port.js'

export interface BuiltinExecutorDeps {
  types: readonly TaskType[]
  store: ContentStore
  stateDir: string
  log: Logger
  /** tasks.inference.idleStopS, in ms (0: the worker starts with the agent and stays). */
  inferenceIdleStopMs: number
  /** Takes a ready executor; false when the agent has stopped meanwhile. */
  add: (e: TaskExecutor) => boolean
  /** An executor that will not come after all. */
  failed: (type: TaskType) => void
  /** An executor's backend became known or changed (the status carries it). */
  backendChanged: (type: TaskType) => void
  /** The accelerator inventory (hw/accelerators.ts): NPUs show in the inference backend
   * report as present but unused. */
  accelerators?: () => Promise<readonly Accelerator[]>
}

/** Adds the cache executor at once and the inference one once the accelerator inventory
 * is in (it starts no worker then, unless idleStopS is 0). An executor the stopped agent
 * did not take is closed here; those taken are closed by the task service. */
export function startBuiltinExecutors(d: BuiltinExecutorDeps): Promise<void> {
  if (d.types.includes('cache')) d.add(createCacheExecutor({ store: d.store, log: d.log.child({ exec: 'cache' }) }))
  // The inventory only feeds the backend report: failing, it costs the NPU lines, not inference.
  const inventory = (): Promise<readonly Accelerator[]> =>
    (d.accelerators?.() ?? Promise.resolve([])).catch((err: unknown) => {
      d.log.warn({ err }, 'accelerator inventory failed: the inference backend report lists no NPUs')
      return []
    })
  if (!d.types.includes('inference')) return Promise.resolve()
  return inventory()
    .then(accelerators => {
      const e = createInferenceExecutor({
        content: d.store,
        log: d.log.child({ exec: 'inference' }),
        workDir: join(d.stateDir, 'infer'),
        accelerators,
        idleStopMs: d.inferenceIdleStopMs,
        onBackendChange: () => d.backendChanged('inference'),
      })
      if (d.add(e)) d.log.info({ backend: e.backend, expected: e.backendExpected, idleStopMs: d.inferenceIdleStopMs }, 'inference executor ready')
      else void e.close()
    })
    .catch((err: unknown) => {
      d.log.error({ err }, 'inference executor not started: inference tasks are refused as UNSUPPORTED')
      d.failed('inference')
    })
}
