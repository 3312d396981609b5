// The inference worker's life: none until the first task, which starts it; stopped after
// the idle period and started again by the next task; a task that arrives while it stops,
// two that arrive while it starts, an executor closed while it starts, a worker that dies
// while idle. Real worker processes; the tests wait for the host's events, not the clock.
import t, { type Test } from 'tap'
import { join } from 'node:path'
import { createLogger } from '../../../protocol/log.js'
import { createInferenceExecutor, type InferenceExecutor, type InferenceExecutorOptions } from '../../../agent/infer/infer-executor.js'
import type { WorkerEvent } from '../../../agent/infer/worker-host.js'
import { expectedBackend } from '../../../agent/infer/backend-guess.js'
import type { TaskOutcome } from '../../../agent/task/executor-port.js'
import { ContentDir } from '../../helpers/content-dir.js'
import { sumModel } from './models.js'
import { alive } from '../../helpers/processes.js'

const log = createLogger({ level: 'fatal', out: { write: () => true } })
const dir = t.testdir()
let content: ContentDir
let sum: string

t.before(async () => {
  content = new ContentDir(join(dir, 'content'))
  sum = content.put(await sumModel())
})

/** An executor with its worker events recorded; `next` waits for one (those already seen count). */
function executor(t: Test, o: Partial<InferenceExecutorOptions> & { onEvent?: (e: WorkerEvent, ex: InferenceExecutor) => void } = {}) {
  const events: WorkerEvent[] = []
  const waiters: Array<{ match: (e: WorkerEvent) => boolean; resolve: (e: WorkerEvent) => void }> = []
  let backendChanges = 0
  const { onEvent, ...opts } = o
  const ex: InferenceExecutor = createInferenceExecutor({
    content,
    log,
    workDir: join(dir, `work-${Math.random().toString(36).slice(2)}`),
    ...opts,
    onBackendChange: () => backendChanges++,
    onWorker: e => {
      events.push(e)
      onEvent?.(e, ex)
      for (const w of [...waiters])
        if (w.match(e)) {
          waiters.splice(waiters.indexOf(w), 1)
          w.resolve(e)
        }
    },
  })
  t.teardown(() => ex.close())
  const next = (match: (e: WorkerEvent) => boolean, from = 0): Promise<WorkerEvent> => {
    const seen = events.slice(from).find(match)
    return seen ? Promise.resolve(seen) : new Promise(resolve => waiters.push({ match, resolve }))
  }
  return { ex, events, next, kinds: () => events.map(e => (e.kind === 'exit' ? `exit:${e.why}` : e.kind)), backendChanges: () => backendChanges }
}

const quick = (ex: InferenceExecutor, signal = new AbortController().signal): Promise<TaskOutcome> =>
  ex.run(ex.parse({ model: { sha256: sum }, input: { tensor: { shape: [4], dtype: 'float32', data: [1, 2, 3, 4] } } }), { signal, deadline: Date.now() + 60_000, progress: () => undefined })

