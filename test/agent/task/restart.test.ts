// Restarts: the agent stops while tasks run and starts again on the same state dir.
// A running inference task fails with INTERRUPTED (it is not run again); a running
// cache task is resumed (fetching content-addressed bytes again is idempotent);
// queued tasks run; a task id seen before the restart is still a DUPLICATE after it.
// The restart over the broker runs once per MQTT version.

import t from 'tap'
import { Value } from '@sinclair/typebox/value'
import { TasksSchema } from '../../../agent/config/config-schema.js'
import { generateKeyPair } from '../../../protocol/keys.js'
import { LocalBus } from '../../../agent/core/local-bus.js'
import { createLogger, LogRing } from '../../../protocol/log.js'
import { Metrics } from '../../../agent/core/metrics.js'
import { Outbox } from '../../../agent/core/outbox.js'
import { ReplayGuard } from '../../../protocol/replay-guard.js'
import { openStateDb } from '../../../agent/core/state-db.js'
import { TaskService } from '../../../agent/task/task-service.js'
import { testExecutors } from '../../helpers/task-executors.js'
import { MAX_ATTEMPTS, planQueue, planRecovery, planAdmission } from '../../../agent/task/queue.js'
import { startBroker, type TestBroker } from '../../helpers/broker.js'
import { operatorKey, sleep, tmp } from '../../helpers/agent.js'
import { taskAgent } from '../../helpers/task-agent.js'
import { MQTT_VERSIONS } from '../../helpers/mqtt-versions.js'

let broker: TestBroker
t.before(async () => {
  broker = await startBroker()
})
t.teardown(async () => broker.close())

for (const { mqttVersion, label } of MQTT_VERSIONS)
  t.test(`${label}: stopped mid-task: inference INTERRUPTED, cache resumed, queued run, never twice`, async t => {
    const dir = tmp()
    const keys = { dispatcher: operatorKey(dir, 'd'), operator: operatorKey(dir, 'o') }
    const tasks = { concurrency: 2, dispatcherKeys: [keys.dispatcher.pub] }
    const h1 = await taskAgent(t, { url: broker.url, mqttVersion, keys, tasks })
    await h1.request('restart-inf-001', { label: 'inf', mode: 'wait' })
    await h1.request('restart-cache-1', { label: 'cache', mode: 'wait' }, { type: 'cache' })
    await h1.request('restart-queued1', { label: 'queued' })
    await h1.ex.inference.started('inf')
    await h1.ex.cache.started('cache')
    await h1.waitUpdate(u => u.task === 'restart-queued1' && u.event === 'accepted', 'third queued')
    await h1.stop()

    const db = openStateDb(h1.a.stateDir)
    const states = Object.fromEntries((db.prepare('SELECT id, state FROM tasks').all() as Array<{ id: string; state: string }>).map(r => [r.id, r.state]))
    db.close()
    t.same(states, { 'restart-inf-001': 'running', 'restart-cache-1': 'running', 'restart-queued1': 'queued' }, 'the stop left the queue as a crash would')
    t.equal(h1.receipts().length, 0, 'no receipt yet')

    // h1's consumer stays subscribed to this device's topics across the restart.
    const h2 = await taskAgent(t, { url: broker.url, mqttVersion, stateDir: h1.a.stateDir, keys, tasks })
    t.equal(h2.device, h1.device, 'same device')
    const inf = await h1.waitReceipt('restart-inf-001')
    t.equal(inf.r.body.outcome, 'failed')
    t.equal(inf.r.body.error?.code, 'INTERRUPTED')
    t.equal(inf.r.body.attempts, 1)
    await h2.ex.cache.started('cache')
    h2.ex.cache.release('cache')
    const cache = await h1.waitReceipt('restart-cache-1')
    t.equal(cache.r.body.outcome, 'done', 'cache task resumed and finished')
    t.equal(cache.r.body.attempts, 2, 'the receipt says it was started twice')
    t.equal((await h1.waitReceipt('restart-queued1')).r.body.outcome, 'done', 'the queued task ran after the restart')
    t.same(h2.ex.inference.runs, ['queued'], 'the interrupted inference task never ran again')

    // The same task ids sent again: stored state back, no run.
    await h2.request('restart-inf-001', { label: 'inf' })
    await h2.request('restart-queued1', { label: 'queued' })
    const dup1 = await h2.waitUpdate(u => u.task === 'restart-inf-001' && u.error?.code === 'DUPLICATE', 'duplicate after restart')
    t.equal(dup1.state, 'failed')
    const dup2 = await h2.waitUpdate(u => u.task === 'restart-queued1' && u.error?.code === 'DUPLICATE', 'duplicate after restart')
    t.equal(dup2.state, 'done')
    await sleep(200)
    t.same(h2.ex.inference.runs, ['queued'], 'still ran once')
    t.equal(h1.receipts('restart-inf-001').length + h2.receipts('restart-inf-001').length >= 2, true, 'the stored receipt was sent again with the duplicate answer')
  })

