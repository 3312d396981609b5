// The queue's behaviour through a real agent on real Mosquitto: cancellation (queued,
// running; by the dispatcher, by an operator, refused for a stranger and another
// dispatcher), timeouts (including an executor that ignores its abort signal), the
// concurrency limit, priority order, crashing executors and oversized results.
// Every final state has a signed receipt that says what happened. Cancellation, which
// travels on its own topic, runs once per MQTT version; the queue's rules once.

import t from 'tap'
import { checkReceipt } from '../../../protocol/task-format.js'
import { startBroker, type TestBroker } from '../../helpers/broker.js'
import { MQTT_VERSIONS } from '../../helpers/mqtt-versions.js'
import { Consumer, operatorKey, sleep, tmp } from '../../helpers/agent.js'
import { schemaErrors } from '../../helpers/schemas.js'
import { taskAgent } from '../../helpers/task-agent.js'

let broker: TestBroker
t.before(async () => {
  broker = await startBroker()
})
t.teardown(async () => broker.close())

t.test('with no dispatcher key trusted, every request is refused', async t => {
  const h = await taskAgent(t, { url: broker.url, tasks: { dispatcherKeys: [] } })
  await h.request('no-dispatcher-1', { label: 'x' })
  await h.c.waitFor(() => h.updates(u => u.task === 'no-dispatcher-1' && u.error?.code === 'UNTRUSTED_KEY')[0], 5000, 'refused: no dispatcher trusted')
  t.same(h.ex.inference.runs, [])
})

for (const { mqttVersion, label } of MQTT_VERSIONS)
  t.test(`${label}: cancel: queued at once, running through the signal; dispatcher or operator only`, async t => {
    const g = await taskAgent(t, { url: broker.url, mqttVersion })
    const stranger = operatorKey(tmp(), 'stranger')
    await g.request('run-long-task1', { label: 'long', mode: 'wait' })
    await g.request('queued-task-01', { label: 'queued', mode: 'wait' })
    await g.request('queued-task-02', { label: 'queued2', mode: 'wait' })
    await g.ex.inference.started('long')
    await g.waitUpdate(u => u.task === 'queued-task-02' && u.event === 'accepted', 'both queued')

    // A stranger's cancel is refused unread (untrusted key); the task goes on.
    await g.cancel('queued-task-01', stranger)
    await g.c.waitFor(() => g.updates(u => u.task === 'queued-task-01' && u.error?.code === 'UNTRUSTED_KEY')[0], 5000, 'stranger refused')
    // The dispatcher cancels a queued task: cancelled at once, with a receipt.
    await g.cancel('queued-task-01')
    const r1 = await g.waitReceipt('queued-task-01')
    t.equal(r1.r.body.outcome, 'cancelled')
    t.equal(r1.r.body.error?.code, 'CANCELLED')
    t.equal(r1.r.body.started, null, 'never started')
    // An operator cancels the running one: its signal fires, the receipt says cancelled.
    await g.cancel('run-long-task1', g.operator)
    const r2 = await g.waitReceipt('run-long-task1')
    t.equal(r2.r.body.outcome, 'cancelled')
    t.ok(r2.r.body.started !== null, 'it had started')
    t.same(g.ex.inference.aborted, ['long'], 'the executor saw the abort')
    // The next one starts; cancelling a finished task answers its state.
    await g.ex.inference.started('queued2')
    g.ex.inference.release('queued2')
    await g.waitReceipt('queued-task-02')
    await g.cancel('queued-task-02')
    const late = await g.waitUpdate(u => u.task === 'queued-task-02' && u.event === 'rejected', 'cancel of a finished task')
    t.equal(late.state, 'done')
    await g.cancel('never-existed-1')
    t.equal((await g.waitUpdate(u => u.task === 'never-existed-1', 'unknown')).error?.code, 'UNKNOWN_TASK')
    t.same(g.ex.inference.runs, ['long', 'queued2'], 'the cancelled queued task never ran')
    for (const m of g.c.messages)
      if (m.topic.includes('/task/update')) {
        t.equal(schemaErrors('envelope', m.json), null, 'update matches envelope.json')
        t.equal(schemaErrors('task-update', (m.json as { body: unknown }).body), null, 'update body matches task-update.json')
      }
    t.ok(g.updates().length > 0, "every update verifies as the device's signed task.update")
    for (const { payload } of g.receipts()) t.ok(checkReceipt(payload, { device: g.device }).checked.length > 0, 'cancel receipts verify')
  })

