// Inference benchmarks, run by bench/run.ts (`npm run bench`, BENCH_ONLY=inference):
// ms per inference of the demo model (32×32×3) and of a MobileNet-class network
// (224×224×3, agent/infer/mobilenet.ts) on each backend available here, and the task
// path (createInferenceExecutor: params parsing with the base64 decode of a tensor
// input, IPC to the isolated worker, hashing of input and outputs, the outcome) vs a
// bare tfjs `predict` loop on the same backend in the same run. Goal: overhead ≤ 5 %.
// Fairness: same input values, same model files, both warmed up, and the two measured
// one iteration each in turn (alternating which goes first), so drift in machine load
// hits both alike; medians and means of the per-iteration times are reported, the goal
// is judged on the ratio of medians (the mean carries the scheduler's outliers on a
// shared machine). Native backends (tfjs-node, -gpu) are measured only where installed.

import { join } from 'node:path'
import * as tf from '@tensorflow/tfjs-core'
import '@tensorflow/tfjs-backend-cpu'
import { createLogger } from '../protocol/log.js'
import { selectBackend } from '../agent/infer/backends.js'
import { DEMO_MODEL_SHA256, demoModelPath } from '../agent/infer/demo-model.js'
import { createInferenceExecutor } from '../agent/infer/infer-executor.js'
import { layersArtifacts } from '../agent/infer/layers-save.js'
import { buildMobileNetLike, MOBILENET_META } from '../agent/infer/mobilenet.js'
import { packModel, readModelDir, unpackModel, writeModelDir } from '../agent/infer/model-package.js'
import { fileHandler } from '../agent/infer/worker.js'
import type { BackendName } from '../agent/infer/worker-protocol.js'
import { ContentDir } from '../test/helpers/content-dir.js'
import type { BenchKit } from './proofs.js'

interface Case {
  name: string
  sha256: string
  shape: number[]
  dir: string
}

const timed = async (fn: () => Promise<unknown>): Promise<number> => {
  const t0 = performance.now()
  await fn()
  return performance.now() - t0
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b)
  const m = s.length >> 1
  return s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2
}
const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length
const r3 = (x: number) => Math.round(x * 1000) / 1000

