// Picks the TensorFlow.js backend inside the inference worker, fastest first:
//   tensorflow-gpu  @tensorflow/tfjs-node-gpu, only when a CUDA GPU's device node exists
//   tensorflow      @tensorflow/tfjs-node (libtensorflow, x86-64 prebuilt only)
//   wasm            @tensorflow/tfjs-backend-wasm with SIMD, single-threaded
//   cpu             @tensorflow/tfjs-backend-cpu, plain JavaScript: always works, slowly
// The native packages are optional dependencies whose install downloads libtensorflow;
// they are imported lazily by a computed name (so esbuild leaves them out of the bundle)
// and any failure is a reason in the report, never a crash. A native package brings its
// own copy of the tfjs API, which the worker then uses for everything (TfApi).

import * as tfcore from '@tensorflow/tfjs-core'
// A named import: a bare one is dropped by esbuild (the package declares no side effects).
import { version_cpu } from '@tensorflow/tfjs-backend-cpu'
import { setWasmPaths } from '@tensorflow/tfjs-backend-wasm'
import * as tfl from '@tensorflow/tfjs-layers'
import * as tfc from '@tensorflow/tfjs-converter'
import { CairnError } from '../../protocol/errors.js'
import { cudaDevice, wasmDir } from './backend-guess.js'
import type { BackendChoice, BackendName, BackendReport } from './worker-protocol.js'

/** The part of the tfjs API the worker uses; the bundled packages or a native one's. */
export interface TfApi {
  tensor: typeof tfcore.tensor
  tidy: typeof tfcore.tidy
  memory: typeof tfcore.memory
  softmax: typeof tfcore.softmax
  reshape: typeof tfcore.reshape
  loadLayersModel: typeof tfl.loadLayersModel
  loadGraphModel: typeof tfc.loadGraphModel
}

const bundledApi: TfApi = {
  tensor: tfcore.tensor,
  tidy: tfcore.tidy,
  memory: tfcore.memory,
  softmax: tfcore.softmax,
  reshape: tfcore.reshape,
  loadLayersModel: tfl.loadLayersModel,
  loadGraphModel: tfc.loadGraphModel,
}

async function importNative(pkg: string): Promise<TfApi> {
  const name = pkg // a variable, so neither esbuild nor tsc try to resolve it
  const mod = (await import(name)) as Partial<TfApi> & { default?: Partial<TfApi> }
  const api = (mod.loadLayersModel ? mod : mod.default) as TfApi | undefined
  if (!api?.loadLayersModel) throw new Error(`${pkg} does not export the tfjs API`)
  return api
}

const why = (err: unknown) => {
  const e = err as { code?: string; message?: string }
  return e.code === 'ERR_MODULE_NOT_FOUND' || e.code === 'MODULE_NOT_FOUND'
    ? 'not installed (optional dependency; its install downloads libtensorflow)'
    : `failed to load: ${String(e.message ?? err).split('\n')[0]}`
}

/** Tries the backends in order (or only the one asked for) and returns the first that
 * works, with a report on every one. */
export async function selectBackend(choice: BackendChoice): Promise<{ name: BackendName; api: TfApi; report: BackendReport[] }> {
  const report: BackendReport[] = []
  let chosen: { name: BackendName; api: TfApi } | undefined
  const want = (n: BackendName) => choice === 'auto' || choice === n

  // tensorflow-gpu
  const cuda = cudaDevice()
  if (!want('tensorflow-gpu')) report.push({ name: 'tensorflow-gpu', available: false, reason: `not tried (backend "${choice}" asked for)` })
  else if (cuda === undefined) report.push({ name: 'tensorflow-gpu', available: false, reason: 'no CUDA GPU (no /dev/nvidia0, /dev/nvhost-ctrl-gpu or /proc/driver/nvidia/gpus)' })
  else {
    try {
      const api = await importNative('@tensorflow/tfjs-node-gpu')
      chosen = { name: 'tensorflow-gpu', api }
      report.push({ name: 'tensorflow-gpu', available: true, reason: `libtensorflow with CUDA (${cuda})` })
    } catch (err) {
      report.push({ name: 'tensorflow-gpu', available: false, reason: `@tensorflow/tfjs-node-gpu ${why(err)}` })
    }
  }

  // tensorflow (cpu): importing it beside tfjs-node-gpu would register a second native
  // backend, so it is only tried when the GPU one is not used.
  if (chosen !== undefined) report.push({ name: 'tensorflow', available: false, reason: 'not tried: tensorflow-gpu is in use' })
  else if (!want('tensorflow')) report.push({ name: 'tensorflow', available: false, reason: `not tried (backend "${choice}" asked for)` })
  else {
    try {
      const api = await importNative('@tensorflow/tfjs-node')
      chosen = { name: 'tensorflow', api }
      report.push({ name: 'tensorflow', available: true, reason: 'libtensorflow on the CPU' })
    } catch (err) {
      report.push({ name: 'tensorflow', available: false, reason: `@tensorflow/tfjs-node ${why(err)}` })
    }
  }

  // wasm: probed even when a native backend won, so the report says whether it could run.
  const dir = wasmDir()
  if (dir === undefined) report.push({ name: 'wasm', available: false, reason: 'tfjs-backend-wasm binaries not found' })
  else if (chosen !== undefined && chosen.name !== 'wasm') report.push({ name: 'wasm', available: true, reason: 'not used: a native backend is faster' })
  else if (!want('wasm')) report.push({ name: 'wasm', available: true, reason: `not used (backend "${choice}" asked for)` })
  else {
    try {
      // Threads need SharedArrayBuffer workers that tfjs does not set up under Node.
      tfcore.env().set('WASM_HAS_MULTITHREAD_SUPPORT', false)
      setWasmPaths(dir.endsWith('/') ? dir : `${dir}/`)
      if (!(await tfcore.setBackend('wasm'))) throw new Error('setBackend("wasm") returned false')
      await tfcore.ready()
      const simd = await tfcore.env().getAsync('WASM_HAS_SIMD_SUPPORT')
      chosen = { name: 'wasm', api: bundledApi }
      report.push({ name: 'wasm', available: true, reason: `WebAssembly, ${simd ? 'SIMD' : 'no SIMD'}, 1 thread (${dir})` })
    } catch (err) {
      report.push({ name: 'wasm', available: false, reason: `failed to start: ${(err as Error).message}` })
    }
  }

  if (chosen === undefined && want('cpu')) {
    await tfcore.setBackend('cpu')
    await tfcore.ready()
    chosen = { name: 'cpu', api: bundledApi }
    report.push({ name: 'cpu', available: true, reason: `plain JavaScript, tfjs-backend-cpu ${version_cpu} (slowest)` })
  } else report.push({ name: 'cpu', available: true, reason: chosen === undefined ? `not tried (backend "${choice}" asked for)` : 'not used: a faster backend is available' })

  if (chosen === undefined) throw new CairnError('UNSUPPORTED', `inference backend "${choice}" is not available here: ${report.map(r => `${r.name}: ${r.reason}`).join('; ')}`)
  const picked = chosen.name
  return { ...chosen, report: report.map(r => (r.name === picked ? { ...r, selected: true } : r)) }
}

/** Quietens tfjs's console hints ("install the node backend"): the report says it. */
export function quietTf(): void {
  tfcore.env().set('PROD', true)
  tfcore.env().set('IS_TEST', true)
}
