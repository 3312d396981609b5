// Isolation of inference from the agent: a worker that dies mid-task, one that goes over
// its memory limit and a cancelled task each fail the task with a stable code, the
// worker process is really gone, and the next task runs on a fresh worker.
import t from 'tap'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { createLogger } from '../../../protocol/log.js'
import { createInferenceExecutor, type InferenceExecutor } from '../../../agent/infer/infer-executor.js'
import type { TaskRunContext } from '../../../agent/task/executor-port.js'
import { ContentDir } from '../../helpers/content-dir.js'
import { until } from '../../helpers/agent.js'
import { memoryHogModel, SLOW_STEPS, slowModel, sumModel } from './models.js'
import { alive } from '../../helpers/processes.js'

const log = createLogger({ level: 'fatal', out: { write: () => true } })
const dir = t.testdir()
let ex: InferenceExecutor
let content: ContentDir
let slow: string
let hog: string
let sum: string

t.before(async () => {
  content = new ContentDir(join(dir, 'content'))
  slow = content.put(await slowModel())
  hog = content.put(await memoryHogModel())
  sum = content.put(await sumModel())
  ex = createInferenceExecutor({ content, log, workDir: join(dir, 'work'), memoryLimitMb: 600 })
})
t.teardown(() => ex.close())

const zeros = (shape: number[]) => ({ shape, dtype: 'float32', data: new Array(shape.reduce((a, b) => a * b, 1)).fill(0.5) })
/** CPU time (user + system) of a process, in clock ticks (1/100 s). */
const cpuTicks = (pid: number) => {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8')
  const rest = f.slice(f.lastIndexOf(')') + 2).split(' ')
  return Number(rest[11]) + Number(rest[12]) // fields 14 and 15, utime and stime
}
/** Calls `fn` once the worker has spent 150 ms of CPU since now: it is then surely
 * running the model, however slow or loaded the machine (a fixed sleep is not). */
function whenBusy(pid: number, fn: () => void): () => void {
  const start = cpuTicks(pid)
  const timer = setInterval(() => {
    let now: number
    try {
      now = cpuTicks(pid)
    } catch {
      return clearInterval(timer) // gone
    }
    if (now - start >= 15) {
      clearInterval(timer)
      fn()
    }
  }, 10)
  timer.unref()
  return () => clearInterval(timer)
}
/** Runs the slow model; `onStarted` is called once the worker is busy with it. */
function slowTask(signal: AbortSignal, onStarted: () => void) {
  const pid = ex.workerPid
  let stop = () => undefined as void
  const ctx: TaskRunContext = { signal, deadline: Date.now() + 120_000, progress: f => void (f < 1 && pid !== undefined && (stop = whenBusy(pid, onStarted))) }
  return ex.run(ex.parse({ model: { sha256: slow }, input: { tensor: zeros([1, SLOW_STEPS, 8]) } }), ctx).finally(() => stop())
}
const quick = () => ex.run(ex.parse({ model: { sha256: sum }, input: { tensor: zeros([4]) } }), { signal: new AbortController().signal, deadline: Date.now() + 60_000, progress: () => undefined })

t.test('the slow model does finish when left alone (so the tests below interrupt real work)', async t => {
  const out = await slowTask(new AbortController().signal, () => undefined)
  t.equal(out.outputs.length, 1)
})

t.test('worker killed mid-task: WORKER_CRASHED, next task on a fresh worker', async t => {
  await quick() // make sure a worker is up
  const pid = ex.workerPid!
  const task = slowTask(new AbortController().signal, () => process.kill(pid, 'SIGSEGV'))
  await t.rejects(task, { code: 'WORKER_CRASHED', message: /signal SIGSEGV/ })
  t.notOk(alive(pid))
  const out = await quick()
  t.equal(out.outputs.length, 1)
  t.not(ex.workerPid, pid)
})

t.test('over the memory limit: killed, MEMORY_LIMIT, next task runs', async t => {
  await quick()
  const pid = ex.workerPid!
  const task = ex.run(ex.parse({ model: { sha256: hog }, input: { tensor: zeros([1, 32, 32, 3]) } }), {
    signal: new AbortController().signal,
    deadline: Date.now() + 60_000,
    progress: () => undefined,
  })
  await t.rejects(task, { code: 'MEMORY_LIMIT', message: /limit of 600 MiB/ })
  await until(() => !alive(pid), 5000, 'worker gone')
  t.ok((await quick()).outputs.length === 1)
})

t.test('abort: the worker is stopped at once, CANCELLED, next task runs', async t => {
  await quick() // make sure a worker is up
  const pid = ex.workerPid!
  const ac = new AbortController()
  const task = slowTask(ac.signal, () => ac.abort())
  await t.rejects(task, { code: 'CANCELLED' })
  await until(() => !alive(pid), 5000, 'worker gone')
  t.ok((await quick()).outputs.length === 1)
  // Aborted before it starts: nothing is sent to the worker.
  const pid2 = ex.workerPid
  const ac2 = new AbortController()
  ac2.abort()
  await t.rejects(
    slowTask(ac2.signal, () => undefined),
    { code: 'CANCELLED' },
  )
  t.equal(ex.workerPid, pid2)
})

t.test('cancel while queued behind a running task: refused before that task ends, which is untouched', async t => {
  await quick()
  const pid = ex.workerPid
  const order: string[] = []
  const running = slowTask(new AbortController().signal, () => undefined).then(r => (order.push('running done'), r))
  const ac = new AbortController()
  // Abort just after the executor handed the task to the worker host (progress comes
  // right before that), so it waits in the host's queue when the signal fires.
  const queued = ex.run(ex.parse({ model: { sha256: sum }, input: { tensor: zeros([4]) } }), { signal: ac.signal, deadline: Date.now() + 60_000, progress: () => void setImmediate(() => ac.abort()) })
  queued.catch(() => order.push('queued cancelled'))
  await t.rejects(queued, { code: 'CANCELLED' })
  t.equal((await running).outputs.length, 1)
  t.same(order, ['queued cancelled', 'running done'])
  t.equal(ex.workerPid, pid, 'the worker was not restarted')
})
