// Messages between the agent and its inference worker process (IPC with Node's
// "advanced" serialization, so typed arrays travel as raw bytes, not JSON or base64).
// Inputs arrive decoded: the agent decodes base64 once (while parsing) and hashes the
// input itself while the worker runs the model, so the worker only builds the tensor.

import type { ErrorCode } from '../../protocol/errors.js'

export type BackendName = 'tensorflow-gpu' | 'tensorflow' | 'wasm' | 'cpu'
export type BackendChoice = 'auto' | BackendName

export interface BackendReport {
  name: BackendName | string
  available: boolean
  /** Why it is unavailable, or what it runs on. */
  reason?: string
  /** Picked for this agent's inference. */
  selected?: boolean
}

export interface InitMsg {
  t: 'init'
  backend: BackendChoice
  modelCacheBytes: number
  maxImagePixels: number
  modelsDir: string
}

export type WorkerInput =
  | { kind: 'image'; bytes: Uint8Array }
  /** A verified file in the content cache, read by the worker. */
  | { kind: 'image'; path: string }
  | { kind: 'tensor'; shape: number[]; dtype: 'float32' | 'int32'; data: Float32Array | Int32Array }

export interface RunMsg {
  t: 'run'
  id: number
  modelSha256: string
  /** The verified package file to unpack if models/<sha256>/ is not there yet. */
  modelFile?: string
  input: WorkerInput
  topK: number
}

export interface OutputTensor {
  name: string
  shape: number[]
  dtype: string
  sha256: string
  /** Little-endian bytes of the tensor's values. */
  data: Uint8Array
}

export interface RunOk {
  t: 'result'
  id: number
  ok: true
  modelName: string
  modelFormat: string
  modelCache: 'hit' | 'miss'
  evicted: string[]
  outputs: OutputTensor[]
  top?: Array<{ label: string; index: number; score: number }>
  timings: { unpack: number; load: number; decode: number; infer: number }
  cpuMs: number
}

interface RunFail {
  t: 'result'
  id: number
  ok: false
  code: ErrorCode
  message: string
}

export type WorkerReply = { t: 'ready'; backend: BackendName; backends: BackendReport[] } | { t: 'init-failed'; code: ErrorCode; message: string } | RunOk | RunFail
