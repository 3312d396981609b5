// Task requests through a real agent on real Mosquitto: the happy path with its
// updates and signed receipt, every rejection reason, and requests that must never
// reach the queue (forged, unsigned, wrong key, expired, replayed, oversized,
// malformed). Every message the device sends is checked against docs/schemas. What
// travels differently by MQTT version (the whole path of a request, refusals, replays)
// runs once per version, device and dispatcher alike.

import t, { type Test } from 'tap'
import { cpSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { checkReceipt, taskMessageHash } from '../../../protocol/task-format.js'
import { createCommandRunner } from '../../../hw/index.js'
import { startBroker, type TestBroker } from '../../helpers/broker.js'
import { MQTT_VERSIONS } from '../../helpers/mqtt-versions.js'
import { operatorKey, sleep, tmp, until } from '../../helpers/agent.js'
import { schemaErrors } from '../../helpers/schemas.js'
import { taskAgent, type TaskHarness } from '../../helpers/task-agent.js'

let broker: TestBroker
t.before(async () => {
  broker = await startBroker()
})
t.teardown(async () => broker.close())

/** Every update and receipt seen so far matches the published schemas. */
function schemasHold(t: Test, h: TaskHarness): void {
  for (const m of h.c.messages) {
    if (m.topic.includes('/task/update')) {
      const body = (m.json as { body?: { event?: unknown } } | null)?.body
      t.equal(schemaErrors('envelope', m.json), null, 'update matches envelope.json')
      t.equal(schemaErrors('task-update', body), null, `update ${String(body?.event)} body matches task-update.json`)
    }
    if (m.topic.endsWith('/task/receipt')) {
      t.equal(schemaErrors('envelope', m.json), null, 'receipt matches envelope.json')
      t.equal(schemaErrors('task-receipt', (m.json as { body: unknown }).body), null, 'receipt body matches task-receipt.json')
    }
  }
}

for (const { mqttVersion, label } of MQTT_VERSIONS)
  t.test(`${label}: happy path: accepted, started, progress, done, and a receipt bound to the request`, async t => {
    const h = await taskAgent(t, { url: broker.url, mqttVersion })
    const events: string[] = []
    h.a.agent.bus.on('event', e => e.kind.startsWith('task.') && events.push(e.kind))
    const req = await h.request('happy-task-01', { label: 'cat' }, { priority: 3 })
    const done = await h.waitUpdate(u => u.task === 'happy-task-01' && u.event === 'done', 'done update')
    const { r, payload } = await h.waitReceipt('happy-task-01')
    const seq = h.updates(u => u.task === 'happy-task-01').map(u => u.event)
    t.same(
      seq.filter(e => e !== 'progress'),
      ['accepted', 'started', 'done'],
      'updates in order',
    )
    t.ok(seq.includes('progress'), 'progress reported')
    t.equal(done.request, req.id, 'updates name the request id')
    t.equal(r.iss, h.device, 'receipt signed by the device')
    t.equal(r.sub, h.dispatcher.keyId, 'addressed to the dispatcher')
    t.equal(r.body.request, taskMessageHash(req), 'receipt cites the request hash')
    t.equal(r.body.outcome, 'done')
    t.same(r.body.result, { echo: 'echo:cat' }, 'result carried in the signed receipt')
    t.equal(r.body.backend, 'test')
    t.equal(r.body.attempts, 1)
    t.equal(done.receipt, taskMessageHash(r), 'the done update names the receipt hash')
    t.equal(payload.toString(), JSON.stringify(JSON.parse(payload.toString())), 'receipt wire form is compact JSON')
    const { checked } = checkReceipt(payload, { device: h.device, request: req })
    t.ok(checked.length >= 4, 'receipt verifies offline with its request')
    t.same(h.ex.inference.runs, ['cat'], 'ran once')
    await until(() => events.includes('task.done'), 2000, 'bus event')
    t.same(
      events.filter(e => e !== 'task.progress'),
      ['task.accepted', 'task.started', 'task.done'],
      'lifecycle on the local bus',
    )
    t.same(h.a.agent.tasks!.status(), { types: ['cache', 'inference'], backends: { cache: 'test', inference: 'test' }, queued: 0, running: 0 })
    schemasHold(t, h)
  })

t.test('MQTT 5 response topic and correlation data are honoured; 3.1.1 works from the payload', async t => {
  const h = await taskAgent(t, { url: broker.url })
  const rt = `${h.base}/update/inbox-1`
  await h.request('corr-task-001', { label: 'x' }, { opts: { properties: { responseTopic: rt, correlationData: Buffer.from('abc') } } })
  await h.c.waitFor(m => m.find(x => x.topic === rt && (x.json?.body as { event?: string } | undefined)?.event === 'done'), 10_000, 'done on the response topic')
  const onRt = h.c.messages.filter(x => x.topic === rt)
  t.ok(
    onRt.every(x => Buffer.from(x.properties?.correlationData ?? []).toString() === 'abc'),
    'correlation data echoed',
  )
  const { properties } = await h.waitReceipt('corr-task-001')
  t.equal(Buffer.from(properties?.correlationData ?? []).toString(), 'abc', 'receipt carries the correlation data')
  // A response topic outside the device's update topic is ignored (it is not signed).
  await h.request('corr-task-002', { label: 'y' }, { opts: { properties: { responseTopic: `cairn/v1/test/other/task/update` } } })
  await h.waitUpdate(u => u.task === 'corr-task-002' && u.event === 'done', 'done on the plain update topic')

  const h4 = await taskAgent(t, { url: broker.url, mqttVersion: 4 })
  const req = await h4.request('v311-task-01', { label: 'z' })
  const u = await h4.waitUpdate(x => x.task === 'v311-task-01' && x.event === 'done', 'done over 3.1.1')
  t.equal(u.request, req.id, 'matched by ids in the payload')
  schemasHold(t, h)
  schemasHold(t, h4)
})

t.test('rejections: every reason code, each with a message, nothing runs', async t => {
  const h = await taskAgent(t, { url: broker.url, tasks: { maxQueue: 2 } })
  const rejected = (task: string) => h.waitUpdate(u => u.task === task && u.event === 'rejected', `${task} rejected`)
  await h.request('rej-unsup-01', { label: 'a' }, { type: 'cache', priority: 0 })
  await h.waitUpdate(u => u.task === 'rej-unsup-01' && u.event === 'done', 'cache runs')
  const cases: Array<[string, () => Promise<unknown>, string]> = [
    ['rej-bad-params', () => h.request('rej-bad-params', { nolabel: true }), 'BAD_REQUEST'],
    ['rej-no-space-1', () => h.request('rej-no-space-1', { label: 'n', mode: 'no-space' }), 'NO_SPACE'],
    ['rej-cannot-001', () => h.request('rej-cannot-001', { label: 'c', mode: 'cannot' }), 'UNSUPPORTED'],
    ['rej-deadline-1', () => h.request('rej-deadline-1', { label: 'd' }, { deadline: Date.now() - 1 }), 'EXPIRED'],
    ['rej-bad-type-1', () => h.request('rej-bad-type-1', { label: 'e' }, { type: 'mining' }), 'BAD_REQUEST'],
    ['rej-priority-1', () => h.request('rej-priority-1', { label: 'f' }, { priority: 1000 }), 'BAD_REQUEST'],
  ]
  for (const [task, send, code] of cases) {
    await send()
    const u = await rejected(task)
    t.equal(u.error?.code, code, `${task}: ${code}`)
    t.ok((u.error?.message.length ?? 0) > 0, 'with a message')
  }
  // BUSY: one running (waits), two queued, the fourth is refused.
  for (const l of ['b1', 'b2', 'b3']) await h.request(`busy-${l}-task`, { label: l, mode: 'wait' })
  await h.ex.inference.started('b1')
  await h.waitUpdate(u => u.task === 'busy-b3-task' && u.event === 'accepted', 'b3 queued')
  await h.request('busy-b4-task', { label: 'b4' })
  t.equal((await rejected('busy-b4-task')).error?.code, 'BUSY')
  for (const l of ['b1', 'b2', 'b3']) {
    await h.ex.inference.started(l)
    h.ex.inference.release(l)
  }
  await h.waitUpdate(u => u.task === 'busy-b3-task' && u.event === 'done', 'b3 done')
  // A rejected task never ran and may be sent again under the same id.
  await h.request('busy-b4-task', { label: 'b4' })
  await h.waitUpdate(u => u.task === 'busy-b4-task' && u.event === 'done', 'b4 done on retry')
  t.same(h.ex.inference.runs, ['b1', 'b2', 'b3', 'b4'], 'no rejected task ran')
  t.same(
    h
      .receipts()
      .map(r => r.r.body.task)
      .sort(),
    ['busy-b1-task', 'busy-b2-task', 'busy-b3-task', 'busy-b4-task', 'rej-unsup-01'],
    'receipts only for tasks that were accepted',
  )
  schemasHold(t, h)
})

t.test('UNSUPPORTED type on a device without that executor', async t => {
  const h = await taskAgent(t, { url: broker.url, executors: [] })
  await h.request('no-exec-task-1', { label: 'a' })
  const u = await h.waitUpdate(x => x.task === 'no-exec-task-1', 'rejection')
  t.equal(u.error?.code, 'UNSUPPORTED')
  t.same(h.a.agent.tasks!.status().types, [])
})

t.test('TOO_HOT: a hot device defers work and refuses what would miss its deadline', async t => {
  const root = tmp('cairn-hot-')
  cpSync(new URL('../../fixtures/hw/x86/root', import.meta.url).pathname, root, { recursive: true })
  writeFileSync(join(root, 'sys/class/thermal/thermal_zone0/temp'), '95000\n')
  const h = await taskAgent(t, { url: broker.url, values: { telemetry: { periodS: 1 } }, deps: { hw: { root, run: createCommandRunner() } }, timings: { graceMs: 300, tickMs: 50, coolDownMs: 5000 } })
  await new Promise(r => h.a.agent.bus.once('telemetry', r))
  // Inside coolDownMs (5 s) but far enough off not to expire on the way on a loaded machine.
  await h.request('hot-soon-task1', { label: 'soon' }, { deadline: Date.now() + 4000 })
  const u = await h.waitUpdate(x => x.task === 'hot-soon-task1', 'rejection')
  t.equal(u.error?.code, 'TOO_HOT')
  t.match(u.error?.message, /95/, 'names the temperature')
  // Accepted when the deadline leaves time to cool; held back while hot.
  await h.request('hot-later-task', { label: 'later' }, { deadline: Date.now() + 60_000 })
  await h.waitUpdate(x => x.task === 'hot-later-task' && x.event === 'accepted', 'accepted')
  await sleep(500)
  t.same(h.ex.inference.runs, [], 'not started while hot')
  writeFileSync(join(root, 'sys/class/thermal/thermal_zone0/temp'), '45000\n')
  await h.waitUpdate(x => x.task === 'hot-later-task' && x.event === 'done', 'runs once cool', 15_000)
  t.same(h.ex.inference.runs, ['later'])
})

for (const { mqttVersion, label } of MQTT_VERSIONS)
  t.test(`${label}: requests that never reach the queue: forged, unsigned, wrong key, expired, replayed, oversized, malformed`, async t => {
    const h = await taskAgent(t, { url: broker.url, mqttVersion, tasks: { maxRequestBytes: 4096 } })
    const stranger = operatorKey(tmp(), 'stranger')
    const body = (task: string) => h.requestBody(task, { label: task })
    const refusals = (code: string) => h.a.agent.metrics.get('cairn_task_messages_refused_total', { code }) ?? 0
    const sendRaw = (payload: string | Buffer) => h.publish('request', payload)

    // Signed by a stranger; by an operator (operators do not dispatch); content changed after signing.
    await sendRaw(JSON.stringify(h.sign('task.request', body('forged-task-01'), stranger)))
    await sendRaw(JSON.stringify(h.sign('task.request', body('operator-task-1'), h.operator)))
    const genuine = h.sign('task.request', body('tampered-task1'))
    await sendRaw(JSON.stringify({ ...genuine, body: { ...(genuine.body as object), priority: 99 } }))
    // Unsigned: no sig at all; a command envelope on the task topic.
    const { sig: _sig, ...unsigned } = h.sign('task.request', body('unsigned-task-1'))
    await sendRaw(JSON.stringify(unsigned))
    await sendRaw(JSON.stringify(h.sign('cmd.ping', body('cmd-type-task-1'))))
    // Expired, and for another device.
    await sendRaw(JSON.stringify(h.sign('task.request', body('expired-task-1'), h.dispatcher, { iat: Date.now() - 120_000, ttlMs: 60_000 })))
    const other = { ...h.sign('task.request', body('other-dev-task1')) }
    await sendRaw(JSON.stringify({ ...other, sub: 'someoneelse' }))
    // Oversized (refused unread) and malformed.
    await sendRaw(Buffer.alloc(5000, 0x7b))
    await sendRaw('{"not json')
    await sendRaw(JSON.stringify([1, 2, 3]))
    const want = { UNTRUSTED_KEY: 2, BAD_SIGNATURE: 1, BAD_REQUEST: 3, TOO_LARGE: 1, BAD_JSON: 1, EXPIRED: 1, WRONG_TARGET: 1 }
    await until(() => Object.entries(want).every(([code, n]) => refusals(code) === n), 10_000, 'refusals counted').catch(() => undefined)
    for (const [code, n] of Object.entries(want)) t.equal(refusals(code), n, `${code} refusals`)
    // Answers to unauthenticated junk are QoS 0 and rate-limited: 10 at once at most.
    const answers = h.updates(u => u.event === 'rejected')
    t.ok(answers.length >= 1 && answers.length <= 10, `${answers.length} refusals answered`)
    t.ok(
      answers.every(u => u.error !== undefined),
      'each names its code',
    )
    await sleep(300)
    t.same(h.ex.inference.runs, [], 'nothing ran')
    const tasks = h.a.agent.tasks!.runner.store
    for (const id of ['forged-task-01', 'operator-task-1', 'tampered-task1', 'unsigned-task-1', 'expired-task-1', 'other-dev-task1'])
      t.equal(tasks.get(id), undefined, `${id} left no trace in the queue`)
    schemasHold(t, h)
  })

for (const { mqttVersion, label } of MQTT_VERSIONS)
  t.test(`${label}: a replayed or re-sent request gets the stored state and receipt back, never a second run`, async t => {
    const h = await taskAgent(t, { url: broker.url, mqttVersion })
    const refusals = (code: string) => h.a.agent.metrics.get('cairn_task_messages_refused_total', { code }) ?? 0
    const sendRaw = (payload: string | Buffer) => h.publish('request', payload)

    // Replay: the same envelope again after it ran gets the stored state (DUPLICATE), and a
    // replay of a rejected request is refused as a replay.
    const req = await h.request('replay-task-01', { label: 'r' })
    await h.waitReceipt('replay-task-01')
    await sendRaw(JSON.stringify(req))
    const dup = await h.waitUpdate(u => u.task === 'replay-task-01' && u.error?.code === 'DUPLICATE', 'duplicate answer')
    t.equal(dup.state, 'done', 'stored state sent back')
    await h.c.waitFor(() => h.receipts('replay-task-01').length === 2 || undefined, 5000, 'receipt sent again')
    t.equal(h.receipts('replay-task-01')[1]!.payload.toString(), h.receipts('replay-task-01')[0]!.payload.toString(), 'the same receipt, byte for byte')
    const bad = await h.request('replay-rej-001', { label: 'r', mode: 'cannot' })
    await h.waitUpdate(u => u.task === 'replay-rej-001' && u.error?.code === 'UNSUPPORTED', 'first rejection')
    await sendRaw(JSON.stringify(bad))
    await until(() => refusals('REPLAY') === 1, 5000, 'replay refused')

    // The same task id in a new request (a dispatcher retrying) is a duplicate too.
    await h.request('replay-task-01', { label: 'r2' })
    await h.c.waitFor(() => h.updates(u => u.task === 'replay-task-01' && u.error?.code === 'DUPLICATE').length === 2 || undefined, 5000, 'second duplicate answer')
    await sleep(300)
    t.same(h.ex.inference.runs, ['r'], 'ran once')
    schemasHold(t, h)
  })
