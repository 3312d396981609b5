// The seams between the task queue (agent/task/) and the work it runs: inference
// (agent/infer/) and caching (agent/cache/). The queue owns ids, order, persistence,
// cancellation and receipts; an executor only turns validated parameters into an
// outcome. Kept here, apart from both sides, so neither imports the other's internals.

import type { Json } from '../../protocol/canonical.js'
import type { ErrorCode } from '../../protocol/errors.js'

export type TaskType = 'inference' | 'cache'

/** A named blob that went into or came out of a task, by content hash. */
export interface HashedBlob {
  name: string
  /** lowercase hex SHA-256 of the exact bytes */
  sha256: string
  bytes: number
}

export interface TaskRunContext {
  /** Aborted on cancel, on timeout and when the agent stops. Executors must stop soon after. */
  signal: AbortSignal
  /** ms since the epoch after which the result is useless. */
  deadline: number
  /** Reports progress (0..1); the queue rate-limits what it publishes. */
  progress(fraction: number, note?: string): void
}

export interface TaskOutcome {
  inputs: HashedBlob[]
  /** The model used, for inference. */
  model?: HashedBlob & { format: string }
  outputs: HashedBlob[]
  /** What goes back to the dispatcher in the result (labels, tensors, object ids...). Kept small. */
  result: Json
  /** e.g. 'wasm', 'tensorflow', 'cpu', 'cuda' for inference; 'http' for cache. */
  backend: string
  /** Phases in ms, e.g. { fetch, load, decode, infer }. */
  timings: Record<string, number>
  resources: {
    /** Peak resident memory of the isolated worker, bytes, when known. */
    peakRssBytes?: number
    /** CPU time used by the work, ms, when known. */
    cpuMs?: number
    /** Bytes downloaded from origins. */
    bytesFetched?: number
  }
}

/** Why a task is refused at once; becomes the rejection's reason code. */
export type AdmitResult = { ok: true } | { ok: false; code: ErrorCode; message: string }

export interface TaskExecutor<P = unknown> {
  readonly type: TaskType
  /** Validates and normalises the request's `params`; throws CairnError('BAD_REQUEST') naming the field. */
  parse(params: unknown): P
  /** Capability/resource check at arrival (model too big, disk quota, backend missing). */
  admit(params: P): AdmitResult
  /** Does the work. Throws CairnError with a stable code on failure. */
  run(params: P, ctx: TaskRunContext): Promise<TaskOutcome>
  /** Releases workers, caches, open files. */
  close?(): Promise<void>
  /** What runs the work, for the status report (e.g. 'wasm', 'http'). */
  readonly backend?: string
  /** True while `backend` is only what the executor expects to use: its worker has not
   * started yet (inference starts it with the first task). */
  readonly backendExpected?: boolean
}

/** Verified, content-addressed bytes on local disk (agent/cache/ implements it; inference
 * fetches models through it). */
export interface ContentSource {
  /** Makes sure the object is stored (fetching it from `origins` and verifying every byte
   * against `sha256` if it is not), and leases it: it is not evicted until `release()`. */
  lease(sha256: string, origins: readonly string[], opts: { signal: AbortSignal; maxBytes?: number }): Promise<ContentLease>
  /** The lease of an object already stored, or undefined. */
  leaseLocal(sha256: string): ContentLease | undefined
}

export interface ContentLease {
  readonly sha256: string
  readonly path: string
  readonly bytes: number
  /** True when this call downloaded it. */
  readonly fetched: boolean
  release(): void
}
