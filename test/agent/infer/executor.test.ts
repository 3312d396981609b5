// The inference executor end to end, with its real worker process and the wasm backend:
// the demo model classifies the shipped sample images, tensors go in and come out
// hashed, bad models and inputs fail with stable codes and the next task still runs.
import t from 'tap'
import { readFileSync, readdirSync } from 'node:fs'
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { join } from 'node:path'
import { createLogger } from '../../../protocol/log.js'
import { createInferenceExecutor, demoSamplePath, type InferenceExecutor } from '../../../agent/infer/infer-executor.js'
import { sha256Hex } from '../../../protocol/hash.js'
import type { TaskRunContext } from '../../../agent/task/executor-port.js'
import { ContentDir } from '../../helpers/content-dir.js'
import { brokenTopologyPackage, notATar, sumModel } from './models.js'

const log = createLogger({ level: 'warn', out: { write: () => true } })
let ex: InferenceExecutor
let content: ContentDir
const dir = t.testdir()

t.before(async () => {
  content = new ContentDir(join(dir, 'content'))
  ex = createInferenceExecutor({
    content,
    log,
    workDir: join(dir, 'work'),
    memoryLimitMb: 600,
    // As hw/accelerators.ts reports a Pi with the AI Kit and a USB Coral (fixtures there).
    accelerators: [
      { kind: 'hailo', name: 'Hailo accelerator (hailo0)', source: '/dev/hailo0' },
      { kind: 'coral-tpu', name: 'Coral Edge TPU, USB (1-1.3)', source: '/sys/bus/usb/devices/1-1.3' },
    ],
  })
})
t.teardown(() => ex.close())

const ctx = (signal = new AbortController().signal): TaskRunContext => ({ signal, deadline: Date.now() + 60_000, progress: () => undefined })
const run = (params: unknown) => ex.run(ex.parse(params), ctx())
const f32 = (xs: number[]) => Buffer.from(new Float32Array(xs).buffer).toString('base64')

t.test('backends: wasm expected before the worker starts, picked by it; native ones unavailable with reasons', async t => {
  t.equal(ex.workerPid, undefined, 'no worker before the first task')
  t.equal(ex.backend, 'wasm', 'expected from what is installed')
  t.equal(ex.backendExpected, true)
  t.same(
    ex.backends().map(b => b.name),
    ['hailo', 'coral-tpu'],
    'before the worker has run, only the NPUs are reported',
  )
  await run({ model: { sha256: content.put(await sumModel()) }, input: { tensor: { shape: [4], dtype: 'float32', data: [1, 2, 3, 4] } } })
  t.equal(ex.backend, 'wasm')
  t.equal(ex.backendExpected, false, 'confirmed by the worker')
  const byName = Object.fromEntries(ex.backends().map(b => [b.name, b]))
  t.match(byName.wasm, { available: true, selected: true, reason: /SIMD/ })
  t.match(byName.cpu, { available: true })
  t.notOk(byName.cpu?.selected)
  t.match(byName.tensorflow, { available: false, reason: /tfjs-node not installed/ })
  t.match(byName['tensorflow-gpu'], { available: false, reason: /no CUDA GPU|tfjs-node-gpu not installed/ })
  t.match(byName.hailo, { available: false, reason: /hailo0\) present \(\/dev\/hailo0\) but not used/ })
  t.match(byName['coral-tpu'], { available: false, reason: /Coral Edge TPU, USB .* but not used/ })
  t.equal(ex.backends().filter(b => b.selected).length, 1, 'exactly one backend selected')
})

t.test('the demo model names the shape in every sample image, PNG and JPEG', async t => {
  const samples = readdirSync(demoSamplePath('.'))
  t.ok(samples.some(s => s.endsWith('.png')) && samples.some(s => s.endsWith('.jpg')), `samples: ${samples.join(', ')}`)
  for (const name of samples) {
    const bytes = readFileSync(demoSamplePath(name))
    const out = await run({ model: 'demo', input: { image: { data: bytes.toString('base64') } }, topK: 2 })
    const result = out.result as { labels: Array<{ label: string; score: number }> }
    t.equal(result.labels[0]?.label, name.split('.')[0], `${name} → ${result.labels[0]?.label} (${result.labels[0]?.score.toFixed(3)})`)
    t.equal(result.labels.length, 2)
    t.same(out.inputs, [{ name: 'image', sha256: sha256Hex(bytes), bytes: bytes.length }])
    t.match(out.model, { name: 'cairn-demo-shapes', format: 'layers-model' })
    t.equal(out.backend, 'wasm')
    t.ok(out.resources.peakRssBytes! > 0 && out.resources.cpuMs! > 0)
    t.match(out.timings, { fetch: Number, load: Number, decode: Number, infer: Number })
  }
})

