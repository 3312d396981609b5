// Runs the task queue: admits requests, starts tasks in planner order, enforces the
// per-task timeout and cancellation, and signs the receipt of every task that reaches a
// final state. The receipt's outbox record and the task's final state are written in
// ONE SQLite transaction (Outbox.enqueueWith), so a crash can never leave a finished
// task without its receipt, nor a receipt for a task that is still open.
//
// Knows nothing of MQTT: the service (service.ts) turns `notify` calls into updates.

import { Value } from '@sinclair/typebox/value'
import type { Clock } from '../../protocol/clock.js'
import type { Json } from '../../protocol/canonical.js'
import type { Config } from '../config/config-schema.js'
import { signEnvelope } from '../../protocol/envelope.js'
import { CairnError, errorBody, type ErrorCode } from '../../protocol/errors.js'
import { newId } from '../../protocol/ids.js'
import type { KeyPair } from '../../protocol/keys.js'
import type { Logger } from '../../protocol/log.js'
import { MsgClass, type Outbox } from '../core/outbox.js'
import { correlationProps } from '../../protocol/mqtt-props.js'
import type { Db } from '../core/state-db.js'
import {
  asJson,
  encodeTaskMessage,
  RECEIPT_TTL_MS,
  taskMessageHash,
  TaskMsg,
  TaskReceiptBodySchema,
  type TaskReceipt,
  type TaskReceiptBody,
  type TaskRequest,
  type TaskState,
} from '../../protocol/task-format.js'
import { planAdmission, planQueue, planRecovery, TaskStore, type TaskRow } from './queue.js'
import type { TaskExecutor, TaskOutcome } from './executor-port.js'

type TaskEventKind = 'accepted' | 'rejected' | 'started' | 'progress' | 'done' | 'failed' | 'cancelled'

export interface TaskNotice {
  event: TaskEventKind
  row: TaskRow
  error?: { code: ErrorCode; message: string }
  progress?: number
  note?: string
  position?: number
  receipt?: TaskReceipt
  receiptHash?: string
  result?: Json
}

export interface TaskRunnerOptions {
  db: Db
  outbox: Outbox
  clock: Clock
  log: Logger
  identity: KeyPair
  fleet: string
  config: Config['tasks']
  executors: readonly TaskExecutor[]
  /** Why no task may start now (throttled, too hot), or undefined. */
  hot: () => string | undefined
  /** Where receipts are published (one topic per device). */
  receiptTopic: string
  notify: (n: TaskNotice) => void
  /** Types whose executors join after start (addExecutor); their tasks wait meanwhile. */
  pendingTypes?: readonly string[]
  /** Types whose work may simply run again after a restart (default: cache). */
  idempotent?: ReadonlySet<string>
  /** After an abort, how long the executor has to stop before the task is closed without it. */
  graceMs?: number
  /** A request that arrives while the device is hot needs this much time before its deadline. */
  coolDownMs?: number
  tickMs?: number
  /** Final rows older than retentionDays but never younger than this stay (request lifetime). */
  minRetentionMs?: number
}

export type SubmitResult = { ok: true; row: TaskRow; position: number } | { ok: false; code: ErrorCode; message: string; existing?: TaskRow }

interface Running {
  ac: AbortController
  lastProgress: number
  /** The one report of completion (fraction 1) that may bypass the rate limit was sent. */
  sentFinal: boolean
}

const PROGRESS_EVERY_MS = 1000

export class TaskRunner {
  readonly store: TaskStore
  private readonly executors = new Map<string, TaskExecutor>()
  private readonly running = new Map<string, Running>()
  private readonly idempotent: ReadonlySet<string>
  private readonly pending: Set<string>
  private tick: NodeJS.Timeout | undefined
  private lastPrune = 0
  private stopped = true
  /** Set by stop(): executors arriving later are not taken. */
  private closed = false

  constructor(private readonly o: TaskRunnerOptions) {
    this.store = new TaskStore(o.db)
    for (const e of o.executors) this.executors.set(e.type, e)
    this.idempotent = o.idempotent ?? new Set(['cache'])
    this.pending = new Set((o.pendingTypes ?? []).filter(t => !this.executors.has(t)))
  }

