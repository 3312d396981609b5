// The inference worker: a child process of the agent that unpacks model packages,
// loads them (local files only), decodes images, runs the model and hashes inputs and
// outputs. Whatever goes wrong in here (a hostile package, a corrupt JPEG, a model that
// eats memory) costs this process, not the agent. Started by worker-host.ts; speaks
// worker-protocol.ts over IPC; keeps loaded models warm in an LRU bounded by memory.

import { createHash } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import type * as tfcore from '@tensorflow/tfjs-core'
import type { io } from '@tensorflow/tfjs-core'
import { CairnError, errorBody } from '../errors.js'
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
const sha256 = (b: Uint8Array) => createHash('sha256').update(b).digest('hex')
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
    const { tf } = this
    const x = this.inputTensor(msg, loaded)
    const t3 = performance.now()
    let outputs: OutputTensor[]
    let top: RunOk['top']
    try {
      const y = loaded.model.predict(x.tensor)
      // Layers models give a tensor or an array; graph models may give a name → tensor map.
      const ys: tfcore.Tensor[] = Array.isArray(y) ? y : 'dataId' in y ? [y as tfcore.Tensor] : Object.values(y)
      try {
        outputs = []
        for (const [i, t] of ys.entries()) {
          const values = (await t.data()) as Float32Array | Int32Array | Uint8Array
          const data = new Uint8Array(bytesOf(values))
          outputs.push({ name: `output${i}`, shape: t.shape, dtype: t.dtype, sha256: sha256(data), data })
        }
        const first = ys[0]
        if (loaded.meta.output.kind === 'classification' && first !== undefined) top = await this.topK(first, loaded.meta, msg.topK)
      } finally {
        for (const t of ys) t.dispose()
      }
    } catch (err) {
      if (err instanceof CairnError) throw err
      throw badInput(`the model failed on this input: ${(err as Error).message}`)
    } finally {
      x.tensor.dispose()
    }
    const t4 = performance.now()
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
      input: x.hashed,
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

  private inputTensor(msg: RunMsg, l: Loaded): { tensor: tfcore.Tensor; hashed: RunOk['input'] } {
    const spec = l.model.inputs[0]
    if (spec === undefined) throw new CairnError('MODEL_INVALID', 'the model has no inputs')
    const want = spec.shape.map(d => (d === null || d < 0 ? null : d))
    const input = msg.input
    if (input.kind === 'image') {
      if (l.meta.input.kind !== 'image') throw badInput(`input.image: model ${l.meta.name} takes tensors, not images`)
      const bytes = 'path' in input ? readFileSync(input.path) : Buffer.from(input.base64, 'base64')
      const img = decodeImage(bytes, this.init.maxImagePixels)
      const t = toInputTensor(img, l.meta.input)
      this.checkShape(t.shape, want, 'input.image (after resizing)')
      return { tensor: this.tf.tensor(t.data, t.shape, 'float32'), hashed: { name: 'image', sha256: 'path' in input ? input.sha256 : sha256(bytes), bytes: bytes.length } }
    }
    let shape = input.shape
    if (shape.length === want.length - 1) shape = [1, ...shape] // a single example without its batch dimension
    this.checkShape(shape, want, 'input.tensor.shape')
    const modelDtype = spec.dtype ?? 'float32'
    if (modelDtype !== input.dtype) throw badInput(`input.tensor.dtype: model ${l.meta.name} takes ${modelDtype}, not ${input.dtype}`)
    let values: Float32Array | Int32Array
    if (typeof input.data === 'string') {
      const raw = Buffer.from(input.data, 'base64')
      // Copy into an aligned buffer: a Buffer's offset need not be a multiple of 4.
      const aligned = new Uint8Array(raw.length)
      aligned.set(raw)
      values = input.dtype === 'int32' ? new Int32Array(aligned.buffer) : new Float32Array(aligned.buffer)
    } else values = input.dtype === 'int32' ? Int32Array.from(input.data) : Float32Array.from(input.data)
    const n = shape.reduce((a, b) => a * b, 1)
    if (values.length !== n) throw badInput(`input.tensor.data: ${values.length} elements, shape needs ${n}`)
    return { tensor: this.tf.tensor(values, shape, input.dtype), hashed: { name: 'tensor', sha256: sha256(bytesOf(values)), bytes: values.byteLength } }
  }

  private checkShape(got: number[], want: Array<number | null>, field: string): void {
    const ok = got.length === want.length && want.every((d, i) => d === null || d === got[i])
    if (!ok) throw badInput(`${field}: [${got.join(', ')}] does not fit the model's input [${want.map(d => d ?? '?').join(', ')}]`)
  }

  private async topK(t: tfcore.Tensor, meta: ModelMeta, k: number): Promise<RunOk['top']> {
    const classes = t.shape[t.shape.length - 1] ?? 0
    const probs = meta.output.activation === 'logits' ? await this.tf.tidy(() => this.tf.softmax(this.tf.reshape(t, [-1, classes]))).data() : await t.data()
    const first = Array.from(probs.slice(0, classes))
    const labels = meta.labels
    return first
      .map((score, index) => ({ index, score, label: labels?.[index] ?? `#${index}` }))
      .sort((a, b) => b.score - a.score)
      .slice(0, k)
  }
}

/** The worker's main loop: runs under `fork()`, one request at a time. */
export async function serveWorker(): Promise<void> {
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