t.test('no worker until the first task; stopped after the idle period; the next task starts a fresh one, and one that arrives while it stops is not lost', async t => {
  const IDLE_MS = 300
  let duringStop: Promise<TaskOutcome> | undefined
  let stopAt = 0
  const w = executor(t, {
    idleStopMs: IDLE_MS,
    onEvent: (e, ex) => {
      if (e.kind === 'stopping') stopAt = performance.now()
      // The second time it stops, a task arrives at that very moment.
      if (e.kind === 'stopping' && w.events.filter(x => x.kind === 'stopping').length === 2) duringStop = quick(ex)
    },
  })
  const { ex } = w
  t.equal(ex.workerPid, undefined, 'no worker at start')
  t.same(w.events, [], 'none started')
  t.match({ backend: ex.backend, expected: ex.backendExpected }, { backend: expectedBackend('auto'), expected: true }, 'the backend is only expected so far')

  const first = await quick(ex)
  t.ok(first.timings.start! > 0, `the first task waited ${first.timings.start} ms for the worker to start (timings.start)`)
  t.same(first.outputs.length, 1, 'and ran')
  const pid1 = ex.workerPid!
  t.ok(pid1 > 0 && alive(pid1))
  t.equal(ex.backendExpected, false, 'the worker confirmed its backend')
  const second = await quick(ex)
  const idleFrom = performance.now()
  t.equal(second.timings.start, undefined, 'a task on a running worker waits for no start')
  t.equal(ex.workerPid, pid1, 'same worker')

  const stopped = await w.next(e => e.kind === 'exit' && e.pid === pid1)
  t.match(stopped, { why: 'idle' }, 'stopped for idleness')
  // timers may fire a little early, and idleFrom is read after the timer was armed
  t.ok(stopAt - idleFrom >= IDLE_MS / 2, `not before the idle period (${Math.round(stopAt - idleFrom)} ms of ${IDLE_MS})`)
  t.notOk(alive(pid1), 'the process is gone')
  t.equal(ex.workerPid, undefined)

  const third = await quick(ex)
  const pid2 = ex.workerPid!
  t.ok(third.timings.start! > 0, 'the next task started a fresh worker')
  t.not(pid2, pid1)

  // It goes idle again; a task arrives as it is told to stop.
  await w.next(e => e.kind === 'exit' && e.pid === pid2)
  t.ok(duringStop, 'a task was sent while the worker stopped')
  const during = await duringStop!
  t.equal(during.outputs.length, 1, 'that task ran')
  t.ok(during.timings.start! > 0, 'on a fresh worker')
  const pid3 = ex.workerPid!
  t.not(pid3, pid2)
  t.same(
    w.kinds(),
    ['starting', 'ready', 'stopping', 'exit:idle', 'starting', 'ready', 'stopping', 'exit:idle', 'starting', 'ready'],
    'the fresh worker was forked only once the stopping one had exited',
  )
  t.equal(w.backendChanges(), 1, 'the backend was reported once: when the first worker confirmed it')
})

t.test('two tasks while the worker starts: one worker runs both; a worker that dies while idle is replaced by the next task', async t => {
  const w = executor(t, { idleStopMs: 60_000 })
  const { ex } = w
  const [a, b] = await Promise.all([quick(ex), quick(ex)])
  t.equal(a.outputs.length + b.outputs.length, 2, 'both ran')
  t.same(w.kinds(), ['starting', 'ready'], 'one worker started')
  t.ok(a.timings.start! > 0)
  t.equal(b.timings.start, undefined, 'the second found it running')

  const pid = ex.workerPid!
  process.kill(pid, 'SIGKILL')
  t.match(await w.next(e => e.kind === 'exit'), { why: 'crashed', pid }, 'reported as a crash')
  t.equal(ex.workerPid, undefined)
  const c = await quick(ex)
  t.ok(c.timings.start! > 0, 'the next task started a fresh worker')
  t.not(ex.workerPid, pid)
})

t.test('closed while the worker starts (the agent stops): the task is cancelled at once and the worker killed', async t => {
  const ac = new AbortController()
  let closing: Promise<void> | undefined
  const w = executor(t, {
    idleStopMs: 60_000,
    onEvent: (e, ex) => {
      if (e.kind !== 'starting') return
      // As the task runner does: abort the running task, then close the executor.
      ac.abort()
      closing = ex.close()
    },
  })
  await t.rejects(quick(w.ex, ac.signal), { code: 'CANCELLED' })
  await closing
  const exit = await w.next(e => e.kind === 'exit')
  t.match(exit, { why: 'closed' })
  t.notOk(alive(exit.pid!), 'the starting worker is gone')
  t.same(w.kinds(), ['starting', 'exit:closed'], 'it never became ready')
  await t.rejects(quick(w.ex), { code: 'INTERNAL', message: /closed/ })
})

t.test('idleStopMs 0: the worker starts with the executor and the first task does not wait for it', async t => {
  const w = executor(t, { idleStopMs: 0 })
  const ready = await w.next(e => e.kind === 'ready')
  t.equal(w.ex.backendExpected, false)
  const out = await quick(w.ex)
  t.equal(out.timings.start, undefined, 'no start on the task')
  t.equal(w.ex.workerPid, ready.pid)
})
