// The MQTT edge of tasks: reads signed task.request and task.cancel messages (the
// signed-inbound gate, then body schema and replay store), hands them to the
// runner, and publishes what happens as signed updates on …/task/update (or the MQTT 5
// response topic) and on the local bus. Refusals of unauthenticated input are sent
// once, QoS 0 and rate-limited, like command refusals, so junk can neither fill the
// outbox nor wear the SD card; answers to authenticated requests go through the outbox.
// `runLocal` runs on-device requests (local API) through the same queue and receipts.

import type { KeyObject } from 'node:crypto'
import type { IPublishPacket } from 'mqtt'
import type { Clock } from '../../protocol/clock.js'
import type { Json } from '../../protocol/canonical.js'
import type { Config } from '../config/config-schema.js'
import { signEnvelope, type Envelope } from '../../protocol/envelope.js'
import { CairnError, errorBody, type ErrorCode } from '../../protocol/errors.js'
import { newId } from '../../protocol/ids.js'
import { keyIdOf, type KeyPair } from '../../protocol/keys.js'
import type { LocalBus } from '../core/local-bus.js'
import type { Logger } from '../../protocol/log.js'
import type { Metrics } from '../core/metrics.js'
import { MsgClass, type Outbox } from '../core/outbox.js'
import { correlationProps, replyRoute, type PublishProps } from '../../protocol/mqtt-props.js'
import { crashPoint } from '../../protocol/crash-points.js'
import { RefusalLog } from '../../protocol/refusal-log.js'
import type { ReplayStore } from '../../protocol/replay-guard.js'
import { readSignedInbound } from '../../protocol/signed-inbound.js'
import type { Db } from '../core/state-db.js'
import { taskTopics } from '../../protocol/topics.js'
import type { TelemetrySample } from '../../hw/index.js'
import { asJson, checkTaskBody, encodeTaskMessage, TaskMsg, type TaskRequest, type TaskRequestBody, type TaskUpdateBody } from '../../protocol/task-format.js'
import { signTaskUpdate } from '../../protocol/task-update.js'
import type { TaskRow } from './queue.js'
import { TaskRunner, type TaskNotice } from './runner.js'
import type { TaskExecutor, TaskType } from './executor-port.js'

export interface TaskServiceOptions {
  db: Db
  outbox: Outbox
  clock: Clock
  log: Logger
  metrics: Metrics
  identity: KeyPair
  fleet: string
  config: Config['tasks']
  dispatchers: readonly KeyObject[]
  /** Operators may cancel any task (they cannot dispatch unless also dispatchers). */
  isOperator: (keyId: string) => boolean
  replay: ReplayStore
  skewMs: number
  maxTtlMs: number
  executors: readonly TaskExecutor[]
  telemetry: () => TelemetrySample | undefined
  bus: LocalBus
  /** QoS 0, may drop when offline. */
  publishQuick: (topic: string, payload: Buffer, props: PublishProps | undefined) => void
  /** Types whose executors join after start; their queued tasks wait for them. */
  pendingTypes?: readonly string[]
  /** Called when an executor joins after start or its backend becomes known (the agent
   * republishes its status). */
  onStatusChange?: () => void
  /** Test seams (see runner.ts). */
  graceMs?: number
  coolDownMs?: number
  tickMs?: number
}

export interface LocalTaskResult {
  taskId: string
  result: Json
  receipt: Envelope
}

const REFUSAL_BURST = 10
const REFUSAL_PER_S = 2

export class TaskService {
  private readonly refusals: RefusalLog
  readonly runner: TaskRunner
  private readonly topics
  private readonly dispatchers: ReadonlySet<string>
  private readonly waiters = new Map<string, (n: TaskNotice) => void>()
  private tokens = REFUSAL_BURST
  private tokensAt = 0

  constructor(private readonly o: TaskServiceOptions) {
    this.refusals = new RefusalLog(o.log, 'task message')
    this.topics = taskTopics(o.fleet, o.identity.keyId)
    this.dispatchers = new Set(o.dispatchers.map(k => keyIdOf(k)))
    this.runner = new TaskRunner({
      db: o.db,
      outbox: o.outbox,
      clock: o.clock,
      log: o.log,
      identity: o.identity,
      fleet: o.fleet,
      config: o.config,
      executors: o.executors,
      hot: () => hotReason(o.telemetry(), o.config.maxTempC),
      receiptTopic: this.topics.receipt,
      notify: n => this.onNotice(n),
      minRetentionMs: o.maxTtlMs + o.skewMs,
      ...(o.pendingTypes ? { pendingTypes: o.pendingTypes } : {}),
      ...(o.graceMs !== undefined ? { graceMs: o.graceMs } : {}),
      ...(o.coolDownMs !== undefined ? { coolDownMs: o.coolDownMs } : {}),
      ...(o.tickMs !== undefined ? { tickMs: o.tickMs } : {}),
    })
    o.metrics.describe('cairn_tasks_total', 'tasks finished or refused, by type and outcome')
    o.metrics.describe('cairn_tasks_queued', 'tasks waiting in the queue')
    o.metrics.describe('cairn_tasks_running', 'tasks running now')
    o.metrics.describe('cairn_task_messages_refused_total', 'task requests and cancels refused before reaching the queue, by code')
  }