t.test('tensor input: base64 or numbers, batch dimension optional; outputs hashed', async t => {
  const sha = content.put(await sumModel())
  const a = await run({ model: { sha256: sha }, input: { tensor: { shape: [1, 4], dtype: 'float32', data: f32([1, 2, 3, 4]) } } })
  const b = await run({ model: { sha256: sha }, input: { tensor: { shape: [4], dtype: 'float32', data: [1, 2, 3, 4] } } })
  const out = (a.result as { outputs: Array<{ shape: number[]; data: string; sha256: string }> }).outputs[0]!
  t.same(out.shape, [1, 2])
  t.same([...new Float32Array(new Uint8Array(Buffer.from(out.data, 'base64')).buffer)], [10, 10])
  t.equal(out.sha256, sha256Hex(Buffer.from(out.data, 'base64')))
  t.same(a.outputs, b.outputs, 'same values, same output hash')
  t.same(a.inputs, [{ name: 'tensor', sha256: sha256Hex(Buffer.from(f32([1, 2, 3, 4]), 'base64')), bytes: 16 }])
  t.same(b.inputs, a.inputs, 'numbers and base64 hash the same bytes')
  t.equal((b.result as { modelCache: string }).modelCache, 'hit', 'second run uses the warm model')
})

t.test('tensor shape or dtype that does not fit the model: BAD_INPUT', async t => {
  const sha = content.put(await sumModel())
  await t.rejects(run({ model: { sha256: sha }, input: { tensor: { shape: [1, 5], dtype: 'float32', data: [1, 2, 3, 4, 5] } } }), {
    code: 'BAD_INPUT',
    message: /input\.tensor\.shape: \[1, 5\] does not fit the model's input \[\?, 4\]/,
  })
  await t.rejects(run({ model: { sha256: sha }, input: { tensor: { shape: [1, 4], dtype: 'int32', data: [1, 2, 3, 4] } } }), { code: 'BAD_INPUT', message: /input\.tensor\.dtype/ })
  await t.rejects(run({ model: 'demo', input: { tensor: { shape: [1, 4], dtype: 'float32', data: [1, 2, 3, 4] } } }), { code: 'BAD_INPUT', message: /input\.tensor\.shape/ })
  await t.rejects(run({ model: { sha256: sha }, input: { image: { data: readFileSync(demoSamplePath('circle.png')).toString('base64') } } }), {
    code: 'BAD_INPUT',
    message: /takes tensors, not images/,
  })
})

t.test('corrupt images and pixel bombs fail cleanly; the next task runs', async t => {
  const good = readFileSync(demoSamplePath('square.png'))
  const corruptPng = Buffer.from(good)
  corruptPng.fill(0, 60, 200)
  await t.rejects(run({ model: 'demo', input: { image: { data: corruptPng.toString('base64') } } }), { code: 'BAD_INPUT', message: /corrupt PNG/ })
  const jpg = readFileSync(demoSamplePath('square.jpg'))
  await t.rejects(run({ model: 'demo', input: { image: { data: jpg.subarray(0, jpg.length >> 1).toString('base64') } } }), { code: 'BAD_INPUT', message: /corrupt JPEG/ })
  const bomb = Buffer.from(good.subarray(0, 33))
  bomb.writeUInt32BE(50_000, 16)
  bomb.writeUInt32BE(50_000, 20)
  await t.rejects(run({ model: 'demo', input: { image: { data: bomb.toString('base64') } } }), { code: 'TOO_LARGE', message: /50000×50000/ })
  const ok = await run({ model: 'demo', input: { image: { data: good.toString('base64') } } })
  t.equal((ok.result as { labels: Array<{ label: string }> }).labels[0]?.label, 'square')
})

