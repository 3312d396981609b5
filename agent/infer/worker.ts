// The inference worker: a child process of the agent that unpacks model packages,
// loads them (local files only), decodes images, runs the model and hashes its outputs
// (the agent hashes the inputs it sends). Whatever goes wrong in here (a hostile package, a corrupt JPEG, a model that
// eats memory) costs this process, not the agent. Started by worker-host.ts; speaks
// worker-protocol.ts over IPC; keeps loaded models warm in an LRU bounded by memory.

import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import type * as tfcore from '@tensorflow/tfjs-core'
import type { io } from '@tensorflow/tfjs-core'
import { CairnError, errorBody } from '../../protocol/errors.js'
import { sha256Hex } from '../../protocol/hash.js'
import { quietTf, selectBackend, type TfApi } from './backends.js'
import { decodeImage, toInputTensor } from './image.js'
import { MemoryLru } from './lru.js'
import { readModelDir, unpackModel, type ModelJson, type ModelMeta } from './model-package.js'
import type { InitMsg, OutputTensor, RunMsg, RunOk, WorkerReply } from './worker-protocol.js'

interface Predictor {
  predict(x: tfcore.Tensor): tfcore.Tensor | tfcore.Tensor[] | Record<string, tfcore.Tensor>
  dispose(): void
  inputs: Array<{ shape: Array<number | null> | number[]; dtype?: string }>
}

interface Loaded {
  model: Predictor
  meta: ModelMeta
  format: string
}

const badInput = (m: string) => new CairnError('BAD_INPUT', m)
const bytesOf = (a: ArrayBufferView) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength)

/** A tfjs IOHandler over an unpacked model directory: reads model.json and its shards
 * from local files, so loading can never touch the network. */
export function fileHandler(dir: string, modelJson: ModelJson): io.IOHandler {
  return {
    load: async () => {
      const specs: io.WeightsManifestEntry[] = []
      const shards: Buffer[] = []
      for (const group of modelJson.weightsManifest) {
        specs.push(...(group.weights as io.WeightsManifestEntry[]))
        for (const p of group.paths) shards.push(readFileSync(join(dir, ...p.split('/'))))
      }
      const all = Buffer.concat(shards)
      const artifacts: io.ModelArtifacts = {
        modelTopology: modelJson.modelTopology as object,
        format: modelJson.format,
        weightSpecs: specs,
        weightData: all.buffer.slice(all.byteOffset, all.byteOffset + all.byteLength) as ArrayBuffer,
      }
      if (modelJson.signature !== undefined) artifacts.signature = modelJson.signature as object
      if (modelJson.userDefinedMetadata !== undefined) artifacts.userDefinedMetadata = modelJson.userDefinedMetadata as Record<string, object>
      if (modelJson.modelInitializer !== undefined) artifacts.modelInitializer = modelJson.modelInitializer as object
      return artifacts
    },
  }
}

export class WorkerCore {
  private readonly cache: MemoryLru<Loaded>

  constructor(
    private readonly tf: TfApi,
    private readonly init: InitMsg,
  ) {
    this.cache = new MemoryLru<Loaded>(init.modelCacheBytes, (_k, v) => v.model.dispose())
  }

