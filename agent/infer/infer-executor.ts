// The `inference` task executor (agent/task/executor-port.ts's TaskExecutor): parses params,
// fetches the model package and image inputs through the ContentSource (verified,
// content-addressed), hands the work to the isolated worker, and turns its answer into
// the TaskOutcome the receipt is made of: hashes of inputs, model and outputs, backend,
// phase timings, peak RSS and CPU time. The worker starts with the first task and stops
// after `idleStopMs` without one (worker-host.ts); until it has started once, `backend`
// is the one expected from the packages installed (backend-guess.ts).

import { createHash } from 'node:crypto'
import { existsSync, statSync } from 'node:fs'
import { join } from 'node:path'
import type { Json } from '../../protocol/canonical.js'
import { CairnError } from '../../protocol/errors.js'
import type { Logger } from '../../protocol/log.js'
import type { ContentLease, ContentSource, TaskExecutor, TaskOutcome, TaskRunContext } from '../task/executor-port.js'
import type { Accelerator } from '../../hw/accelerators.js'
import { expectedBackend } from './backend-guess.js'
import { demoModelPath } from './demo-model.js'
import { MAX_PACKAGE_BYTES, META_FILE } from './model-package.js'
import { parseInferenceParams, type ContentRef, type InferenceParams } from './params.js'
import { WorkerHost, type WorkerEvent } from './worker-host.js'
import type { BackendChoice, BackendReport, WorkerInput } from './worker-protocol.js'

export { demoModelPath, demoSamplePath } from './demo-model.js'

export interface InferenceExecutorOptions {
  content: ContentSource
  log: Logger
  /** Unpacked models go to workDir/models/<sha256>/. */
  workDir: string
  backend?: BackendChoice
  /** The worker is killed above this resident memory (default 1024 MiB). */
  memoryLimitMb?: number
  /** Loaded models kept warm, by estimated memory (default 256 MiB). */
  modelCacheMb?: number
  /** Largest input (image file or tensor bytes), default 16 MiB. */
  maxInputBytes?: number
  /** Largest decoded image, in pixels (default 16 Mpx). */
  maxImagePixels?: number
  /** Output tensors above this many bytes in all are hashed but not sent back (default 64 KiB). */
  maxResultBytes?: number
  /** From hw/accelerators.ts: NPUs are reported as present but unused. */
  accelerators?: readonly Accelerator[]
  /** The worker is stopped after this long without a task (default 300 s, the setting
   * tasks.inference.idleStopS). 0: it starts now, with the executor, and is never
   * stopped. */
  idleStopMs?: number
  /** A worker started or stopped (tests, diagnostics). */
  onWorker?: (e: WorkerEvent) => void
  /** `backend` or `backendExpected` changed (the agent republishes its status). */
  onBackendChange?: () => void
}

export type InferenceExecutor = TaskExecutor<InferenceParams> & {
  /** The backend the worker picked, or before it has ever started the one it is expected to pick. */
  readonly backend: string
  /** True while `backend` is only expected: no worker has started yet. */
  readonly backendExpected: boolean
  /** Every backend with its reason, once a worker has started; before, the NPUs only. */
  backends(): BackendReport[]
  /** The worker's pid while one runs (tests, diagnostics). */
  readonly workerPid: number | undefined
  close(): Promise<void>
}

const DEFAULT_IDLE_STOP_MS = 300_000