t.test('models by hash: unknown without URL, fetched from an origin, wrong bytes refused', async t => {
  const pkg = await sumModel()
  const sha = sha256Hex(pkg)
  const unknown = 'c'.repeat(64)
  const params = ex.parse({ model: { sha256: unknown }, input: { tensor: { shape: [4], dtype: 'float32', data: [1, 2, 3, 4] } } })
  t.match(ex.admit(params), { ok: false, code: 'NOT_FOUND' })
  await t.rejects(ex.run(params, ctx()), { code: 'NOT_FOUND', message: /gives no URL/ })

  let served = 0
  const server: Server = createServer((req, res) => {
    served++
    res.end(req.url === '/good' ? pkg : Buffer.from('tampered'))
  })
  await new Promise<void>(r => server.listen(0, '127.0.0.1', r))
  t.teardown(() => server.close())
  const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  const fresh = new ContentDir(join(dir, 'content2'))
  const ex2 = createInferenceExecutor({ content: fresh, log, workDir: join(dir, 'work2') })
  t.teardown(() => ex2.close())
  const p2 = ex2.parse({ model: { sha256: sha, urls: [`${base}/good`] }, input: { tensor: { shape: [4], dtype: 'float32', data: [1, 1, 1, 1] } } })
  t.match(ex2.admit(p2), { ok: true })
  const out = await ex2.run(p2, ctx())
  t.equal(out.resources.bytesFetched, pkg.length)
  t.equal(served, 1)
  t.same(fresh.leased.get(sha), 0, 'lease released after the task')

  const other = 'd'.repeat(64)
  await t.rejects(ex2.run(ex2.parse({ model: { sha256: other, urls: [`${base}/bad`] }, input: { tensor: { shape: [4], dtype: 'float32', data: [1, 1, 1, 1] } } }), ctx()), { code: 'CONTENT_MISMATCH' })

  // A store that hands out wrong bytes under a hash: the worker checks again, loads nothing.
  const liar = 'e'.repeat(64)
  content.putUnchecked(liar, pkg)
  await t.rejects(run({ model: { sha256: liar }, input: { tensor: { shape: [4], dtype: 'float32', data: [1, 1, 1, 1] } } }), { code: 'CONTENT_MISMATCH', message: /not loaded/ })
  t.notOk(readdirSync(join(dir, 'work', 'models')).includes(liar))
})

t.test('an input image already in the cache but over the size limit: TOO_LARGE before the worker reads it', async t => {
  const big = content.put(Buffer.alloc(16 * 1024 * 1024 + 1, 1))
  await t.rejects(run({ model: 'demo', input: { image: { sha256: big } } }), { code: 'TOO_LARGE', message: /more than 16777216/ })
  t.equal(content.leased.get(big), 0, 'lease released')
})

t.test('packages that are not models: MODEL_INVALID, the worker carries on', async t => {
  const pid = ex.workerPid
  await t.rejects(run({ model: { sha256: content.put(notATar()) }, input: { tensor: { shape: [4], dtype: 'float32', data: [1, 1, 1, 1] } } }), { code: 'MODEL_INVALID', message: /not a valid tar/ })
  await t.rejects(run({ model: { sha256: content.put(brokenTopologyPackage()) }, input: { tensor: { shape: [4], dtype: 'float32', data: [1, 1, 1, 1] } } }), {
    code: 'MODEL_INVALID',
    message: /does not load/,
  })
  t.equal(ex.workerPid, pid, 'same worker')
  const ok = await run({ model: 'demo', input: { image: { data: readFileSync(demoSamplePath('cross.png')).toString('base64') } } })
  t.equal((ok.result as { labels: Array<{ label: string }> }).labels[0]?.label, 'cross')
})

t.test('warm models: an LRU by memory; a tiny budget keeps only the last model', async t => {
  const sha = content.put(await sumModel())
  const small = createInferenceExecutor({ content, log, workDir: join(dir, 'work3'), modelCacheMb: 0.01 })
  t.teardown(() => small.close())
  const cache = async (e: InferenceExecutor, params: unknown) => ((await e.run(e.parse(params), ctx())).result as { modelCache: string }).modelCache
  const sum = { model: { sha256: sha }, input: { tensor: { shape: [4], dtype: 'float32', data: [1, 2, 3, 4] } } }
  const demo = { model: 'demo', input: { image: { data: readFileSync(demoSamplePath('circle.png')).toString('base64') } } }
  t.same(
    [await cache(small, sum), await cache(small, sum), await cache(small, demo), await cache(small, sum)],
    ['miss', 'hit', 'miss', 'miss'],
    'the demo model (~20 kB of weights) pushed out the other',
  )
  // The shared executor's 256 MiB holds both.
  await cache(ex, sum)
  await cache(ex, demo)
  t.same([await cache(ex, sum), await cache(ex, demo)], ['hit', 'hit'])
})