  async run(msg: RunMsg): Promise<RunOk> {
    const cpu0 = process.cpuUsage()
    const t0 = performance.now()
    let dir = join(this.init.modelsDir, msg.modelSha256)
    let loaded = this.cache.get(msg.modelSha256)
    const hit = loaded !== undefined
    let evicted: string[] = []
    const t1 = performance.now()
    if (loaded === undefined) {
      if (msg.modelFile !== undefined) dir = unpackModel(msg.modelFile, msg.modelSha256, this.init.modelsDir)
      loaded = await this.load(dir)
    }
    const t2 = performance.now()
    let x: tfcore.Tensor
    try {
      x = this.inputTensor(msg, loaded)
    } catch (err) {
      // Neither cached nor used again: its weights would stay in the backend's memory.
      if (!hit) loaded.model.dispose()
      throw err
    }
    const t3 = performance.now()
    let t4 = t3
    let outputs: OutputTensor[]
    let top: RunOk['top']
    try {
      const y = loaded.model.predict(x)
      // Layers models give a tensor or an array; graph models may give a name → tensor map.
      const ys: tfcore.Tensor[] = Array.isArray(y) ? y : 'dataId' in y ? [y as tfcore.Tensor] : Object.values(y)
      try {
        const values: Array<Float32Array | Int32Array | Uint8Array> = []
        for (const t of ys) values.push((await t.data()) as Float32Array | Int32Array | Uint8Array)
        // `infer` is predict + read-back, what a bare tfjs loop measures; hashing and
        // top-k below count to the task path's own cost.
        t4 = performance.now()
        // data() gives fresh arrays: their bytes go to the agent as they are, no copy.
        outputs = ys.map((t, i) => {
          const data = bytesOf(values[i]!)
          return { name: `output${i}`, shape: t.shape, dtype: t.dtype, sha256: sha256Hex(data), data }
        })
        const first = ys[0]
        if (loaded.meta.output.kind === 'classification' && first !== undefined) top = topK(values[0]!, first.shape[first.shape.length - 1] ?? 0, loaded.meta, msg.topK)
      } finally {
        for (const t of ys) t.dispose()
      }
    } catch (err) {
      if (!hit) loaded.model.dispose()
      if (err instanceof CairnError) throw err
      throw badInput(`the model failed on this input: ${(err as Error).message}`)
    } finally {
      x.dispose()
    }
    // Cache after a successful run only: a model that cannot run should not push out one that can.
    if (!hit) evicted = this.cache.set(msg.modelSha256, loaded, this.estimateBytes(loaded))
    const cpu = process.cpuUsage(cpu0)
    return {
      t: 'result',
      id: msg.id,
      ok: true,
      modelName: loaded.meta.name,
      modelFormat: loaded.format,
      modelCache: hit ? 'hit' : 'miss',
      evicted,
      outputs,
      ...(top !== undefined ? { top } : {}),
      timings: { unpack: t1 - t0, load: t2 - t1, decode: t3 - t2, infer: t4 - t3 },
      cpuMs: (cpu.user + cpu.system) / 1000,
    }
  }

  private loadedBytes = new WeakMap<Loaded, number>()

  private estimateBytes(l: Loaded): number {
    return this.loadedBytes.get(l) ?? 0
  }

  private async load(dir: string): Promise<Loaded> {
    const { meta, modelJson } = readModelDir(dir)
    const before = this.tf.memory().numBytes
    let model: Predictor
    try {
      const handler = fileHandler(dir, modelJson)
      model = (modelJson.format === 'graph-model' ? await this.tf.loadGraphModel(handler) : await this.tf.loadLayersModel(handler)) as unknown as Predictor
    } catch (err) {
      throw new CairnError('MODEL_INVALID', `model ${meta.name} does not load: ${(err as Error).message}`)
    }
    const loaded = { model, meta, format: modelJson.format }
    // Weights live in the backend (wasm heap, native memory): tfjs counts their bytes.
    this.loadedBytes.set(loaded, Math.max(this.tf.memory().numBytes - before, 1) + JSON.stringify(modelJson.modelTopology).length)
    return loaded
  }

