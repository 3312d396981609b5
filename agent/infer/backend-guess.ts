// Which TensorFlow.js backend the inference worker will pick, told from the files
// installed, without loading TensorFlow.js: the agent reports it before its worker has
// ever started (the worker starts with the first inference task, docs/inference.md), and
// the worker's own selection (backends.ts) uses the same checks before it loads anything.
// A guess: a native package that is installed but fails to load is only found out by
// the worker, whose report then replaces this one.

import { existsSync, readdirSync } from 'node:fs'
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { BackendChoice, BackendName } from './worker-protocol.js'

/** Where the tfjs wasm binaries are: next to the bundle (dist/), else in the package
 * under node_modules. Never a URL: nothing is fetched. */
export function wasmDir(): string | undefined {
  const here = dirname(fileURLToPath(import.meta.url))
  if (existsSync(join(here, 'tfjs-backend-wasm-simd.wasm'))) return here
  try {
    return dirname(createRequire(import.meta.url).resolve('@tensorflow/tfjs-backend-wasm/dist/tfjs-backend-wasm-simd.wasm'))
  } catch {
    return undefined
  }
}

/** The device node of a CUDA GPU, or undefined. */
export function cudaDevice(): string | undefined {
  for (const p of ['/dev/nvidia0', '/dev/nvhost-ctrl-gpu', '/dev/nvgpu/igpu0/ctrl']) if (existsSync(p)) return p
  try {
    if (readdirSync('/proc/driver/nvidia/gpus').length > 0) return '/proc/driver/nvidia/gpus'
  } catch {
    // no NVIDIA driver
  }
  return undefined
}

function installed(pkg: string): boolean {
  try {
    createRequire(import.meta.url).resolve(pkg)
    return true
  } catch {
    return false
  }
}

/** The backend the worker's selection would pick for `choice`, judged from what is
 * installed (in the order of backends.ts: tensorflow-gpu, tensorflow, wasm, cpu). */
export function expectedBackend(choice: BackendChoice): BackendName {
  if (choice !== 'auto') return choice
  if (cudaDevice() !== undefined && installed('@tensorflow/tfjs-node-gpu')) return 'tensorflow-gpu'
  if (installed('@tensorflow/tfjs-node')) return 'tensorflow'
  return wasmDir() !== undefined ? 'wasm' : 'cpu'
}
