// The bundled inference worker (dist/infer-worker.mjs, built by cli/bundle.mjs) runs
// from its own directory with nothing but its neighbours: the tfjs wasm binaries and
// the demo model are read from there, not from node_modules or the network.
import t from 'tap'
import { spawnSync, fork } from 'node:child_process'
import { readdirSync } from 'node:fs'
import { join } from 'node:path'
import { DEMO_MODEL_SHA256 } from '../../../agent/infer/demo-model.js'
import type { WorkerReply } from '../../../agent/infer/worker-protocol.js'

t.test('bundled worker: wasm from dist, demo model classifies a sample', async t => {
  const out = t.testdir()
  const root = new URL('../../..', import.meta.url).pathname
  const built = spawnSync(process.execPath, [join(root, 'cli/bundle.mjs'), '--outfile', join(out, 'cairn.mjs')], { encoding: 'utf8' })
  t.equal(built.status, 0, built.stderr)
  const files = readdirSync(out)
  for (const f of ['infer-worker.mjs', 'tfjs-backend-wasm-simd.wasm', 'shapes.cairnmodel', 'demo-samples']) t.ok(files.includes(f), `${f} is in the bundle dir`)

  const child = fork(join(out, 'infer-worker.mjs'), [], { cwd: '/', serialization: 'advanced', execArgv: [], stdio: ['ignore', 'ignore', 'pipe', 'ipc'] })
  t.teardown(() => void child.kill('SIGKILL'))
  const replies: WorkerReply[] = []
  const next = () => new Promise<WorkerReply>(resolve => child.once('message', m => resolve(m as WorkerReply)))
  let reply = next()
  child.send({ t: 'init', backend: 'auto', modelCacheBytes: 64 << 20, maxImagePixels: 1 << 20, modelsDir: join(out, 'models') })
  replies.push(await reply)
  t.match(replies[0], { t: 'ready', backend: 'wasm' })
  const wasm = replies[0]!.t === 'ready' ? replies[0]!.backends.find(b => b.name === 'wasm') : undefined
  t.match(wasm?.reason, new RegExp(`SIMD.*${out}`), 'wasm binaries from the bundle dir')
  reply = next()
  child.send({
    t: 'run',
    id: 1,
    modelSha256: DEMO_MODEL_SHA256,
    modelFile: join(out, 'shapes.cairnmodel'),
    input: { kind: 'image', path: join(out, 'demo-samples', 'triangle.jpg'), sha256: 'x' },
    topK: 1,
  })
  const r = await reply
  t.match(r, { t: 'result', ok: true, top: [{ label: 'triangle' }] })
})
