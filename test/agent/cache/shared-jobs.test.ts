// SharedJobs on its own: one job per key for every waiter, a job stopped only when all
// of its waiters left, and a caller arriving after that gets a fresh job, not a corpse.

import t from 'tap'
import { SharedJobs } from '../../../agent/cache/shared-jobs.js'

/** A job the test finishes by hand; records the signal it ran under. */
function manual() {
  const runs: Array<{ signal: AbortSignal; finish: (v: string) => void }> = []
  const start = (signal: AbortSignal) =>
    new Promise<string>((resolve, reject) => {
      runs.push({ signal, finish: resolve })
      signal.addEventListener('abort', () => reject(new Error('job aborted')), { once: true })
    })
  return { runs, start }
}

t.test('waiters share one job; it stops only when the last one leaves', async t => {
  const jobs = new SharedJobs<string>()
  const m = manual()
  const a = new AbortController()
  const b = new AbortController()
  const ja = jobs.join('k', m.start, a.signal)
  const jb = jobs.join('k', m.start, b.signal)
  t.same([ja.started, jb.started, m.runs.length], [true, false, 1], 'one job')
  a.abort()
  await t.rejects(ja.result, { code: 'DOWNLOAD', message: 'cancelled' })
  t.equal(m.runs[0]!.signal.aborted, false, 'b still waits: the job goes on')
  m.runs[0]!.finish('done')
  t.equal(await jb.result, 'done')
  t.equal(jobs.size, 0, 'forgotten once settled')
})

t.test('a caller arriving after every waiter left starts a fresh job', async t => {
  const jobs = new SharedJobs<string>()
  const m = manual()
  const a = new AbortController()
  const ja = jobs.join('k', m.start, a.signal)
  a.abort()
  await t.rejects(ja.result, { message: 'cancelled' })
  t.equal(m.runs[0]!.signal.aborted, true, 'the abandoned job was stopped')
  // Joined before the stopped job's rejection has settled: must not inherit it.
  const jc = jobs.join('k', m.start, new AbortController().signal)
  t.equal(jc.started, true)
  t.equal(m.runs.length, 2)
  await new Promise(r => setImmediate(r))
  t.equal(jobs.size, 1, "the old job's cleanup does not remove the new one")
  m.runs[1]!.finish('fresh')
  t.equal(await jc.result, 'fresh')
})

t.test('a job failing with nobody waiting is not an unhandled rejection', async t => {
  const jobs = new SharedJobs<string>()
  const a = new AbortController()
  const ja = jobs.join('k', () => new Promise((_, reject) => setImmediate(() => reject(new Error('late failure')))), a.signal)
  a.abort()
  await t.rejects(ja.result, { message: 'cancelled' })
  await new Promise(r => setTimeout(r, 10))
  t.pass('no unhandled rejection (tap would fail the file)')
})
