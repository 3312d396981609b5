// Test executors for the task queue: the tests decide when each task finishes, and a
// task can succeed, fail, crash, hang (ignore its abort signal) or return too much.
// Params: { label: string, mode?: Mode }. Each label is one task's handle in a test.

import { createHash } from 'node:crypto'
import { CairnError } from '../../protocol/errors.js'
import type { TaskExecutor, TaskOutcome, TaskRunContext, TaskType } from '../../agent/task/executor-port.js'

type Mode = 'ok' | 'wait' | 'hang' | 'crash' | 'fail' | 'big' | 'no-space' | 'cannot' | 'defiant' | 'flood' | 'bad-hash' | 'bigint'
const MODES: readonly Mode[] = ['ok', 'wait', 'hang', 'crash', 'fail', 'big', 'no-space', 'cannot', 'defiant', 'flood', 'bad-hash', 'bigint']
export interface TestParams {
  label: string
  mode: Mode
}

const sha = (s: string) => createHash('sha256').update(s).digest('hex')

export class ControlledExecutor implements TaskExecutor<TestParams> {
  readonly backend = 'test'
  /** Labels in the order their runs started (a label twice = ran twice). */
  readonly runs: string[] = []
  /** Labels whose run saw its abort signal. */
  readonly aborted: string[] = []
  private readonly gates = new Map<string, () => void>()
  private readonly startWaiters = new Map<string, Array<() => void>>()

  constructor(readonly type: TaskType) {}

  parse(params: unknown): TestParams {
    const p = params as Partial<TestParams> | null
    if (typeof p !== 'object' || p === null || typeof p.label !== 'string' || p.label.length === 0) throw new CairnError('BAD_REQUEST', 'params.label: a non-empty string is required')
    const mode = p.mode ?? 'ok'
    if (!MODES.includes(mode)) throw new CairnError('BAD_REQUEST', `params.mode: unknown ${String(mode)}`)
    return { label: p.label, mode }
  }

  admit(p: TestParams) {
    if (p.mode === 'no-space') return { ok: false as const, code: 'NO_SPACE' as const, message: 'cache quota reached' }
    if (p.mode === 'cannot') return { ok: false as const, code: 'UNSUPPORTED' as const, message: 'this model needs a GPU' }
    return { ok: true as const }
  }

  async run(p: TestParams, ctx: TaskRunContext): Promise<TaskOutcome> {
    this.runs.push(p.label)
    for (const w of this.startWaiters.get(p.label) ?? []) w()
    this.startWaiters.delete(p.label)
    ctx.progress(0.5, `working on ${p.label}`)
    ctx.signal.addEventListener('abort', () => this.aborted.push(p.label), { once: true })
    switch (p.mode) {
      case 'crash':
        throw new Error('executor crashed')
      case 'fail':
        throw new CairnError('CONTENT_MISMATCH', 'origin served the wrong bytes')
      case 'hang':
        // Ignores the signal on purpose: the queue must close the task anyway.
        return new Promise<TaskOutcome>(() => undefined)
      case 'defiant':
        // Answers the abort with a full result, as a careless executor would.
        return new Promise<TaskOutcome>(resolve => ctx.signal.addEventListener('abort', () => resolve(outcome(p)), { once: true }))
      case 'flood':
        for (let i = 0; i < 1000; i++) {
          ctx.progress(1)
          ctx.progress(Number.NaN)
        }
        break
      case 'bad-hash':
        return { ...outcome(p), inputs: [{ name: 'label', sha256: 'NOT-A-HASH', bytes: 1 }], timings: { run: Number.NaN } }
      case 'bigint':
        return { ...outcome(p), result: { n: 1n } as never }
      case 'wait':
        await new Promise<void>((resolve, reject) => {
          if (ctx.signal.aborted) return reject(ctx.signal.reason)
          this.gates.set(p.label, resolve)
          ctx.signal.addEventListener('abort', () => reject(ctx.signal.reason), { once: true })
        })
        break
      default:
        break
    }
    ctx.progress(1)
    return outcome(p)
  }

  /** Lets a waiting task finish. */
  release(label: string): void {
    const g = this.gates.get(label)
    if (!g) throw new Error(`${label} is not waiting`)
    this.gates.delete(label)
    g()
  }

  /** Resolves when the run of `label` has started. */
  started(label: string): Promise<void> {
    if (this.runs.includes(label)) return Promise.resolve()
    return new Promise(r => this.startWaiters.set(label, [...(this.startWaiters.get(label) ?? []), r]))
  }
}

function outcome(p: TestParams): TaskOutcome {
  const echo = `echo:${p.label}`
  return {
    inputs: [{ name: 'label', sha256: sha(p.label), bytes: Buffer.byteLength(p.label) }],
    outputs: [{ name: 'echo', sha256: sha(echo), bytes: Buffer.byteLength(echo) }],
    result: p.mode === 'big' ? { blob: 'x'.repeat(200_000) } : { echo },
    backend: 'test',
    timings: { run: 1 },
    resources: { cpuMs: 1 },
  }
}

export function testExecutors(): { inference: ControlledExecutor; cache: ControlledExecutor; all: ControlledExecutor[] } {
  const inference = new ControlledExecutor('inference')
  const cache = new ControlledExecutor('cache')
  return { inference, cache, all: [inference, cache] }
}
