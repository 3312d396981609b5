// The task queue's own cost per task: a no-op executor called directly vs the same
// executor through TaskService.runLocal (admission, SQLite rows, signing, the receipt
// written with the final state in one FULL-sync transaction). Same process, same disk,
// same run. Standalone: node --import tsx bench/task-queue.ts [N]
// (not yet part of npm run bench; bench/run.ts can call benchTaskQueue()).

import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Value } from '@sinclair/typebox/value'
import { systemClock } from '../protocol/clock.js'
import { TasksSchema, type Config } from '../agent/config/config-schema.js'
import { generateKeyPair } from '../protocol/keys.js'
import { LocalBus } from '../agent/core/local-bus.js'
import { createLogger, LogRing } from '../protocol/log.js'
import { Metrics } from '../agent/core/metrics.js'
import { MsgClass, Outbox } from '../agent/core/outbox.js'
import { newId } from '../protocol/ids.js'
import { ReplayGuard } from '../protocol/replay-guard.js'
import { openStateDb } from '../agent/core/state-db.js'
import { TaskService } from '../agent/task/task-service.js'
import { ControlledExecutor } from '../test/helpers/task-executors.js'

export async function benchTaskQueue(n = 300): Promise<{ n: number; directMsPerTask: number; queueMsPerTask: number; overheadMs: number; oneDurableWriteMs: number }> {
  const dir = mkdtempSync(join(tmpdir(), 'cairn-bench-tasks-'))
  const db = openStateDb(dir)
  const outbox = new Outbox(db, { clock: systemClock, maxBytes: 1e9, lazyWriteMs: 30_000, mustKeepDays: 30 })
  const ex = new ControlledExecutor('inference')
  const config = { ...(Value.Default(TasksSchema, {}) as Config['tasks']), maxQueue: n + 1 }
  const svc = new TaskService({
    db,
    outbox,
    clock: systemClock,
    log: createLogger({ level: 'warn', ring: new LogRing(10) }),
    metrics: new Metrics(),
    identity: generateKeyPair(),
    fleet: 'bench',
    config,
    dispatchers: [],
    isOperator: () => false,
    replay: new ReplayGuard(db, 1000),
    skewMs: 1000,
    maxTtlMs: 86_400_000,
    executors: [ex],
    telemetry: () => undefined,
    bus: new LocalBus(),
    publishQuick: () => undefined,
  })
  svc.start()
  try {
    let t0 = performance.now()
    for (let i = 0; i < n; i++) await ex.run({ label: `d${i}`, mode: 'ok' }, { signal: new AbortController().signal, deadline: Date.now() + 10_000, progress: () => undefined })
    const direct = (performance.now() - t0) / n
    t0 = performance.now()
    for (let i = 0; i < n; i++) await svc.runLocal('inference', { label: `q${i}` })
    const queued = (performance.now() - t0) / n
    // The floor: one durable (fsynced) outbox record, which every receipt needs.
    t0 = performance.now()
    for (let i = 0; i < n; i++) outbox.enqueue({ id: newId(), cls: MsgClass.reply, topic: 'bench', payload: Buffer.alloc(600) })
    const write = (performance.now() - t0) / n
    const r = (x: number) => Math.round(x * 1000) / 1000
    return { n, directMsPerTask: r(direct), queueMsPerTask: r(queued), overheadMs: r(queued - direct), oneDurableWriteMs: r(write) }
  } finally {
    await svc.stop()
    outbox.close()
    db.close()
    rmSync(dir, { recursive: true, force: true })
  }
}

if (process.argv[1] && import.meta.url === new URL(`file://${process.argv[1]}`).href) {
  console.log(JSON.stringify(await benchTaskQueue(Number(process.argv[2] ?? 300))))
}
