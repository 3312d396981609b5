// The worker's core in-process, on the cpu backend: a failed run leaves no tensors
// behind (the backend's memory never shrinks, so a leak per bad task adds up until the
// memory limit kills the worker), and tensor inputs arrive as typed arrays.
import t from 'tap'
import { mkdirSync } from 'node:fs'
import { join } from 'node:path'
import * as tf from '@tensorflow/tfjs-core'
import * as tfl from '@tensorflow/tfjs-layers'
import { selectBackend } from '../../../agent/infer/backends.js'
import { layersArtifacts } from '../../../agent/infer/layers-save.js'
import { packModel, writeModelDir, type ModelMeta } from '../../../agent/infer/model-package.js'
import { topK, WorkerCore } from '../../../agent/infer/worker.js'
import { ContentDir } from '../../helpers/content-dir.js'

const dir = t.testdir()
let core: WorkerCore
let content: ContentDir

t.before(async () => {
  const { api } = await selectBackend('cpu')
  core = new WorkerCore(api, { t: 'init', backend: 'cpu', modelCacheBytes: 64 * 1024 * 1024, maxImagePixels: 1e6, modelsDir: join(dir, 'models') })
  content = new ContentDir(join(dir, 'content'))
})

async function logitsModel(): Promise<string> {
  const m = tfl.sequential({ layers: [tfl.layers.dense({ inputShape: [4], units: 3, useBias: false, kernelInitializer: 'ones' })] })
  const meta: ModelMeta = { name: 'logits', labels: ['a', 'b', 'c'], input: { kind: 'tensor' }, output: { kind: 'classification', activation: 'logits' } }
  const src = join(dir, 'src-logits')
  mkdirSync(src, { recursive: true })
  writeModelDir(src, { meta, ...(await layersArtifacts(m)) })
  m.dispose()
  return content.put(packModel(src).bytes)
}

const run = (sha: string, shape: number[], id = 1) =>
  core.run({
    t: 'run',
    id,
    modelSha256: sha,
    modelFile: join(content.dir, sha),
    input: { kind: 'tensor', shape, dtype: 'float32', data: new Float32Array(shape.reduce((a, b) => a * b, 1)).fill(1) },
    topK: 2,
  })

t.test('a bad input to a model not yet cached: BAD_INPUT, and its weights are freed', async t => {
  const sha = await logitsModel()
  const before = tf.memory().numTensors
  await t.rejects(run(sha, [1, 5]), { code: 'BAD_INPUT' })
  t.equal(tf.memory().numTensors, before, 'no tensors left behind')
})

t.test('a logits model: softmax for the top-k, no tensor left per task', async t => {
  const sha = await logitsModel()
  const first = await run(sha, [1, 4])
  t.equal(first.modelCache, 'miss')
  t.same(
    first.top?.map(x => Math.round(x.score * 1000) / 1000),
    [0.333, 0.333],
  )
  const held = tf.memory().numTensors // the cached model's weights
  for (let i = 0; i < 3; i++) t.equal((await run(sha, [4], i + 2)).modelCache, 'hit')
  t.equal(tf.memory().numTensors, held, 'steady: inputs, outputs and the softmax are disposed')
})

t.test('topK: the same as a full sort, ties by index, logits through a softmax', async t => {
  const meta = (activation: 'softmax' | 'logits'): ModelMeta => ({ name: 'x', input: { kind: 'tensor' }, output: { kind: 'classification', activation } })
  let seed = 7
  const rnd = () => (seed = (seed * 16807) % 2147483647) / 2147483647
  const values = Float32Array.from({ length: 1000 }, () => Math.round(rnd() * 50) / 50) // many ties
  const sorted = [...values].map((score, index) => ({ index, score })).sort((a, b) => b.score - a.score)
  for (const k of [1, 5, 100])
    t.same(
      topK(values, 1000, meta('softmax'), k).map(x => x.index),
      sorted.slice(0, k).map(x => x.index),
      `k=${k}`,
    )
  t.equal(topK(values.subarray(0, 3), 3, meta('softmax'), 10).length, 3, 'k above the class count')
  const logits = topK(new Float32Array([1, 3, 2]), 3, meta('logits'), 3)
  t.same(
    logits.map(x => x.index),
    [1, 2, 0],
  )
  t.ok(Math.abs(logits.reduce((a, x) => a + x.score, 0) - 1) < 1e-9, 'probabilities sum to 1')
  t.ok(Math.abs(logits[0]!.score - Math.exp(3) / (Math.exp(1) + Math.exp(2) + Math.exp(3))) < 1e-9)
})