  filters(): string[] {
    return [this.topics.request, this.topics.cancel]
  }

  start(): void {
    this.runner.start()
    this.gauges()
  }

  async stop(): Promise<void> {
    await this.runner.stop()
    for (const [id, w] of this.waiters) w({ event: 'failed', row: { id } as TaskRow, error: { code: 'INTERRUPTED', message: 'the agent is stopping' } })
    this.waiters.clear()
  }

  /** An executor that became ready after start; false (and not added) once stopped. */
  addExecutor(e: TaskExecutor): boolean {
    const added = this.runner.addExecutor(e)
    if (added) {
      this.o.bus.emit('event', { kind: 'task.status', ts: this.o.clock.now(), data: { ...this.status(), added: e.type, ...(e.backend !== undefined ? { backend: e.backend } : {}) } })
      this.o.onStatusChange?.()
    }
    return added
  }

  /** An executor's backend changed or became known (inference: its first worker is up). */
  backendChanged(type: string): void {
    const backend = this.status().backends[type]
    this.o.bus.emit('event', { kind: 'task.status', ts: this.o.clock.now(), data: { ...this.status(), changed: type, ...(backend !== undefined ? { backend } : {}) } })
    this.o.onStatusChange?.()
  }

  /** An expected executor failed to start: its tasks are refused as UNSUPPORTED. */
  executorFailed(type: string): void {
    this.runner.giveUp(type)
  }

  /** For the status message and the local API. */
  status(): { types: string[]; backends: Record<string, string>; expected?: string[]; queued: number; running: number } {
    const expected = this.runner.expectedBackends()
    return { types: this.runner.types(), backends: this.runner.backends(), ...(expected.length > 0 ? { expected } : {}), ...this.runner.counts() }
  }

  /** Handles an incoming message if it is on one of this part's topics. */
  handle(topic: string, payload: Buffer, packet?: IPublishPacket): boolean {
    if (topic !== this.topics.request && topic !== this.topics.cancel) return false
    const { responseTopic: replyTopic, correlation } = replyRoute(packet, this.topics.update)
    const isRequest = topic === this.topics.request
    const type = isRequest ? TaskMsg.request : TaskMsg.cancel
    let env: Envelope | undefined
    let requestId: string | null = null
    let taskId: string | null = null
    let requester: string | null = null
    try {
      const now = this.o.clock.now()
      // No replay store here: onRequest answers a known task id (DUPLICATE) before its
      // request id is admitted, and a cancel is admitted once its body checked.
      const read = readSignedInbound(payload, {
        what: type,
        maxBytes: this.o.config.maxRequestBytes,
        trusted: (k, t) => (t === TaskMsg.request ? this.dispatchers.has(k) : this.dispatchers.has(k) || this.o.isOperator(k)),
        fleet: this.o.fleet,
        sub: this.o.identity.keyId,
        clock: { now, maxTtlMs: this.o.maxTtlMs, skewMs: this.o.skewMs },
        expectType: t => t === type,
      })
      requestId = read.echo.id
      taskId = read.echo.task
      requester = read.echo.iss
      if (!read.ok) throw read.error
      env = read.env
      if (isRequest) this.onRequest(checkTaskBody(env, TaskMsg.request), replyTopic, correlation, now)
      else this.onCancel(checkTaskBody(env, TaskMsg.cancel), replyTopic, correlation, now)
    } catch (err) {
      const e = errorBody(err)
      this.o.metrics.inc('cairn_task_messages_refused_total', { code: e.code })
      if (e.code === 'INTERNAL') this.o.log.error({ err, topic }, 'task message failed')
      else if (env && e.code !== 'REPLAY') this.o.log.warn({ code: e.code, msg: e.message, task: taskId, by: env.iss.slice(0, 12) }, `${type} refused`)
      else this.refusals.refused(e.code, { type, msg: e.message, task: taskId })
      const body: TaskUpdateBody = { task: taskId, request: requestId, event: 'rejected', error: e }
      // Authenticated and well-formed (signature checked): a durable answer. Else a quick
      // one, signed only if the rate limit lets it out (junk cannot buy signatures).
      if (env && e.code !== 'REPLAY' && e.code !== 'DUPLICATE') this.durable(replyTopic ?? this.topics.update, this.update(env.iss, body, env.exp), correlation)
      else this.quick(replyTopic ?? this.topics.update, () => this.update(requester, body).payload, correlation)
    }
    return true
  }