t.test('planner rules', async t => {
  const q = (id: string, deadline: number) => ({ id, deadline })
  t.same(planQueue({ queued: [q('a', 100), q('b', 100), q('c', 100)], running: 1, concurrency: 2, now: 10, hot: undefined }), [{ kind: 'start', id: 'a' }], 'one free slot, first in order')
  t.same(
    planQueue({ queued: [q('a', 5), q('b', 100)], running: 0, concurrency: 1, now: 10, hot: undefined }),
    [
      { kind: 'expire', id: 'a', code: 'TIMEOUT' },
      { kind: 'start', id: 'b' },
    ],
    'expired tasks fail, the next one starts',
  )
  t.same(
    planQueue({ queued: [q('a', 5), q('b', 100)], running: 0, concurrency: 1, now: 10, hot: 'hot' }),
    [{ kind: 'expire', id: 'a', code: 'TOO_HOT' }],
    'hot: nothing starts, expiries blame the heat',
  )
  t.same(planQueue({ queued: [q('a', 100)], running: 3, concurrency: 2, now: 10, hot: undefined }), [], 'over the limit (after a config change): nothing starts')
  t.same(
    planQueue({ queued: [{ ...q('a', 100), waiting: true }, q('b', 100), { ...q('c', 5), waiting: true }], running: 0, concurrency: 2, now: 10, hot: undefined }),
    [
      { kind: 'start', id: 'b' },
      { kind: 'expire', id: 'c', code: 'TIMEOUT' },
    ],
    'a task whose executor has not joined waits (until its deadline)',
  )
  const r = (id: string, type: 'inference' | 'cache', attempts = 1, local = false) => ({ id, type, attempts, local })
  t.same(
    planRecovery([r('x', 'inference'), r('y', 'cache'), r('z', 'cache', MAX_ATTEMPTS), r('l', 'cache', 1, true)], new Set(['cache'])),
    [
      { kind: 'interrupt', id: 'x', why: 'not-idempotent' },
      { kind: 'resume', id: 'y' },
      { kind: 'interrupt', id: 'z', why: 'attempts' },
      { kind: 'interrupt', id: 'l', why: 'local' },
    ],
    'inference fails, cache resumes (a bounded number of times), local tasks fail (their caller is gone)',
  )
  const base = { now: 1000, deadline: 100_000, queued: 0, maxQueue: 2, hot: undefined, coolDownMs: 60_000 }
  t.same(planAdmission(base), { ok: true })
  t.match(planAdmission({ ...base, deadline: 1000 }), { ok: false, code: 'EXPIRED' })
  t.match(planAdmission({ ...base, queued: 2 }), { ok: false, code: 'BUSY' })
  t.match(planAdmission({ ...base, hot: 'cpu at 90 °C', deadline: 30_000 }), { ok: false, code: 'TOO_HOT' })
  t.same(planAdmission({ ...base, hot: 'cpu at 90 °C' }), { ok: true }, 'hot, but the deadline leaves time to cool')
})

t.test('executors that join after start: BUSY while starting, then run; UNSUPPORTED if they never come', async t => {
  const dir = tmp()
  const db = openStateDb(dir)
  const clock = { now: () => Date.now() }
  const log = createLogger({ level: 'fatal', ring: new LogRing(10) })
  const outbox = new Outbox(db, { clock, maxBytes: 1e8, lazyWriteMs: 0, mustKeepDays: 30 })
  const bus = new LocalBus()
  const events: string[] = []
  bus.on('event', e => events.push(e.kind))
  let statusChanges = 0
  const svc = new TaskService({
    db,
    outbox,
    clock,
    log,
    metrics: new Metrics(),
    identity: generateKeyPair(),
    fleet: 'test',
    config: Value.Default(TasksSchema, {}) as never,
    dispatchers: [],
    isOperator: () => false,
    replay: new ReplayGuard(db, 1000),
    skewMs: 1000,
    maxTtlMs: 86_400_000,
    executors: [],
    telemetry: () => undefined,
    bus,
    publishQuick: () => undefined,
    pendingTypes: ['inference', 'cache'],
    onStatusChange: () => statusChanges++,
  })
  svc.start()
  t.teardown(async () => {
    await svc.stop()
    outbox.close()
    db.close()
  })
  await t.rejects(svc.runLocal('inference', { label: 'early' }), { code: 'BUSY', message: /still starting/ })
  const ex = testExecutors()
  t.equal(svc.addExecutor(ex.inference), true)
  t.equal(statusChanges, 1, 'the agent is told to republish its status')
  t.ok(events.includes('task.status'))
  t.same((await svc.runLocal('inference', { label: 'later' })).result, { echo: 'echo:later' })
  svc.executorFailed('cache')
  await t.rejects(svc.runLocal('cache', { label: 'c' }), { code: 'UNSUPPORTED' })
  await svc.stop()
  t.equal(svc.addExecutor(ex.cache), false, 'not taken once stopped')
})
