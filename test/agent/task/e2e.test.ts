// End to end through the real executors: a cache task fetched from a loopback origin and
// then served by the agent's cache server with Range support; an origin serving wrong
// bytes refused; an inference task on the shipped demo model returning the right label,
// with the worker's life around it as the agent runs it (none before the first task, the
// status's expected backend, then the one seen, the idle stop).
// Dispatched with `cairn task submit`, receipts checked with `cairn task verify`. The
// cache task runs once per MQTT version, device and dispatcher alike; the inference
// test (the worker's start is most of its time) uses the same path in MQTT 5 only.

import t from 'tap'
import { readdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { main } from '../../../cli/cli.js'
import type { TaskReceipt } from '../../../protocol/task-format.js'
import { SUBMIT_EXIT } from '../../../fleet/task-cli.js'
import { demoModelPath, demoSamplePath } from '../../../agent/infer/infer-executor.js'
import { expectedBackend } from '../../../agent/infer/backend-guess.js'
import { startBroker, type TestBroker } from '../../helpers/broker.js'
import { MQTT_VERSIONS } from '../../helpers/mqtt-versions.js'
import { Consumer, tmp, until } from '../../helpers/agent.js'
import { schemaErrors } from '../../helpers/schemas.js'
import { FLEET, taskAgent } from '../../helpers/task-agent.js'
import { blob, sha256, startOrigin } from '../cache/origin.js'

let broker: TestBroker
t.before(async () => {
  broker = await startBroker()
})
t.teardown(async () => broker.close())

async function cli(args: string[]) {
  let out = ''
  let err = ''
  const code = await main(args, { out: { write: (s: string) => (out += s) }, err: { write: (s: string) => (err += s) }, env: {} })
  return { code, out, err }
}

for (const { mqttVersion, label } of MQTT_VERSIONS)
  t.test(`${label}: cache task from a loopback origin, served with Range; wrong bytes refused`, async t => {
    const origin = await startOrigin()
    t.teardown(() => origin.close())
    const h = await taskAgent(t, { url: broker.url, mqttVersion, builtin: true, tasks: { types: ['cache'] }, values: { cache: { port: 0 } } })
    await until(() => h.a.agent.tasks!.status().types.includes('cache'), 5000, 'cache executor')
    const body = blob(300_000)
    const id = sha256(body)
    origin.route(`/good/${id}`, { kind: 'ok', body })
    const dir = tmp()
    const base = ['task', 'submit', h.device, '--broker', broker.url, '--mqtt-version', String(mqttVersion), '--fleet', FLEET, '--key', h.dispatcher.file, '--type', 'cache']
    const ok = await cli([...base, '--cid', id, '--origin', `${origin.url}/good/{cid}`, '--request-out', join(dir, 'req.json')])
    t.equal(ok.code, SUBMIT_EXIT.done, ok.err)
    const out = JSON.parse(ok.out) as { receipt: TaskReceipt }
    t.equal(out.receipt.body.backend, 'http')
    t.same(
      out.receipt.body.outputs.map(o => o.sha256),
      [id],
      'the receipt names the stored object',
    )
    writeFileSync(join(dir, 'out.json'), ok.out)
    const v = await cli(['task', 'verify', join(dir, 'out.json'), '--device', h.device, '--request', join(dir, 'req.json')])
    t.equal(v.code, 0, v.err)

    const server = h.a.agent.cache.server
    if (!server) throw new Error('cache server did not start')
    const res = await fetch(`${server.url}/c/${id}`, { headers: { range: 'bytes=1000-1999' } })
    t.equal(res.status, 206)
    t.same(Buffer.from(await res.arrayBuffer()), body.subarray(1000, 2000), 'Range served from the cache')

    const wanted = blob(50_000)
    const wid = sha256(wanted)
    origin.route(`/bad/${wid}`, { kind: 'wrong', body: blob(50_000) })
    const bad = await cli([...base, '--cid', wid, '--origin', `${origin.url}/bad/{cid}`])
    t.equal(bad.code, SUBMIT_EXIT.failed, bad.err)
    t.match(JSON.parse(bad.out), { outcome: 'failed', receipt: { body: { error: { code: 'CONTENT_MISMATCH' } } } })
    t.equal((await fetch(`${server.url}/c/${wid}`)).status, 404, 'the wrong bytes were never stored')
  })

/** The pids of this process's inference workers (children running the worker entry). */
function workerPids(): number[] {
  const pids: number[] = []
  for (const task of readdirSync(`/proc/${process.pid}/task`)) {
    let children = ''
    try {
      children = readFileSync(`/proc/${process.pid}/task/${task}/children`, 'utf8')
    } catch {
      continue // a thread that ended
    }
    for (const pid of children.split(' ').filter(Boolean).map(Number)) {
      try {
        if (readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('worker-entry')) pids.push(pid)
      } catch {
        // gone
      }
    }
  }
  return pids
}

type TasksStatus = { backends: Record<string, string>; expected?: string[] }
const tasksOf = (m: { json: unknown }) => (m.json as { tasks?: TasksStatus } | undefined)?.tasks

/** The backend this machine gives (wasm here; tensorflow where tfjs-node installed). */
const BACKEND = expectedBackend('auto')

t.test(
  'inference: no worker until the first task, whose status names the expected backend; the demo model returns the right label; the status then names the backend seen; the worker stops when idle',
  async t => {
    if (demoModelPath() === undefined) {
      t.comment('SKIP: the demo model (agent/infer/demo/shapes.cairnmodel) is not built in this tree')
      return
    }
    const h = await taskAgent(t, { url: broker.url, builtin: true, tasks: { inference: { idleStopS: 1 } }, values: { cache: { port: 0 } } })
    const c = await Consumer.connect(broker.url, `cairn/v1/${FLEET}/${h.device}/status`)
    t.teardown(() => c.close())
    await until(() => h.a.agent.tasks!.status().types.includes('inference'), 10_000, 'inference executor')
    const before = await c.waitFor(m => m.find(x => tasksOf(x)?.backends.inference !== undefined), 10_000, 'status with the inference backend')
    t.same({ backend: tasksOf(before)!.backends.inference, expected: tasksOf(before)!.expected }, { backend: BACKEND, expected: ['inference'] }, 'before any task: the backend expected, marked so')
    t.equal(schemaErrors('status', before.json), null)
    t.same(workerPids(), [], 'and no worker process')

    const dir = tmp()
    const res = await cli([
      'task',
      'submit',
      h.device,
      '--broker',
      broker.url,
      '--fleet',
      FLEET,
      '--key',
      h.dispatcher.file,
      '--type',
      'inference',
      '--model',
      'demo',
      '--input',
      demoSamplePath('circle.png'),
      '--top-k',
      '2',
      '--request-out',
      join(dir, 'req.json'),
    ])
    t.equal(res.code, SUBMIT_EXIT.done, res.err)
    const out = JSON.parse(res.out) as { result: { labels?: Array<{ label: string }> }; receipt: TaskReceipt }
    t.equal(out.result.labels?.[0]?.label, 'circle', 'classified as a circle')
    t.ok(out.receipt.body.model, 'the receipt names the model')
    t.ok(out.receipt.body.timings.start! > 0, `the first task waited ${out.receipt.body.timings.start} ms for the worker to start`)
    // a status with the inference backend and no longer marked expected (not one from before inference joined)
    const seen = await c.waitFor(m => m.find(x => tasksOf(x)?.backends.inference !== undefined && tasksOf(x)!.expected === undefined), 10_000, 'status with the backend seen')
    t.equal(tasksOf(seen)!.backends.inference, BACKEND, 'the status names the backend the worker picked, no longer marked expected')
    t.equal(schemaErrors('status', seen.json), null)
    t.equal(out.receipt.body.inputs[0]?.sha256, sha256(readFileSync(demoSamplePath('circle.png'))), 'and the input image by hash')
    writeFileSync(join(dir, 'out.json'), res.out)
    t.equal((await cli(['task', 'verify', join(dir, 'out.json'), '--device', h.device, '--request', join(dir, 'req.json')])).code, 0)
    // The local API's path: runLocal through the same queue and receipts.
    const local = await h.a.agent.tasks!.runLocal('inference', { model: 'demo', input: { image: { data: readFileSync(demoSamplePath('square.png')).toString('base64') } } })
    t.equal((local.result as { labels?: Array<{ label: string }> }).labels?.[0]?.label, 'square')
    t.equal((local.receipt.body as { local: boolean }).local, true)
    await until(() => workerPids().length === 0, 15_000, 'the idle worker to stop (tasks.inference.idleStopS 1)')
    t.pass('the worker stopped after 1 s without a task')
    t.same(h.a.agent.tasks!.status().backends.inference, BACKEND, 'the status keeps the backend it saw')
    t.equal(h.a.agent.tasks!.status().expected, undefined)
  },
)