  /** Adds an executor that became ready after start (inference loads its backend in the
   * background). False when the runner has stopped: the caller closes it. */
  addExecutor(e: TaskExecutor): boolean {
    if (this.closed) return false
    this.executors.set(e.type, e)
    this.pending.delete(e.type)
    this.pump()
    return true
  }

  /** An executor that was expected will not come (its start failed): its queued tasks
   * fail with UNSUPPORTED and new requests are refused so. */
  giveUp(type: string): void {
    if (!this.pending.delete(type)) return
    this.pump()
  }

  types(): string[] {
    return [...this.executors.keys()].sort()
  }

  backends(): Record<string, string> {
    const out: Record<string, string> = {}
    for (const [type, e] of this.executors) if (e.backend !== undefined) out[type] = e.backend
    return out
  }

  /** Types whose backend is only expected so far (their worker has not started yet). */
  expectedBackends(): string[] {
    return [...this.executors.values()]
      .filter(e => e.backend !== undefined && e.backendExpected === true)
      .map(e => e.type)
      .sort()
  }

  /** Resolves tasks an earlier run left running, then starts the queue. */
  start(): void {
    this.stopped = false
    const why = {
      'not-idempotent': 'the agent stopped while the task ran; not resumed because the work is not idempotent',
      attempts: 'the agent stopped while the task ran, again; not resumed after this many starts',
      local: 'the agent stopped while the task ran; its on-device caller is gone',
    }
    for (const step of planRecovery(this.store.inState('running'), this.idempotent)) {
      const row = this.store.get(step.id)!
      if (step.kind === 'resume') {
        this.store.requeue(row.id)
        this.o.log.info({ task: row.id, type: row.type }, 'resuming a task interrupted by a restart (idempotent type)')
      } else {
        this.o.log.warn({ task: row.id, type: row.type, why: step.why }, 'task interrupted by a restart: failed')
        this.finalize(row, 'failed', { code: 'INTERRUPTED', message: why[step.why] }, undefined)
      }
    }
    // A local task still queued has no caller any more either (and its queued -> running
    // step is not flushed to disk by an update the way a dispatcher's is, so after a
    // power cut it could even be one that had started).
    for (const t of this.store.inState('queued')) {
      if (t.local) this.finalize(this.store.get(t.id)!, 'failed', { code: 'INTERRUPTED', message: why.local }, undefined)
    }
    this.tick = setInterval(() => {
      try {
        this.pump()
      } catch (err) {
        // A full disk (a task's state that cannot be stored): tried again next tick.
        this.o.log.error({ err }, 'task queue step failed')
      }
    }, this.o.tickMs ?? 1000)
    this.tick.unref()
    this.pump()
  }

  /** Aborts running work and leaves those rows `running`: the next start resolves them
   * exactly as after a crash (one code path, tested by both). */
  async stop(): Promise<void> {
    this.closed = true
    if (this.stopped) return
    this.stopped = true
    clearInterval(this.tick)
    for (const r of this.running.values()) r.ac.abort(new CairnError('INTERRUPTED', 'the agent is stopping'))
    // Real time, not the injected clock: this waits for real work to stop.
    const until = Date.now() + (this.o.graceMs ?? 5000)
    while (this.running.size > 0 && Date.now() < until) await new Promise(r => setTimeout(r, 20))
    await Promise.all([...this.executors.values()].map(e => Promise.resolve(e.close?.()).catch((err: unknown) => this.o.log.warn({ err }, 'executor close failed'))))
  }

  counts(): { queued: number; running: number } {
    return this.store.counts()
  }

  /** False before start() and after stop(): nothing would run a task submitted now. */
  get active(): boolean {
    return !this.stopped
  }