  private inputTensor(msg: RunMsg, l: Loaded): tfcore.Tensor {
    const spec = l.model.inputs[0]
    if (spec === undefined) throw new CairnError('MODEL_INVALID', 'the model has no inputs')
    const want = spec.shape.map(d => (d === null || d < 0 ? null : d))
    const input = msg.input
    if (input.kind === 'image') {
      if (l.meta.input.kind !== 'image') throw badInput(`input.image: model ${l.meta.name} takes tensors, not images`)
      const img = decodeImage('path' in input ? readFileSync(input.path) : input.bytes, this.init.maxImagePixels)
      const t = toInputTensor(img, l.meta.input)
      this.checkShape(t.shape, want, 'input.image (after resizing)')
      return this.tf.tensor(t.data, t.shape, 'float32')
    }
    let shape = input.shape
    if (shape.length === want.length - 1) shape = [1, ...shape] // a single example without its batch dimension
    this.checkShape(shape, want, 'input.tensor.shape')
    const modelDtype = spec.dtype ?? 'float32'
    if (modelDtype !== input.dtype) throw badInput(`input.tensor.dtype: model ${l.meta.name} takes ${modelDtype}, not ${input.dtype}`)
    // The values arrive as a typed array (IPC copies them into an aligned one if needed).
    const values = input.data
    const n = shape.reduce((a, b) => a * b, 1)
    if (values.length !== n) throw badInput(`input.tensor.data: ${values.length} elements, shape needs ${n}`)
    return this.tf.tensor(values, shape, input.dtype)
  }

  private checkShape(got: number[], want: Array<number | null>, field: string): void {
    const ok = got.length === want.length && want.every((d, i) => d === null || d === got[i])
    if (!ok) throw badInput(`${field}: [${got.join(', ')}] does not fit the model's input [${want.map(d => d ?? '?').join(', ')}]`)
  }
}

/**
 * The k most likely classes of the first example, highest first (ties: lower index
 * first), from the output values already read back: no second read, no extra kernels.
 * Logits get a softmax here, in double precision.
 */
export function topK(values: ArrayLike<number>, classes: number, meta: ModelMeta, k: number): NonNullable<RunOk['top']> {
  const n = Math.min(classes, values.length)
  let scores: ArrayLike<number> = values
  if (meta.output.activation === 'logits') {
    let max = -Infinity
    for (let i = 0; i < n; i++) max = Math.max(max, values[i]!)
    const e = new Float64Array(n)
    let sum = 0
    for (let i = 0; i < n; i++) sum += e[i] = Math.exp(values[i]! - max)
    for (let i = 0; i < n; i++) e[i]! /= sum
    scores = e
  }
  // Insertion into a list of at most k: one pass, no sort of all classes.
  const best: number[] = []
  for (let i = 0; i < n; i++) {
    const s = scores[i]!
    let j: number
    if (best.length < k) j = best.push(i) - 1
    else if (s > scores[best[k - 1]!]!) j = k - 1
    else continue
    while (j > 0 && scores[best[j - 1]!]! < s) {
      best[j] = best[j - 1]!
      j--
    }
    best[j] = i
  }
  return best.map(index => ({ index, score: scores[index]!, label: meta.labels?.[index] ?? `#${index}` }))
}

/** The worker's main loop: runs under `fork()`, one request at a time. */
export async function serveWorker(): Promise<void> {
  // If memory runs out faster than the agent's RSS polling can react (a model that
  // allocates gigabytes at once), the kernel's OOM killer should take this process, not
  // the agent. Raising one's own score needs no privilege.
  try {
    writeFileSync('/proc/self/oom_score_adj', '1000')
  } catch {
    // not Linux
  }
  const send = (m: WorkerReply) => process.send?.(m)
  let core: WorkerCore | undefined
  let queue = Promise.resolve()
  process.on('message', (raw: unknown) => {
    const msg = raw as InitMsg | RunMsg
    queue = queue.then(async () => {
      if (msg.t === 'init') {
        try {
          quietTf()
          const { name, api, report } = await selectBackend(msg.backend)
          core = new WorkerCore(api, msg)
          send({ t: 'ready', backend: name, backends: report })
        } catch (err) {
          send({ t: 'init-failed', ...errorBody(err) })
        }
        return
      }
      if (core === undefined) {
        send({ t: 'result', id: msg.id, ok: false, code: 'INTERNAL', message: 'worker not initialised' })
        return
      }
      try {
        send(await core.run(msg))
      } catch (err) {
        send({ t: 'result', id: msg.id, ok: false, ...errorBody(err) })
      }
    })
  })
  // The agent going away (IPC closed) ends the worker too.
  process.on('disconnect', () => process.exit(0))
}