  private onRequest(req: TaskRequest, replyTopic: string | null, correlation: string | null, now: number): void {
    // A duplicate of a known task (a redelivery, a retry, a replay) gets the stored state
    // back, and the receipt again if there is one. Checked before the replay store so a
    // dispatcher that lost the answer can ask again with the same request.
    const known = this.runner.store.get(req.body.task)
    if (known && known.state !== 'rejected') {
      this.answerDuplicate(known, req.id, replyTopic, correlation)
      return
    }
    // The request's id and its task row (or its rejection) in one transaction: a crash
    // between them would leave an id the broker's redelivery is refused on, and no task.
    this.o.db.transaction(() => {
      this.o.replay.admit(req.id, req.exp, now)
      crashPoint('task.after-admit')
      this.runner.submit(req, { local: false, replyTopic, correlation })
    })()
    this.gauges()
  }

  private answerDuplicate(row: TaskRow, requestId: string, replyTopic: string | null, correlation: string | null): void {
    this.o.metrics.inc('cairn_task_messages_refused_total', { code: 'DUPLICATE' })
    const body: TaskUpdateBody = {
      task: row.id,
      request: requestId,
      event: 'rejected',
      state: row.state,
      error: { code: 'DUPLICATE', message: `task ${row.id} exists (${row.state}); it never runs twice` },
    }
    // The receipt goes again only with an answer the rate limit let through: replaying a
    // genuine request must not make the device publish without bound.
    if (this.quick(replyTopic ?? this.topics.update, () => this.update(row.dispatcher, body).payload, correlation) && row.receipt) this.quick(this.topics.receipt, row.receipt, correlation, true)
  }

  private onCancel(req: Envelope & { body: { task: string } }, replyTopic: string | null, correlation: string | null, now: number): void {
    // After the cancel (idempotent): a crash between them cancels again on redelivery.
    const res = this.runner.cancel(req.body.task, dispatcher => dispatcher === req.iss || this.o.isOperator(req.iss))
    this.o.replay.admit(req.id, req.exp, now)
    this.o.log.info({ task: req.body.task, by: req.iss.slice(0, 12), state: res.state }, 'task cancel')
    // Cancelled now (queued) or soon (running): the runner announces it. A task that had
    // already finished is answered with its state.
    if (res.state !== 'cancelled' && res.state !== 'running') {
      const body: TaskUpdateBody = { task: req.body.task, request: req.id, event: 'rejected', state: res.state, error: { code: 'BAD_REQUEST', message: `task already ${res.state}` } }
      this.durable(replyTopic ?? this.topics.update, this.update(req.iss, body, req.exp), correlation)
    }
    this.gauges()
  }

  /** Runs a task requested on the device itself, through the same queue, executors and
   * receipts. The request is signed by the device key and marked local. Resolves when
   * it is done; rejects with the CairnError of a refusal or failure (`receipt` on it
   * when there is one). */
  runLocal(type: TaskType, params: unknown, opts: { timeoutMs?: number; priority?: number } = {}): Promise<LocalTaskResult> {
    const now = this.o.clock.now()
    const timeoutMs = Math.max(1, Math.min(opts.timeoutMs ?? this.o.config.maxRunS * 1000, this.o.config.maxRunS * 1000))
    const body: TaskRequestBody = { task: newId(now), type, params, deadline: now + timeoutMs, priority: opts.priority ?? 0 }
    let req: TaskRequest
    try {
      req = signEnvelope(this.o.identity, {
        type: TaskMsg.request,
        id: newId(now),
        fleet: this.o.fleet,
        sub: this.o.identity.keyId,
        iat: now,
        exp: now + timeoutMs + 60_000,
        body: asJson(body),
      }) as TaskRequest
    } catch (err) {
      return Promise.reject(err)
    }
    // Stopped (or not started): the task would wait in the queue with nobody to run it.
    if (!this.runner.active) return Promise.reject(new CairnError('INTERRUPTED', 'the task queue is not running (the agent is stopping)'))
    return new Promise<LocalTaskResult>((resolve, reject) => {
      this.waiters.set(body.task, n => {
        this.waiters.delete(body.task)
        if (n.event === 'done' && n.receipt) resolve({ taskId: body.task, result: n.result ?? null, receipt: n.receipt as Envelope })
        else {
          const e = n.error ?? { code: 'INTERNAL' as ErrorCode, message: `task ${n.event}` }
          reject(Object.assign(new CairnError(e.code, e.message), n.receipt ? { receipt: n.receipt } : {}))
        }
      })
      const res = this.runner.submit(req, { local: true, replyTopic: null, correlation: null })
      this.gauges()
      if (!res.ok) {
        this.waiters.delete(body.task)
        reject(new CairnError(res.code, res.message))
      }
    })
  }