  /** Admission: duplicate id, executor capability, queue rules. Stores the task (or its
   * rejection) and announces it. */
  submit(req: TaskRequest, ctx: { local: boolean; replyTopic: string | null; correlation: string | null }): SubmitResult {
    const b = req.body
    const now = this.o.clock.now()
    const existing = this.store.get(b.task)
    if (existing && existing.state !== 'rejected') return { ok: false, code: 'DUPLICATE', message: `task ${b.task} exists (${existing.state}); it never runs twice`, existing }
    const base = {
      id: b.task,
      type: b.type,
      priority: b.priority,
      deadline: b.deadline,
      dispatcher: req.iss,
      local: ctx.local,
      requestId: req.id,
      requestHash: taskMessageHash(req),
      params: JSON.stringify(b.params ?? null),
      replyTopic: ctx.replyTopic,
      correlation: ctx.correlation,
      received: now,
    }
    const refuse = (code: ErrorCode, message: string): SubmitResult => {
      // A rejected task keeps its id and reason, not its params (they may be megabytes).
      if (this.store.insert({ ...base, params: 'null', state: 'rejected' })) this.store.finish(b.task, 'rejected', now, { code, message }, null)
      const row = this.store.get(b.task)!
      this.o.notify({ event: 'rejected', row, error: { code, message } })
      return { ok: false, code, message }
    }
    const exec = this.executors.get(b.type)
    if (!exec && this.pending.has(b.type)) return refuse('BUSY', `the ${b.type} executor is still starting; try again shortly`)
    if (!exec) return refuse('UNSUPPORTED', `this device runs no ${b.type} tasks (it runs: ${this.types().join(', ') || 'none'})`)
    const paramBytes = Buffer.byteLength(base.params)
    if (paramBytes > this.o.config.maxRequestBytes) return refuse('TOO_LARGE', `params of ${paramBytes} bytes exceed ${this.o.config.maxRequestBytes}`)
    try {
      const admitted = exec.admit(exec.parse(b.params))
      if (!admitted.ok) return refuse(admitted.code, admitted.message)
    } catch (err) {
      const e = errorBody(err)
      return refuse(e.code === 'INTERNAL' ? 'BAD_REQUEST' : e.code, e.message)
    }
    const counts = this.store.counts()
    const adm = planAdmission({ now, deadline: b.deadline, queued: counts.queued, maxQueue: this.o.config.maxQueue, hot: this.o.hot(), coolDownMs: this.o.coolDownMs ?? 60_000 })
    if (!adm.ok) return refuse(adm.code, adm.message)
    if (!this.store.insert({ ...base, state: 'queued' })) {
      const row = this.store.get(b.task)!
      return { ok: false, code: 'DUPLICATE', message: `task ${b.task} exists (${row.state})`, existing: row }
    }
    const row = this.store.get(b.task)!
    const position = this.store.inState('queued').findIndex(r => r.id === row.id)
    this.o.notify({ event: 'accepted', row, position: Math.max(0, position) + counts.running })
    this.pump()
    return { ok: true, row, position }
  }

  /** Cancels a task: queued ones at once, running ones through their abort signal.
   * `mayCancel` is the caller's authorisation rule, given the task's dispatcher. */
  cancel(taskId: string, mayCancel: (dispatcher: string) => boolean): { state: TaskState } {
    const row = this.store.get(taskId)
    if (!row) throw new CairnError('UNKNOWN_TASK', `no task ${taskId} on this device`)
    if (!mayCancel(row.dispatcher)) throw new CairnError('UNTRUSTED_KEY', 'only the dispatcher of a task or an operator may cancel it')
    if (row.state === 'queued') {
      this.finalize(row, 'cancelled', { code: 'CANCELLED', message: 'cancelled before it started' }, undefined)
      this.pump()
      return { state: 'cancelled' }
    }
    if (row.state === 'running') {
      const r = this.running.get(taskId)
      r?.ac.abort(new CairnError('CANCELLED', 'cancelled while running'))
      return { state: 'running' }
    }
    return { state: row.state }
  }

  /** Starts what the planner says; fails tasks whose deadline passed in the queue. */
  pump(): void {
    if (this.stopped) return
    const now = this.o.clock.now()
    this.prune(now)
    const queued = this.store.inState('queued')
    if (queued.length === 0) return
    const steps = planQueue({
      queued: queued.map(r => ({ id: r.id, deadline: r.deadline, waiting: this.pending.has(r.type) })),
      running: this.running.size,
      concurrency: this.o.config.concurrency,
      now,
      hot: this.o.hot(),
    })
    for (const step of steps) {
      const row = this.store.get(step.id)
      if (!row || row.state !== 'queued') continue
      if (step.kind === 'expire') {
        const why = step.code === 'TOO_HOT' ? `the device stayed too hot (${this.o.hot() ?? 'hot'}) until the deadline` : 'the deadline passed before a slot was free'
        this.finalize(row, 'failed', { code: step.code, message: why }, undefined)
      } else this.startTask(row)
    }
  }

