// One job per key however many callers wait for it: the content store's downloads,
// where four readers of the same missing object must cause one fetch, not four.
// The job runs under its own AbortSignal, aborted only when every waiter has given up;
// a caller arriving after that starts a fresh job instead of joining one being torn down.

import { CairnError } from '../../protocol/errors.js'

interface Job<T> {
  done: Promise<T>
  waiters: number
  ctl: AbortController
}

export class SharedJobs<T> {
  private readonly jobs = new Map<string, Job<T>>()

  get size(): number {
    return this.jobs.size
  }

  /** Waits for the job under `key`, starting it with `start` when none is running.
   * `started` says whether this call started it. Rejects with DOWNLOAD "cancelled" as soon
   * as `signal` aborts, whatever the job does. */
  join(key: string, start: (signal: AbortSignal) => Promise<T>, signal: AbortSignal): { started: boolean; result: Promise<T> } {
    signal.throwIfAborted()
    let job = this.jobs.get(key)
    const started = job === undefined || job.ctl.signal.aborted
    if (job === undefined || started) {
      const ctl = new AbortController()
      const j: Job<T> = { done: Promise.resolve(undefined as T), waiters: 0, ctl }
      j.done = start(ctl.signal).finally(() => {
        if (this.jobs.get(key) === j) this.jobs.delete(key)
      })
      // Every waiter may leave before it settles: its rejection must not go unhandled.
      j.done.catch(() => undefined)
      this.jobs.set(key, j)
      job = j
    }
    const j = job
    j.waiters++
    const result = new Promise<T>((resolve, reject) => {
      let left = false
      const leave = () => {
        if (left) return false
        left = true
        signal.removeEventListener('abort', onAbort)
        j.waiters--
        return true
      }
      const onAbort = () => {
        if (!leave()) return
        if (j.waiters === 0) j.ctl.abort(signal.reason)
        reject(new CairnError('DOWNLOAD', 'cancelled'))
      }
      signal.addEventListener('abort', onAbort, { once: true })
      j.done.then(
        v => leave() && resolve(v),
        e => leave() && reject(e),
      )
    })
    return { started, result }
  }

  abortAll(reason: unknown): void {
    for (const j of this.jobs.values()) j.ctl.abort(reason)
  }
}