t.test('another trusted dispatcher cannot cancel a task it did not send', async t => {
  const dir = tmp()
  const keys = { dispatcher: operatorKey(dir, 'first'), operator: operatorKey(dir, 'operator') }
  const second = operatorKey(dir, 'second')
  const h = await taskAgent(t, { url: broker.url, keys, tasks: { dispatcherKeys: [keys.dispatcher.pub, second.pub] } })
  await h.request('owned-task-001', { label: 'own', mode: 'wait' })
  await h.ex.inference.started('own')
  await h.cancel('owned-task-001', second)
  const u = await h.waitUpdate(x => x.task === 'owned-task-001' && x.event === 'rejected', 'refused')
  t.equal(u.error?.code, 'UNTRUSTED_KEY')
  h.ex.inference.release('own')
  t.equal((await h.waitReceipt('owned-task-001')).r.body.outcome, 'done', 'the task finished normally')
})

t.test('timeout: the sooner of the deadline and maxRunS; a hung executor is cut off too', async t => {
  const h = await taskAgent(t, { url: broker.url, tasks: { maxRunS: 1 }, timings: { graceMs: 200, tickMs: 50 } })
  await h.request('slow-task-0001', { label: 'slow', mode: 'wait' }, { deadline: Date.now() + 60_000 })
  const r = await h.waitReceipt('slow-task-0001')
  t.equal(r.r.body.outcome, 'failed')
  t.equal(r.r.body.error?.code, 'TIMEOUT')
  t.same(h.ex.inference.aborted, ['slow'], 'the executor was told to stop')
  await h.request('hung-task-0001', { label: 'hung', mode: 'hang' }, { deadline: Date.now() + 60_000 })
  const r2 = await h.waitReceipt('hung-task-0001')
  t.equal(r2.r.body.error?.code, 'TIMEOUT', 'closed although the executor never returned')
  // The slot is free again.
  await h.request('after-hung-001', { label: 'after' })
  t.equal((await h.waitReceipt('after-hung-001')).r.body.outcome, 'done')
})

t.test('a deadline that passes while queued fails the task without running it', async t => {
  const h = await taskAgent(t, { url: broker.url })
  await h.request('blocker-task-1', { label: 'blocker', mode: 'wait' })
  await h.ex.inference.started('blocker')
  // Long enough to be accepted on a loaded machine (else EXPIRED at arrival), short
  // enough to pass while the blocker holds the only slot.
  await h.request('short-dl-task1', { label: 'short' }, { deadline: Date.now() + 3000 })
  const r = await h.waitReceipt('short-dl-task1')
  t.equal(r.r.body.error?.code, 'TIMEOUT')
  t.equal(r.r.body.started, null)
  h.ex.inference.release('blocker')
  await h.waitReceipt('blocker-task-1')
  t.same(h.ex.inference.runs, ['blocker'])
})

t.test('concurrency limit and priority order', async t => {
  const h = await taskAgent(t, { url: broker.url, tasks: { concurrency: 2 } })
  const running = () => h.a.agent.tasks!.status().running
  let peak = 0
  h.a.agent.bus.on('event', () => (peak = Math.max(peak, running())))
  await h.request('conc-a-task-01', { label: 'a', mode: 'wait' })
  await h.request('conc-b-task-01', { label: 'b', mode: 'wait' })
  await h.ex.inference.started('a')
  await h.ex.inference.started('b')
  await h.request('conc-low-task1', { label: 'low', mode: 'wait' }, { priority: 1 })
  await h.request('conc-hi-task-1', { label: 'hi', mode: 'wait' }, { priority: 9 })
  await h.request('conc-hi-task-2', { label: 'hi2', mode: 'wait' }, { priority: 9 })
  await h.waitUpdate(u => u.task === 'conc-hi-task-2' && u.event === 'accepted', 'all queued')
  await sleep(200)
  t.same(h.ex.inference.runs, ['a', 'b'], 'two run, three wait')
  t.equal(running(), 2)
  h.ex.inference.release('a')
  await h.ex.inference.started('hi')
  h.ex.inference.release('b')
  await h.ex.inference.started('hi2')
  h.ex.inference.release('hi')
  await h.ex.inference.started('low')
  h.ex.inference.release('hi2')
  h.ex.inference.release('low')
  await h.waitReceipt('conc-low-task1')
  t.same(h.ex.inference.runs, ['a', 'b', 'hi', 'hi2', 'low'], 'higher priority first, then arrival order')
  t.ok(peak <= 2, `never more than 2 at once (peak ${peak})`)
})

