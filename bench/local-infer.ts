// One inference task through a running agent's local API (the `infer` op, docs/local-api.md),
// timed from the request to the signed answer: what the idle benchmark (bench/run.ts)
// uses to measure the first task's latency when the worker has to start first.

import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { demoSamplePath } from '../agent/infer/demo-model.js'
import { LocalApiClient, readTokenFile } from '../agent/local-api/api-client.js'

export interface TimedTask {
  /** wall time of the request, ms */
  ms: number
  /** the receipt's phases (start: the worker's start, when the task waited for one) */
  timings: Record<string, number>
}

/** A client on the agent's socket in `stateDir`, running the demo model on one sample image. */
export async function localInfer(stateDir: string): Promise<{ run(): Promise<TimedTask>; close(): void }> {
  const client = new LocalApiClient({ socketPath: join(stateDir, 'api.sock'), token: readTokenFile(join(stateDir, 'api.token')) })
  await client.connect()
  const args = { model: 'demo', input: { image: { data: readFileSync(demoSamplePath('circle.png')).toString('base64') } }, topK: 1 }
  return {
    run: async () => {
      const t0 = performance.now()
      const r = (await client.request('infer', args, 120_000)) as { receipt: { body: { timings: Record<string, number> } } }
      return { ms: performance.now() - t0, timings: r.receipt.body.timings }
    },
    close: () => client.close(),
  }
}
