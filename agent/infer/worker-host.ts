// The agent's side of the inference worker: forks it when the first request comes,
// hands it one request at a time, watches it, and stops it after `idleStopMs` without a
// request (the next request starts a fresh one; a worker still stopping is waited for,
// so two never hold their memory at once). Memory is read from /proc/<pid>/status
// (VmRSS), because the wasm backend's heap is outside V8's and resourceLimits would not
// see it; over the limit, the worker is killed (MEMORY_LIMIT). A crash fails the running
// task (WORKER_CRASHED); an abort kills the worker at once (CANCELLED). Either way the
// next request starts a fresh worker, which is cheap (a fraction of a second with wasm
// from the bundle) next to losing the agent.

import { fork, type ChildProcess } from 'node:child_process'
import { readFileSync, writeFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { CairnError, type ErrorCode } from '../../protocol/errors.js'
import type { Logger } from '../../protocol/log.js'
import type { BackendChoice, BackendName, BackendReport, InitMsg, RunMsg, RunOk, WorkerReply } from './worker-protocol.js'

export interface WorkerHostOptions {
  backend: BackendChoice
  memoryLimitBytes: number
  modelCacheBytes: number
  maxImagePixels: number
  modelsDir: string
  log: Logger
  /** How often RSS is sampled while a request runs (default 25 ms). */
  pollMs?: number
  startTimeoutMs?: number
  /** A worker with no request for this long is stopped (0 or absent: never). */
  idleStopMs?: number
  /** Told when a worker is up and when one is gone (status report, tests). */
  onEvent?: (e: WorkerEvent) => void
}

export type WorkerEvent =
  /** forked; loading its backend */
  | { kind: 'starting'; pid: number | undefined }
  | { kind: 'ready'; pid: number | undefined; backend: BackendName; startMs: number }
  /** idle for idleStopMs: told to exit */
  | { kind: 'stopping'; pid: number | undefined }
  /** idle: stopped after idleStopMs; closed: the host closed; killed: for a task's sake
   * (cancel, memory limit); crashed: anything else. */
  | { kind: 'exit'; pid: number | undefined; why: 'idle' | 'closed' | 'killed' | 'crashed'; code: number | null; signal: string | null }

const fromSources = import.meta.url.endsWith('.ts')

/** The worker's entry and how to run it: the .ts source under tsx, or the bundled .mjs. */
function workerEntry(): { file: string; execArgv: string[]; cwd?: string } {
  if (fromSources) return { file: fileURLToPath(new URL('./worker-entry.ts', import.meta.url)), execArgv: ['--import', 'tsx'], cwd: fileURLToPath(new URL('../..', import.meta.url)) }
  return { file: fileURLToPath(new URL('./infer-worker.mjs', import.meta.url)), execArgv: [] }
}

/** Resets a process's VmHWM to its current RSS (Linux >= 4.0), so the peak read after
 * a task is that task's, not the worker's lifetime peak. Best effort. */
function resetPeak(pid: number): void {
  try {
    writeFileSync(`/proc/${pid}/clear_refs`, '5')
  } catch {
    // off Linux, or an old kernel: the peak is the worker's since it started
  }
}

/** VmRSS and VmHWM (peak) of a process in bytes, or undefined off Linux. */
function procMemory(pid: number): { rss: number; peak: number } | undefined {
  try {
    const s = readFileSync(`/proc/${pid}/status`, 'utf8')
    const kb = (k: string) => Number(new RegExp(`^${k}:\\s+(\\d+) kB`, 'm').exec(s)?.[1] ?? NaN) * 1024
    const rss = kb('VmRSS')
    return Number.isFinite(rss) ? { rss, peak: kb('VmHWM') } : undefined
  } catch {
    return undefined
  }
}

interface Pending {
  id: number
  resolve(r: RunOk & { peakRssBytes?: number }): void
  reject(e: CairnError): void
}

export class WorkerHost {
  private child: ChildProcess | undefined
  private starting: Promise<ChildProcess> | undefined
  private pending: Pending | undefined
  /** Why we killed the worker, so its exit is reported as that, not as a crash. */
  private killReason: { code: ErrorCode; message: string } | undefined
  private nextId = 1
  private lane: Promise<unknown> = Promise.resolve()
  private closed = false
  /** The worker between fork and its ready message. */
  private spawning: ChildProcess | undefined
  /** Requests taken by run() and not yet settled: the worker is not idle while any is. */
  private busy = 0
  private idleTimer: NodeJS.Timeout | undefined
  /** Workers killed before they were ready (start timeout, failed init). */
  private readonly killedStarting = new WeakSet<ChildProcess>()
  /** A worker stopped for idleness, until it has exited; a start waits for it. */
  private retiring: { child: ChildProcess; exited: Promise<void> } | undefined
  backend: BackendName | undefined
  backends: BackendReport[] = []
  restarts = 0

  constructor(private readonly o: WorkerHostOptions) {}

  get pid(): number | undefined {
    return this.child?.pid
  }

  /** Starts the worker (if it is not running) and waits until its backend is up. */
  start(): Promise<ChildProcess> {
    if (this.closed) return Promise.reject(closedError())
    if (this.child !== undefined) return Promise.resolve(this.child)
    this.starting ??= this.startAfterStop().finally(() => (this.starting = undefined))
    return this.starting
  }

  private async startAfterStop(): Promise<ChildProcess> {
    if (this.retiring !== undefined) await this.retiring.exited
    if (this.closed) throw closedError()
    return this.spawn()
  }

  private spawn(): Promise<ChildProcess> {
    const t0 = performance.now()
    const entry = workerEntry()
    const limitMb = Math.ceil(this.o.memoryLimitBytes / 1024 / 1024)
    const child = fork(entry.file, [], {
      execArgv: [...entry.execArgv, `--max-old-space-size=${Math.max(64, limitMb)}`],
      serialization: 'advanced',
      stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
      ...(entry.cwd !== undefined ? { cwd: entry.cwd } : {}),
    })
    this.spawning = child
    child.once('exit', (code, signal) => {
      if (this.spawning !== child) return // it became ready: onExit reports it
      this.spawning = undefined
      this.o.onEvent?.({ kind: 'exit', pid: child.pid, why: this.closed ? 'closed' : this.killedStarting.has(child) ? 'killed' : 'crashed', code, signal })
    })
    this.o.onEvent?.({ kind: 'starting', pid: child.pid })
    const log = this.o.log
    const forward = (stream: NodeJS.ReadableStream | null, level: 'info' | 'warn') =>
      stream?.on('data', (d: Buffer) => {
        for (const line of String(d).split('\n')) if (line.trim()) log[level]({ pid: child.pid }, `inference worker: ${line.slice(0, 500)}`)
      })
    forward(child.stdout, 'info')
    forward(child.stderr, 'warn')
    // A send to a worker that has just died emits 'error' on the child; unheard, that
    // would be an uncaught exception in the agent. Its exit fails the task.
    child.on('error', err => log.warn({ pid: child.pid, err }, 'inference worker channel error'))
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.killStarting(child)
        reject(new CairnError('INTERNAL', `inference worker did not start within ${this.o.startTimeoutMs ?? 60_000} ms`))
      }, this.o.startTimeoutMs ?? 60_000)
      const onEarlyExit = (code: number | null, signal: string | null) => {
        clearTimeout(timer)
        reject(new CairnError('INTERNAL', `inference worker exited while starting (code ${code}, signal ${signal})`))
      }
      child.once('exit', onEarlyExit)
      child.on('message', (raw: unknown) => {
        const m = raw as WorkerReply
        if (m.t === 'ready') {
          clearTimeout(timer)
          child.off('exit', onEarlyExit)
          child.once('exit', (code, signal) => this.onExit(child, code, signal))
          this.spawning = undefined
          this.child = child
          this.backend = m.backend
          this.backends = m.backends
          const startMs = Math.round(performance.now() - t0)
          log.info({ pid: child.pid, backend: m.backend, startMs }, 'inference worker ready')
          this.o.onEvent?.({ kind: 'ready', pid: child.pid, backend: m.backend, startMs })
          // Started for a request that was cancelled meanwhile: it idles out like any other.
          if (this.busy === 0) this.armIdle()
          resolve(child)
        } else if (m.t === 'init-failed') {
          clearTimeout(timer)
          child.off('exit', onEarlyExit)
          this.killStarting(child)
          reject(new CairnError(m.code, m.message))
        } else if (m.t === 'result') this.onResult(child, m)
      })
      const init: InitMsg = { t: 'init', backend: this.backend ?? this.o.backend, modelCacheBytes: this.o.modelCacheBytes, maxImagePixels: this.o.maxImagePixels, modelsDir: this.o.modelsDir }
      child.send(init)
    })
  }

  private onResult(child: ChildProcess, m: Extract<WorkerReply, { t: 'result' }>): void {
    const p = this.pending
    if (p === undefined || p.id !== m.id) return
    const mem = child.pid === undefined ? undefined : procMemory(child.pid)
    // wasm memory only grows: a worker that went over the limit stays over it.
    if (mem !== undefined && mem.rss > this.o.memoryLimitBytes) {
      this.kill(child, 'MEMORY_LIMIT', `inference worker used ${mb(mem.rss)} MiB, over the limit of ${mb(this.o.memoryLimitBytes)} MiB: killed`)
      return
    }
    this.pending = undefined
    if (m.ok) p.resolve({ ...m, ...(mem !== undefined ? { peakRssBytes: mem.peak } : {}) })
    else p.reject(new CairnError(m.code, m.message))
  }

  private onExit(child: ChildProcess, code: number | null, signal: string | null): void {
    if (this.retiring?.child === child) {
      this.retiring = undefined
      this.o.log.info({ pid: child.pid, idleS: (this.o.idleStopMs ?? 0) / 1000 }, 'inference worker stopped: idle')
      this.o.onEvent?.({ kind: 'exit', pid: child.pid, why: 'idle', code, signal })
      return
    }
    if (this.child === child) {
      this.child = undefined
      this.clearIdle()
    }
    const reason = this.killReason
    this.killReason = undefined
    const p = this.pending
    this.pending = undefined
    if (reason === undefined) this.o.log.warn({ pid: child.pid, code, signal }, 'inference worker died')
    this.o.onEvent?.({ kind: 'exit', pid: child.pid, why: this.closed ? 'closed' : reason !== undefined ? 'killed' : 'crashed', code, signal })
    if (p === undefined) return
    this.restarts++
    p.reject(new CairnError(reason?.code ?? 'WORKER_CRASHED', reason?.message ?? `inference worker died during the task (exit code ${code}, signal ${signal}); it restarts for the next task`))
  }

  private killStarting(child: ChildProcess): void {
    this.killedStarting.add(child)
    child.kill('SIGKILL')
  }

  private kill(child: ChildProcess, code: ErrorCode, message: string): void {
    this.killReason ??= { code, message }
    child.kill('SIGKILL')
  }

  /** Runs one request; requests queue behind each other (one worker, one model run at a
   * time). `onSent` is called once the request has been written to the worker: work the
   * caller does then overlaps the worker's. */
  run(req: Omit<RunMsg, 't' | 'id'>, signal: AbortSignal, onSent?: () => void): Promise<HostResult> {
    if (signal.aborted) return Promise.reject(cancelled())
    let started = false
    this.busy++
    this.clearIdle()
    const job = this.lane.then(() => {
      started = true
      return this.runNow(req, signal, onSent)
    })
    this.lane = job.catch(() => undefined)
    void this.lane.then(() => {
      if (--this.busy === 0) this.armIdle()
    })
    // Cancelled while queued behind another task: answer at once; runNow skips it later.
    // Once started, runNow's own abort handling (kill the worker) answers.
    return new Promise((resolve, reject) => {
      const onAbort = () => !started && reject(cancelled())
      signal.addEventListener('abort', onAbort, { once: true })
      job.then(resolve, reject).finally(() => signal.removeEventListener('abort', onAbort))
    })
  }

  private async runNow(req: Omit<RunMsg, 't' | 'id'>, signal: AbortSignal, onSent?: () => void): Promise<HostResult> {
    if (signal.aborted) throw cancelled()
    let child = this.child
    let startMs: number | undefined
    if (child === undefined) {
      const t0 = performance.now()
      child = await this.startFor(signal)
      startMs = performance.now() - t0
    }
    if (signal.aborted) throw cancelled()
    const id = this.nextId++
    const result = new Promise<RunOk & { peakRssBytes?: number }>((resolve, reject) => (this.pending = { id, resolve, reject }))
    const onAbort = () => this.kill(child, 'CANCELLED', 'task cancelled: inference worker stopped')
    signal.addEventListener('abort', onAbort, { once: true })
    const poll = setInterval(() => {
      const mem = child.pid === undefined ? undefined : procMemory(child.pid)
      if (mem !== undefined && mem.rss > this.o.memoryLimitBytes)
        this.kill(child, 'MEMORY_LIMIT', `inference worker went over its memory limit of ${mb(this.o.memoryLimitBytes)} MiB (${mb(mem.rss)} MiB): killed`)
    }, this.o.pollMs ?? 25)
    try {
      const msg: RunMsg = { t: 'run', id, ...req }
      if (child.pid !== undefined) resetPeak(child.pid)
      child.send(msg, undefined, {}, err => {
        // Not written: the worker is gone or going; make sure, and its exit fails the task.
        if (err) this.kill(child, 'WORKER_CRASHED', `inference worker could not take the task: ${err.message}`)
        else onSent?.()
      })
      const r = await result
      return startMs !== undefined ? { ...r, startMs } : r
    } finally {
      clearInterval(poll)
      signal.removeEventListener('abort', onAbort)
    }
  }

  /** start(), for a request whose abort answers at once. The start itself goes on (the
   * next request uses the worker, or it idles out); close() kills a worker still starting,
   * so an agent that stops never waits for TensorFlow.js to load. */
  private async startFor(signal: AbortSignal): Promise<ChildProcess> {
    let onAbort!: () => void
    const aborted = new Promise<never>((_, reject) => {
      onAbort = () => reject(cancelled())
      signal.addEventListener('abort', onAbort, { once: true })
    })
    const starting = this.start()
    starting.catch(() => undefined) // when the abort answered first
    try {
      return await Promise.race([starting, aborted])
    } finally {
      signal.removeEventListener('abort', onAbort)
    }
  }

  private armIdle(): void {
    this.clearIdle()
    const ms = this.o.idleStopMs ?? 0
    if (ms <= 0 || this.child === undefined || this.closed) return
    this.idleTimer = setTimeout(() => this.stopIdle(), ms)
    // A timer alone must not keep a process alive (a test, a CLI run that ends).
    this.idleTimer.unref()
  }

  private clearIdle(): void {
    if (this.idleTimer !== undefined) clearTimeout(this.idleTimer)
    this.idleTimer = undefined
  }

  /** Stops an idle worker: it exits when its IPC channel closes (worker.ts), or is
   * killed 2 s later. A request arriving meanwhile starts a fresh one once it is gone. */
  private stopIdle(): void {
    this.idleTimer = undefined
    const child = this.child
    if (child === undefined || this.busy > 0 || this.closed) return
    this.child = undefined
    const exited = new Promise<void>(resolve => child.once('exit', () => resolve()))
    this.retiring = { child, exited }
    const timer = setTimeout(() => child.kill('SIGKILL'), 2000)
    void exited.then(() => clearTimeout(timer))
    this.o.onEvent?.({ kind: 'stopping', pid: child.pid })
    if (child.connected) child.disconnect()
  }

  async close(): Promise<void> {
    this.closed = true
    this.clearIdle()
    await this.retiring?.exited
    // A worker still starting holds nothing: killed at once, rather than waited for (its
    // start, loading the backend, took seconds and kept a stopping agent's process alive).
    const starting = this.spawning
    if (starting && this.child === undefined) {
      const exited = new Promise(r => starting.once('exit', r))
      starting.kill('SIGKILL')
      await exited
      await this.starting?.catch(() => undefined)
      return
    }
    const child = this.child ?? (await this.starting?.catch(() => undefined))
    if (child === undefined || child.exitCode !== null || child.signalCode !== null) return
    await new Promise<void>(resolve => {
      const timer = setTimeout(() => child.kill('SIGKILL'), 2000)
      child.once('exit', () => {
        clearTimeout(timer)
        resolve()
      })
      this.killReason = { code: 'INTERRUPTED', message: 'the agent is stopping' }
      child.disconnect()
    })
  }
}

export type HostResult = RunOk & {
  peakRssBytes?: number
  /** ms this request waited for a worker to start (absent when one was up). */
  startMs?: number
}

const mb = (b: number) => Math.round(b / 1024 / 1024)
const closedError = () => new CairnError('INTERNAL', 'inference worker is closed')
const cancelled = () => new CairnError('CANCELLED', 'task cancelled before inference started')