t.test('crashing executors and oversized results fail the task with a code, and the agent goes on', async t => {
  const h = await taskAgent(t, { url: broker.url, tasks: { maxResultBytes: 1024 } })
  await h.request('crash-task-001', { label: 'crash', mode: 'crash' })
  await h.request('fail-task-0001', { label: 'fail', mode: 'fail' })
  await h.request('big-task-00001', { label: 'big', mode: 'big' })
  await h.request('fine-task-0001', { label: 'fine' })
  const crash = await h.waitReceipt('crash-task-001')
  t.equal(crash.r.body.error?.code, 'INTERNAL')
  const fail = await h.waitReceipt('fail-task-0001')
  t.equal(fail.r.body.error?.code, 'CONTENT_MISMATCH', 'the executor code is kept')
  const big = await h.waitReceipt('big-task-00001')
  t.equal(big.r.body.error?.code, 'TOO_LARGE')
  t.equal(big.r.body.result, null, 'the result is not sent')
  t.equal(big.r.body.outputs.length, 1, 'its output hashes are')
  t.equal((await h.waitReceipt('fine-task-0001')).r.body.outcome, 'done')
  // Outcomes a receipt cannot carry: the task fails with INTERNAL and a valid receipt
  // instead of hanging `running` or signing a receipt that does not verify.
  await h.request('bad-hash-task1', { label: 'badhash', mode: 'bad-hash' })
  await h.request('bigint-task-01', { label: 'bigint', mode: 'bigint' })
  for (const id of ['bad-hash-task1', 'bigint-task-01']) {
    const r = await h.waitReceipt(id)
    t.equal(r.r.body.outcome, 'failed', `${id}: failed`)
    t.equal(r.r.body.error?.code, 'INTERNAL')
    t.ok(checkReceipt(r.payload, { device: h.device }), `${id}: the receipt verifies`)
  }
  // Progress: at most one report a second plus one "complete", however often it is called.
  await h.request('flood-task-001', { label: 'flood', mode: 'flood' })
  await h.waitReceipt('flood-task-001')
  await sleep(200)
  const floods = h.updates(u => u.task === 'flood-task-001' && u.event === 'progress').length
  t.ok(floods <= 3, `${floods} progress updates for 4,001 calls`)
})

t.test('an executor that answers a cancel with a result still ends cancelled', async t => {
  const h = await taskAgent(t, { url: broker.url })
  await h.request('defiant-task-1', { label: 'defiant', mode: 'defiant' })
  await h.ex.inference.started('defiant')
  await h.cancel('defiant-task-1')
  const r = await h.waitReceipt('defiant-task-1')
  t.equal(r.r.body.outcome, 'cancelled', 'the abort decides, not the late result')
  t.equal(r.r.body.result, null, 'the late result is discarded')
})

t.test('runLocal: the same queue, executors and receipts, marked local', async t => {
  const h = await taskAgent(t, { url: broker.url })
  const tasks = h.a.agent.tasks!
  const r = await tasks.runLocal('inference', { label: 'local' })
  t.same(r.result, { echo: 'echo:local' })
  const { receipt } = checkReceipt(r.receipt, { device: h.device })
  t.equal(receipt.body.local, true)
  t.equal(receipt.body.dispatcher, h.device, 'the device itself signed the request')
  t.equal((await h.waitReceipt(r.taskId)).r.sig, r.receipt.sig, 'the receipt is published like any other')
  t.same(
    h.updates(u => u.task === r.taskId),
    [],
    'no MQTT updates for a local task',
  )
  await t.rejects(tasks.runLocal('inference', { nolabel: 1 }), { code: 'BAD_REQUEST' })
  await t.rejects(tasks.runLocal('cache', { label: 'x', mode: 'fail' }), { code: 'CONTENT_MISMATCH', receipt: { body: { outcome: 'failed' } } })
  await t.rejects(tasks.runLocal('inference', { label: 'w', mode: 'wait' }, { timeoutMs: 300 }), { code: 'TIMEOUT' })

  const c = await Consumer.connect(broker.url, `cairn/v1/test/${h.device}/status`)
  t.teardown(() => c.close())
  const status = await c.waitFor(m => m.find(x => x.retain && x.json?.state === 'online'), 5000, 'retained status')
  t.equal(schemaErrors('status', status.json), null, 'status matches status.json')
  t.same(
    (status.json as { tasks: unknown }).tasks,
    { types: ['cache', 'inference'], backends: { cache: 'test', inference: 'test' }, queued: 0, running: 0 },
    'status reports task types, backends and queue',
  )
})