export async function benchInference(kit: BenchKit): Promise<Record<string, unknown>> {
  const work = kit.tmp('cairn-bench-infer-')
  const content = new ContentDir(join(work, 'content'))
  const log = createLogger({ level: 'warn' })
  const demoFile = demoModelPath()
  if (demoFile === undefined) throw new Error('demo model missing: run agent/infer/demo/train.ts')

  // The MobileNet-class package, built and packed here (random seeded weights).
  await tf.setBackend('cpu')
  const mnDir = join(work, 'mobilenet-src')
  writeModelDir(mnDir, { meta: MOBILENET_META, ...(await layersArtifacts(buildMobileNetLike(7, 1))) })
  const mn = packModel(mnDir)
  content.put(mn.bytes)
  const cases: Case[] = [
    { name: 'demo 32x32x3', sha256: DEMO_MODEL_SHA256, shape: [1, 32, 32, 3], dir: unpackModel(demoFile, DEMO_MODEL_SHA256, join(work, 'bare')) },
    { name: 'MobileNet-class 224x224x3', sha256: mn.sha256, shape: [1, 224, 224, 3], dir: unpackModel(join(content.dir, mn.sha256), mn.sha256, join(work, 'bare')) },
  ]

  const probe = await selectBackend('auto')
  const available = probe.report.filter(r => r.available && ['tensorflow-gpu', 'tensorflow', 'wasm', 'cpu'].includes(String(r.name))).map(r => r.name as BackendName)
  kit.log(`  backends available: ${available.join(', ')}; auto picks ${probe.name}`)
  const out: Record<string, unknown> = { autoBackend: probe.name, backends: probe.report, modelBytes: { mobilenet: mn.bytes.length } }
  const perBackend: Record<string, Record<string, unknown>> = {}
  const bareMs: Record<string, number> = {}

  for (const backend of available) {
    const { api } = await selectBackend(backend)
    const ex = createInferenceExecutor({ content, log, workDir: join(work, `work-${backend}`), backend, memoryLimitMb: 2048 })
    const ctx = { signal: new AbortController().signal, deadline: Date.now() + 3600_000, progress: () => undefined }
    const res: Record<string, unknown> = {}
    for (const c of cases) {
      const slow = backend === 'cpu' && c.shape[1] === 224
      // Iterations per side (the same number for both), and warm-up runs per side.
      const n = slow ? (kit.quick ? 6 : 20) : c.shape[1] === 224 ? (kit.quick ? 60 : 250) : kit.quick ? 600 : 2500
      const warm = Math.min(n, slow ? 2 : 10)
      const values = new Float32Array(c.shape.reduce((a, b) => a * b, 1)).map((_, i) => ((i * 7919) % 255) / 255)
      const b64 = Buffer.from(values.buffer).toString('base64')

      // Bare: the model loaded straight from the unpacked files, one tensor, predict + read back.
      const { modelJson } = readModelDir(c.dir)
      const model = await api.loadLayersModel(fileHandler(c.dir, modelJson))
      const x = api.tensor(values, c.shape, 'float32')
      const bare = async () => {
        const y = model.predict(x) as tf.Tensor
        await y.data()
        y.dispose()
      }
      // The task path from the request's JSON params on. The worker's own timing of
      // predict + read-back tells the model's speed in the worker apart from the task
      // path's own cost (parse and decode, IPC, hashes, outcome).
      const workerInfer: number[] = []
      const own: number[] = []
      const task = async () => {
        const t0 = performance.now()
        const o = await ex.run(ex.parse({ model: { sha256: c.sha256 }, input: { tensor: { shape: c.shape, dtype: 'float32', data: b64 } } }), ctx)
        workerInfer.push(o.timings.infer!)
        own.push(performance.now() - t0 - o.timings.infer!)
      }
      for (let i = 0; i < warm; i++) {
        await bare() // kernels, wasm memory
        await task() // the worker's model cache, its kernels
      }
      workerInfer.length = 0
      own.length = 0
      const bareTimes: number[] = []
      const taskTimes: number[] = []
      for (let i = 0; i < n; i++) {
        if (i % 2 === 0) {
          bareTimes.push(await timed(bare))
          taskTimes.push(await timed(task))
        } else {
          taskTimes.push(await timed(task))
          bareTimes.push(await timed(bare))
        }
      }
      x.dispose()
      model.dispose()
      const b = median(bareTimes)
      const t = median(taskTimes)
      const ratio = t / b
      const bMean = mean(bareTimes)
      const tMean = mean(taskTimes)
      const inWorker = median(workerInfer)
      const ownMs = median(own)
      bareMs[`${backend}/${c.name}`] = b
      res[c.name] = {
        n,
        warmUp: warm,
        medianBareMs: r3(b),
        medianTaskMs: r3(t),
        ratio: r3(ratio),
        meanBareMs: r3(bMean),
        meanTaskMs: r3(tMean),
        meanRatio: r3(tMean / bMean),
        medianWorkerInferMs: r3(inWorker),
        taskPathOwnMs: r3(ownMs),
        ownShareOfBare: r3(ownMs / b),
      }
      kit.log(
        `  ${backend} ${c.name}: bare predict ${b.toFixed(3)} ms (mean ${bMean.toFixed(3)}), task path ${t.toFixed(3)} ms (mean ${tMean.toFixed(3)}): ${ratio.toFixed(3)}x by medians, ${(tMean / bMean).toFixed(3)}x by means; predict inside the worker ${inWorker.toFixed(3)} ms, task path's own cost ${ownMs.toFixed(3)} ms`,
      )
      kit.row({
        bench: '5 inference',
        figure: `${c.name} on ${backend}: bare predict`,
        value: b,
        unit: 'ms',
        verdict: 'info',
        note: `median of ${n} (mean ${bMean.toFixed(2)}); in the bench process, interleaved with the task path`,
      })
      const heavy = c.shape[1] === 224
      kit.row({
        bench: '5 inference',
        figure: `${c.name} on ${backend}: task path vs bare`,
        value: t,
        unit: 'ms',
        baseline: b,
        ratio,
        ...(heavy ? { goal: '<= 1.05x' } : {}),
        verdict: heavy ? (ratio <= 1.05 ? 'pass' : 'FAIL') : 'info',
        note: `${heavy ? '' : 'a model this small is dominated by the fixed cost; '}medians of ${n} interleaved iterations each (means ${tMean.toFixed(2)} vs ${bMean.toFixed(2)} ms, ${(tMean / bMean).toFixed(3)}x); predict + read-back inside the worker ${inWorker.toFixed(2)} ms, the task path's own cost (parse and base64 decode, IPC, hashes, outcome) ${ownMs.toFixed(2)} ms per task`,
      })
    }
    await ex.close()
    perBackend[backend] = res
  }
  const fastest = Object.entries(bareMs)
    .filter(([k]) => k.endsWith('MobileNet-class 224x224x3'))
    .sort((a, b) => a[1] - b[1])[0]?.[0]
    .split('/')[0]
  kit.row({
    bench: '5 inference',
    figure: `backend picked automatically: ${probe.name}`,
    value: fastest === probe.name ? 1 : 0,
    unit: 'fastest?',
    goal: 'fastest',
    verdict: fastest === probe.name ? 'pass' : 'FAIL',
    note: `fastest measured on MobileNet-class: ${fastest}`,
  })
  return { ...out, perBackend, fastest }
}