  private startTask(row: TaskRow): void {
    const exec = this.executors.get(row.type)
    const now = this.o.clock.now()
    if (!exec) {
      // Only after a downgrade that dropped an executor: the task cannot run here any more.
      this.finalize(row, 'failed', { code: 'UNSUPPORTED', message: `no ${row.type} executor` }, undefined)
      return
    }
    if (!this.store.markRunning(row.id, now)) return
    const ac = new AbortController()
    const entry: Running = { ac, lastProgress: 0, sentFinal: false }
    this.running.set(row.id, entry)
    const started = { ...row, state: 'running' as const, started: now, attempts: row.attempts + 1 }
    this.o.notify({ event: 'started', row: started })
    void this.execute(started, exec, entry).finally(() => {
      this.running.delete(row.id)
      this.pump()
    })
  }

  private async execute(row: TaskRow, exec: TaskExecutor, entry: Running): Promise<void> {
    const { ac } = entry
    const now = this.o.clock.now()
    const limit = Math.min(row.deadline, now + this.o.config.maxRunS * 1000)
    const timer = setTimeout(() => ac.abort(new CairnError('TIMEOUT', `ran past its limit (${limit - now} ms: the sooner of the deadline and tasks.maxRunS)`)), Math.max(0, limit - now))
    let grace: NodeJS.Timeout | undefined
    const settled = await new Promise<{ out: TaskOutcome } | { err: unknown }>(resolve => {
      // A hung executor must not hold the slot forever: after the abort it gets graceMs.
      ac.signal.addEventListener('abort', () => (grace = setTimeout(() => resolve({ err: ac.signal.reason }), this.o.graceMs ?? 5000)), { once: true })
      // At most one report a second, plus one "complete" (1) report: an executor that
      // calls progress(1) or progress(NaN) in a loop must not flood the broker.
      const progress = (fraction: number, note?: string) => {
        const t = this.o.clock.now()
        const f = typeof fraction === 'number' && Number.isFinite(fraction) ? Math.min(1, Math.max(0, fraction)) : 0
        const final = f === 1 && !entry.sentFinal
        if (ac.signal.aborted || (t - entry.lastProgress < PROGRESS_EVERY_MS && !final)) return
        entry.lastProgress = t
        if (f === 1) entry.sentFinal = true
        this.o.notify({ event: 'progress', row, progress: f, ...(note !== undefined ? { note: String(note).slice(0, 200) } : {}) })
      }
      try {
        const params = exec.parse(JSON.parse(row.params))
        exec.run(params, { signal: ac.signal, deadline: limit, progress }).then(
          out => resolve({ out }),
          err => resolve({ err }),
        )
      } catch (err) {
        resolve({ err })
      }
    })
    clearTimeout(timer)
    clearTimeout(grace)
    // Stopping: the row stays `running` and the next start resolves it.
    if (this.stopped) return
    // Once aborted (cancel, timeout) the abort decides, even if the executor ignored the
    // signal and returned a result within the grace period: the receipt says what the
    // dispatcher was told would happen, and a late result is discarded.
    if ('out' in settled && !ac.signal.aborted) {
      let out: TaskOutcome
      try {
        out = plainOutcome(settled.out)
      } catch (err) {
        this.finalize(row, 'failed', errorBody(err), undefined)
        return
      }
      const size = Buffer.byteLength(JSON.stringify(out.result))
      if (size > this.o.config.maxResultBytes) {
        this.finalize(row, 'failed', { code: 'TOO_LARGE', message: `result of ${size} bytes exceeds tasks.maxResultBytes (${this.o.config.maxResultBytes})` }, { ...out, result: null })
      } else this.finalize(row, 'done', null, out)
      return
    }
    const reason = ac.signal.aborted ? ac.signal.reason : (settled as { err: unknown }).err
    const e = errorBody(reason)
    if (e.code === 'INTERNAL') this.o.log.error({ task: row.id, err: reason }, 'task executor failed unexpectedly')
    this.finalize(row, e.code === 'CANCELLED' ? 'cancelled' : 'failed', e, undefined)
  }