  private onNotice(n: TaskNotice): void {
    const { row } = n
    this.o.bus.emit('event', {
      kind: `task.${n.event}`,
      ts: this.o.clock.now(),
      data: {
        task: row.id,
        type: row.type,
        local: row.local,
        state: row.state,
        ...(n.error ? { error: n.error } : {}),
        ...(n.progress !== undefined ? { progress: n.progress } : {}),
        ...(n.note !== undefined ? { note: n.note } : {}),
        ...(n.receiptHash ? { receipt: n.receiptHash } : {}),
      },
    })
    const final = n.event === 'done' || n.event === 'failed' || n.event === 'cancelled'
    if (final || n.event === 'rejected') this.o.metrics.inc('cairn_tasks_total', { type: row.type, outcome: n.event === 'rejected' ? `rejected:${n.error?.code ?? ''}` : n.event })
    if (final) this.waiters.get(row.id)?.(n)
    else if (n.event === 'rejected' && this.waiters.has(row.id)) return // runLocal rejects from submit's answer
    this.gauges()
    if (row.local) return
    const body: TaskUpdateBody = {
      task: row.id,
      request: row.requestId,
      event: n.event,
      state: row.state,
      ...(n.error ? { error: n.error } : {}),
      ...(n.progress !== undefined ? { progress: n.progress } : {}),
      ...(n.note !== undefined ? { note: n.note } : {}),
      ...(n.position !== undefined ? { position: n.position } : {}),
      ...(n.receiptHash ? { receipt: n.receiptHash } : {}),
    }
    const topic = row.replyTopic ?? this.topics.update
    // Progress is a hint: QoS 0, never stored. The rest is stored until the deadline.
    if (n.event === 'progress') this.quick(topic, this.update(row.dispatcher, body).payload, row.correlation, true)
    else this.durable(topic, this.update(row.dispatcher, body, Math.max(row.deadline, this.o.clock.now()) + 600_000), row.correlation)
  }

  /** The device's signed update for the dispatcher `to`, worth delivering until `exp`. */
  private update(to: string | null, body: TaskUpdateBody, exp?: number): { payload: Buffer; exp: number } {
    // Messages may come from an executor or echo input: keep them within the schema.
    const b = body.error ? { ...body, error: { code: body.error.code, message: body.error.message.slice(0, 1000) } } : body
    const env = signTaskUpdate(this.o.identity, b, { fleet: this.o.fleet, to, now: this.o.clock.now(), ...(exp !== undefined ? { exp } : {}) })
    return { payload: encodeTaskMessage(env), exp: env.exp }
  }

  private durable(topic: string, update: { payload: Buffer; exp: number }, correlation: string | null): void {
    const props = correlationProps(correlation)
    const { payload, exp: expires } = update
    try {
      this.o.outbox.enqueue({ id: newId(this.o.clock.now()), cls: MsgClass.reply, topic, payload, expires, ...(props ? { props } : {}) })
    } catch (err) {
      this.o.log.error({ err }, 'task update could not be stored; sending it once')
      this.o.publishQuick(topic, payload, props)
    }
  }

  /** Rate-limited QoS 0: answers anyone may trigger (refusals, duplicates, progress). */
  private quick(topic: string, payload: Buffer | (() => Buffer), correlation: string | null, unlimited = false): boolean {
    if (!unlimited) {
      const now = this.o.clock.now()
      this.tokens = Math.min(REFUSAL_BURST, this.tokens + ((now - this.tokensAt) / 1000) * REFUSAL_PER_S)
      this.tokensAt = now
      if (this.tokens < 1) {
        this.o.metrics.inc('cairn_replies_suppressed_total')
        return false
      }
      this.tokens -= 1
    }
    this.o.publishQuick(topic, typeof payload === 'function' ? payload() : payload, correlationProps(correlation))
    return true
  }

  private gauges(): void {
    const c = this.runner.counts()
    this.o.metrics.set('cairn_tasks_queued', c.queued)
    this.o.metrics.set('cairn_tasks_running', c.running)
  }
}

/** Why the device should not start work now, from the newest telemetry sample. */
function hotReason(sample: TelemetrySample | undefined, maxTempC: number): string | undefined {
  if (!sample) return undefined
  if (sample.throttle?.now.throttled || sample.throttle?.now.softTempLimit) return 'the board reports thermal throttling'
  const hottest = (sample.thermal ?? []).reduce<{ zone: string; celsius: number } | undefined>((a, z) => (a === undefined || z.celsius > a.celsius ? z : a), undefined)
  if (hottest && hottest.celsius > maxTempC) return `${hottest.zone} at ${hottest.celsius.toFixed(1)} °C (over tasks.maxTempC ${maxTempC})`
  return undefined
}