export function createInferenceExecutor(opts: InferenceExecutorOptions): InferenceExecutor {
  const maxInputBytes = opts.maxInputBytes ?? 16 * 1024 * 1024
  const maxResultBytes = opts.maxResultBytes ?? 64 * 1024
  const modelsDir = join(opts.workDir, 'models')
  const log = opts.log
  const idleStopMs = opts.idleStopMs ?? DEFAULT_IDLE_STOP_MS
  const choice = opts.backend ?? 'auto'
  const expected = expectedBackend(choice)
  const npus: BackendReport[] = (opts.accelerators ?? [])
    .filter(a => a.kind === 'hailo' || a.kind === 'coral-tpu' || a.kind === 'accel')
    .map(a => ({ name: a.kind, available: false, reason: `${a.name} present (${a.source}) but not used: running models on NPUs is planned (docs/inference.md)` }))
  let reported = { backend: expected as string, expected: true }
  const host = new WorkerHost({
    backend: choice,
    memoryLimitBytes: (opts.memoryLimitMb ?? 1024) * 1024 * 1024,
    modelCacheBytes: (opts.modelCacheMb ?? 256) * 1024 * 1024,
    maxImagePixels: opts.maxImagePixels ?? 16 * 1024 * 1024,
    modelsDir,
    log,
    idleStopMs,
    onEvent: e => {
      if (e.kind === 'ready') {
        if (reported.expected) log.info({ backend: e.backend, expected, backends: [...host.backends, ...npus] }, 'inference backend confirmed by its worker')
        if (reported.expected || reported.backend !== e.backend) {
          reported = { backend: e.backend, expected: false }
          opts.onBackendChange?.()
        }
      }
      opts.onWorker?.(e)
    },
  })
  // 0: resident, as a worker that never idles: started now, so the first task does not
  // wait for it. A failed start is logged; the next task tries again.
  if (idleStopMs === 0) host.start().catch((err: unknown) => log.error({ err }, 'inference worker did not start; the next inference task tries again'))

  const unpacked = (sha: string) => existsSync(join(modelsDir, sha, META_FILE))
  const haveModel = (m: InferenceParams['model']) => (m.demo && demoModelPath() !== undefined) || unpacked(m.sha256) || opts.content.leaseLocal(m.sha256) !== undefined

  async function lease(ref: ContentRef, what: string, signal: AbortSignal, maxBytes: number): Promise<ContentLease> {
    let l: ContentLease
    if (ref.urls.length === 0) {
      const local = opts.content.leaseLocal(ref.sha256)
      if (local === undefined) throw new CairnError('NOT_FOUND', `${what} ${ref.sha256} is not stored on this device and the task gives no URL for it`)
      l = local
    } else l = await opts.content.lease(ref.sha256, ref.urls, { signal, maxBytes })
    // The limit holds for objects already in the cache too (put there by a cache task):
    // the worker would read all of it into memory.
    if (l.bytes > maxBytes) {
      l.release()
      throw new CairnError('TOO_LARGE', `${what} ${ref.sha256} is ${l.bytes} bytes, more than ${maxBytes}`)
    }
    return l
  }

  return {
    type: 'inference',
    get backend() {
      return reported.backend
    },
    get backendExpected() {
      return reported.expected
    },
    get workerPid() {
      return host.pid
    },
    backends: () => [...host.backends, ...npus],

    parse: params => parseInferenceParams(params, { maxInputBytes }),

    admit(p) {
      if (!haveModel(p.model) && p.model.urls.length === 0) return { ok: false, code: 'NOT_FOUND', message: `model ${p.model.sha256} is not stored on this device and the task gives no URL for it` }
      return { ok: true }
    },

    async run(p: InferenceParams, ctx: TaskRunContext): Promise<TaskOutcome> {
      const leases: ContentLease[] = []
      const t0 = performance.now()
      try {
        let modelFile: string | undefined
        let modelBytes: number
        let bytesFetched = 0
        const demoPath = p.model.demo ? demoModelPath() : undefined
        if (demoPath !== undefined) {
          modelFile = demoPath
          modelBytes = statSync(demoPath).size
        } else if (unpacked(p.model.sha256) && opts.content.leaseLocal(p.model.sha256) === undefined && p.model.urls.length === 0) {
          // Unpacked earlier (and verified then); its package has since left the cache.
          modelBytes = 0
        } else {
          const l = await lease(p.model, 'model', ctx.signal, MAX_PACKAGE_BYTES)
          leases.push(l)
          modelFile = l.path
          modelBytes = l.bytes
          if (l.fetched) bytesFetched += l.bytes
        }
        let input: WorkerInput
        // The receipt's input hash: of the cached file (its name), else of the decoded
        // bytes, computed here once the worker has them (below), so it overlaps the run.
        let inputHash: { name: string; bytes: number; data?: Uint8Array; sha256?: string }
        if (p.input.kind === 'image') {
          if ('ref' in p.input) {
            const l = await lease(p.input.ref, 'input image', ctx.signal, maxInputBytes)
            leases.push(l)
            if (l.fetched) bytesFetched += l.bytes
            input = { kind: 'image', path: l.path }
            inputHash = { name: 'image', bytes: l.bytes, sha256: l.sha256 }
          } else {
            input = { kind: 'image', bytes: p.input.data }
            inputHash = { name: 'image', bytes: p.input.data.length, data: p.input.data }
          }
        } else {
          input = { kind: 'tensor', shape: p.input.shape, dtype: p.input.dtype, data: p.input.data }
          inputHash = { name: 'tensor', bytes: p.input.data.byteLength, data: bytesOf(p.input.data) }
        }
        const fetchMs = performance.now() - t0
        ctx.progress(0.1, 'inputs ready')
        const hashInput = () => {
          if (inputHash.sha256 === undefined && inputHash.data !== undefined) inputHash.sha256 = createHash('sha256').update(inputHash.data).digest('hex')
        }
        const r = await host.run({ modelSha256: p.model.sha256, ...(modelFile !== undefined ? { modelFile } : {}), input, topK: p.topK }, ctx.signal, hashInput)
        hashInput() // (if the send callback never ran)
        ctx.progress(1)
        const outBytes = r.outputs.reduce((a, o) => a + o.data.length, 0)
        const result: Json = {
          model: { sha256: p.model.sha256, name: r.modelName },
          ...(r.top !== undefined ? { labels: r.top.map(t => ({ label: t.label, index: t.index, score: t.score })) } : {}),
          outputs: r.outputs.map(o => ({
            name: o.name,
            shape: o.shape,
            dtype: o.dtype,
            sha256: o.sha256,
            ...(outBytes <= maxResultBytes ? { data: Buffer.from(o.data.buffer, o.data.byteOffset, o.data.byteLength).toString('base64') } : { omitted: `over ${maxResultBytes} bytes; see sha256` }),
          })),
          modelCache: r.modelCache,
        }
        if (r.evicted.length > 0) log.info({ evicted: r.evicted }, 'models evicted from the warm cache')
        return {
          inputs: [{ name: inputHash.name, sha256: inputHash.sha256!, bytes: inputHash.bytes }],
          model: { name: r.modelName, sha256: p.model.sha256, bytes: modelBytes, format: r.modelFormat },
          outputs: r.outputs.map(o => ({ name: o.name, sha256: o.sha256, bytes: o.data.length })),
          result,
          backend: host.backend ?? 'unknown',
          timings: {
            ...(r.startMs !== undefined ? { start: round(r.startMs) } : {}),
            fetch: round(fetchMs),
            load: round(r.timings.unpack + r.timings.load),
            decode: round(r.timings.decode),
            infer: round(r.timings.infer),
            total: round(performance.now() - t0),
          },
          resources: { ...(r.peakRssBytes !== undefined ? { peakRssBytes: r.peakRssBytes } : {}), cpuMs: round(r.cpuMs), bytesFetched },
        }
      } finally {
        for (const l of leases) l.release()
      }
    },

    close: () => host.close(),
  }
}

const round = (ms: number) => Math.round(ms * 1000) / 1000
const bytesOf = (a: ArrayBufferView) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength)