  /** Signs the receipt and stores it with the final state in one transaction. */
  private finalize(row: TaskRow, outcome: 'done' | 'failed' | 'cancelled', error: { code: ErrorCode; message: string } | null, out: TaskOutcome | undefined): void {
    const now = this.o.clock.now()
    const body: TaskReceiptBody = {
      task: row.id,
      type: row.type,
      request: row.requestHash,
      dispatcher: row.dispatcher,
      local: row.local,
      outcome,
      error: error ? { code: error.code, message: error.message.slice(0, 1000) } : null,
      inputs: out?.inputs ?? [],
      model: out?.model ?? null,
      outputs: out?.outputs ?? [],
      result: out?.result ?? null,
      backend: out?.backend ?? null,
      timings: out?.timings ?? {},
      resources: out?.resources ?? {},
      received: row.received,
      started: row.started,
      finished: now,
      attempts: row.attempts,
    }
    // An executor's outcome that breaks the receipt schema (an uppercase hash, 300
    // inputs, a 2 kB backend name) must not yield a receipt `cairn task verify` refuses:
    // the task fails with INTERNAL and a receipt without the executor's figures instead.
    if (out !== undefined && !Value.Check(TaskReceiptBodySchema, body)) {
      const first = [...Value.Errors(TaskReceiptBodySchema, body)][0]
      const why = `the executor returned an invalid outcome (${first ? `${first.path} ${first.message}` : 'schema'})`
      this.o.log.error({ task: row.id, err: why }, 'task outcome refused')
      this.finalize(row, 'failed', { code: 'INTERNAL', message: why }, undefined)
      return
    }
    let receipt: TaskReceipt | undefined
    let wire: Buffer | undefined
    try {
      this.o.outbox.enqueueWith(() => {
        receipt = signEnvelope(this.o.identity, {
          type: TaskMsg.receipt,
          id: newId(now),
          fleet: this.o.fleet,
          sub: row.dispatcher,
          iat: now,
          exp: now + RECEIPT_TTL_MS,
          body: asJson(body),
        }) as TaskReceipt
        wire = encodeTaskMessage(receipt)
        this.store.finish(row.id, outcome, now, error, wire)
        const props = correlationProps(row.correlation)
        return { id: receipt.id, cls: MsgClass.mustKeep, topic: this.o.receiptTopic, payload: wire, ...(props ? { props } : {}) }
      })
    } catch (err) {
      this.o.log.error({ task: row.id, err }, 'task receipt could not be stored; the task stays open and is resolved at the next start')
      return
    }
    const final = this.store.get(row.id) ?? { ...row, state: outcome }
    this.o.notify({ event: outcome, row: final, ...(error ? { error } : {}), receipt: receipt!, receiptHash: taskMessageHash(receipt!), result: body.result as Json })
    this.o.log.info({ task: row.id, type: row.type, outcome, code: error?.code }, 'task finished')
  }

  private prune(now: number): void {
    if (now - this.lastPrune < 3600_000) return
    this.lastPrune = now
    const keepMs = Math.max(this.o.config.retentionDays * 86_400_000, this.o.minRetentionMs ?? 0)
    const n = this.store.prune(now - keepMs)
    if (n > 0) this.o.log.info({ pruned: n }, 'old finished tasks forgotten')
  }
}

/** The outcome as plain JSON (what the receipt can carry): undefined members dropped,
 * typed arrays and class instances flattened. Throws INTERNAL for what JSON cannot hold
 * (BigInt, cycles) so the task fails with a receipt instead of hanging `running`. */
function plainOutcome(out: TaskOutcome): TaskOutcome {
  let o: Partial<TaskOutcome> | null
  try {
    o = JSON.parse(JSON.stringify(out ?? null, (_k, v: unknown) => (typeof v === 'number' && !Number.isFinite(v) ? undefined : v))) as Partial<TaskOutcome> | null
  } catch (err) {
    throw new CairnError('INTERNAL', `the executor returned an outcome that is not JSON: ${(err as Error).message}`)
  }
  return {
    inputs: o?.inputs ?? [],
    ...(o?.model ? { model: o.model } : {}),
    outputs: o?.outputs ?? [],
    result: o?.result ?? null,
    backend: o?.backend ?? 'unknown',
    timings: o?.timings ?? {},
    resources: o?.resources ?? {},
  }
}
