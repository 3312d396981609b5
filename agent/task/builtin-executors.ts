// The built-in task executors as the agent runs them: `cache` on the agent's content
// store (agent/cache/), and `inference` (agent/infer/), whose worker process picks and
// loads its TensorFlow.js backend in the background so the agent's start (and its
// broker connection) never waits for it. Tests inject their own executors instead.

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
  /** Takes a ready executor; false when the agent has stopped meanwhile. */
  add: (e: TaskExecutor) => boolean
  /** An executor that will not come after all. */
  failed: (type: TaskType) => void
  /** The accelerator inventory (hw/accelerators.ts): NPUs show in the inference backend
   * report as present but unused. */
  accelerators?: () => Promise<readonly Accelerator[]>
}

/** Adds the cache executor at once and the inference one when its worker is up.
 * `close` does not wait for an inference start still in flight (an agent stopping right
 * after it started must not wait seconds for TensorFlow.js): that worker is killed where
 * it stands, so the process can exit at once. Executors already taken are closed by the
 * task service. */
export function startBuiltinExecutors(d: BuiltinExecutorDeps): { ready: Promise<void>; close(): Promise<void> } {
  if (d.types.includes('cache')) d.add(createCacheExecutor({ store: d.store, log: d.log.child({ exec: 'cache' }) }))
  let orphan: TaskExecutor | undefined
  // The inventory only feeds the backend report: failing, it costs the NPU lines, not inference.
  const inventory = (): Promise<readonly Accelerator[]> =>
    (d.accelerators?.() ?? Promise.resolve([])).catch((err: unknown) => {
      d.log.warn({ err }, 'accelerator inventory failed: the inference backend report lists no NPUs')
      return []
    })
  const closing = new AbortController()
  const ready = d.types.includes('inference')
    ? inventory()
        .then(accelerators => createInferenceExecutor({ content: d.store, log: d.log.child({ exec: 'inference' }), workDir: join(d.stateDir, 'infer'), accelerators, signal: closing.signal }))
        .then(
          e => {
            // The whole report (every backend with its reason, NPUs present but unused) goes to the log.
            if (d.add(e)) d.log.info({ backend: e.backend, backends: e.backends() }, 'inference executor ready')
            else orphan = e
          },
          err => {
            if (closing.signal.aborted) return
            d.log.error({ err }, 'inference executor not started: inference tasks are refused as UNSUPPORTED')
            d.failed('inference')
          },
        )
    : Promise.resolve()
  return {
    ready,
    close: async () => {
      closing.abort()
      void ready.then(() => orphan?.close?.()).catch(err => d.log.warn({ err }, 'inference executor close failed'))
    },
  }
}
