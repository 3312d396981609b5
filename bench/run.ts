// Benchmarks of the bundled agent (dist/cairn.mjs), each against a baseline measured in
// the same run, because the machine is shared and noisy: ratios, not absolute figures,
// are what to compare between runs.
//
//   npm run bench                 full run (about 8 minutes, 5 of them bench/proofs.ts)
//   BENCH_QUICK=1 npm run bench   quick run (about 3 minutes)
//   BENCH_ONLY=proofs npm run bench   only the named benches (comma-separated); their
//                                 rows and details replace those in bench/results.json
//   BENCH_PROOF_LOAD=0            proofs: the verify and pipeline rows only, without the
//                                 devices-against-a-validator run
//
// Everything runs on 127.0.0.1 and in temp dirs; each benchmark starts and stops its own
// Mosquitto (test/helpers/broker.ts) and every child process is killed at the end.
// Prints a table and writes bench/results.json.

import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { loadavg, tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { createInterface } from 'node:readline'
import mqtt, { type MqttClient } from 'mqtt'
import { startBroker, type TestBroker } from '../test/helpers/broker.js'
import { openStateDb } from '../agent/core/state-db.js'
import { MsgClass, Outbox } from '../agent/core/outbox.js'
import { loadOrCreateIdentity } from '../protocol/identity.js'
import { systemClock } from '../protocol/clock.js'
import { newId } from '../protocol/ids.js'
import { benchProofs } from './proofs.js'
import { benchCache } from './cache.js'
import { benchInference } from './inference.js'
import { benchOsWrite } from './os-write.js'
import { benchFleet } from './fleet.js'
import { localInfer, type TimedTask } from './local-infer.js'
import { treeSample, type TreeSample } from './process-tree.js'

const QUICK = process.env.BENCH_QUICK === '1'
const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..')
const BUNDLE = join(ROOT, 'dist', 'cairn.mjs')
const BASELINE_IDLE = join(ROOT, 'bench', 'baseline-idle.mjs')
const BASELINE_PUBLISH = join(ROOT, 'bench', 'baseline-publish.mjs')
const CFG = {
  warmupS: 10,
  idleWindowS: QUICK ? 20 : 60,
  fastWindowS: QUICK ? 10 : 20,
  drainN: 10_000,
  drainRounds: QUICK ? 1 : 3,
  startupRepeats: 5,
}
const CLK_TCK = 100 // USER_HZ on Linux
const DAY_S = 86_400

// ---------------------------------------------------------------- processes and temp dirs

const children = new Set<ChildProcess>()
const brokers = new Set<TestBroker>()
const tempDirs: string[] = []

function tmp(prefix: string): string {
  const d = mkdtempSync(join(tmpdir(), prefix))
  tempDirs.push(d)
  return d
}

interface Proc {
  child: ChildProcess
  spawnedAt: number
  /** resolves with Date.now() when a stdout line matches */
  waitLine(match: (line: string) => boolean, timeoutMs: number): Promise<number>
  lines: string[]
}

function start(args: string[]): Proc {
  const spawnedAt = performance.now()
  const child = spawn(process.execPath, args, { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] })
  children.add(child)
  child.once('exit', () => children.delete(child))
  const lines: string[] = []
  const waiters: Array<{ match: (l: string) => boolean; resolve: (t: number) => void }> = []
  createInterface({ input: child.stdout! }).on('line', line => {
    const t = performance.now()
    if (lines.length < 2000) lines.push(line)
    for (const w of [...waiters]) {
      if (w.match(line)) {
        waiters.splice(waiters.indexOf(w), 1)
        w.resolve(t)
      }
    }
  })
  let stderr = ''
  child.stderr!.on('data', d => (stderr = (stderr + String(d)).slice(-2000)))
  return {
    child,
    spawnedAt,
    lines,
    waitLine: (match, timeoutMs) =>
      new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`pid ${child.pid}: no matching output within ${timeoutMs} ms\n${lines.slice(-5).join('\n')}\n${stderr}`)), timeoutMs)
        waiters.push({
          match,
          resolve: t => {
            clearTimeout(timer)
            resolve(t)
          },
        })
      }),
  }
}

function startAgent(url: string, stateDir: string, extra: string[] = []): Proc {
  return start([BUNDLE, 'agent', '--broker', url, '--fleet', 'bench', '--state-dir', stateDir, '--health-port', '0', ...extra])
}

const isConnectedLog = (line: string) => line.includes('"connected to broker"')

async function stopProc(p: ChildProcess, graceMs = 5000): Promise<void> {
  if (p.exitCode !== null || p.signalCode !== null) return
  await new Promise<void>(resolve => {
    const timer = setTimeout(() => p.kill('SIGKILL'), graceMs)
    p.once('exit', () => {
      clearTimeout(timer)
      resolve()
    })
    p.kill('SIGTERM')
  })
}

async function cleanup(): Promise<void> {
  await Promise.all([...children].map(c => stopProc(c)))
  await Promise.all([...brokers].map(b => b.close()))
  brokers.clear()
  for (const d of tempDirs.splice(0)) rmSync(d, { recursive: true, force: true })
}

process.on('exit', () => {
  for (const c of children) c.kill('SIGKILL')
})

async function broker(extraConfig?: string): Promise<TestBroker> {
  const b = await startBroker(extraConfig ? { extraConfig } : {})
  brokers.add(b)
  return b
}

async function closeBroker(b: TestBroker): Promise<void> {
  await b.close()
  brokers.delete(b)
}

const sleep = (ms: number) => new Promise(r => setTimeout(r, ms))

// ---------------------------------------------------------------- /proc readers

function dirBytes(dir: string): number {
  let total = 0
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name)
    total += e.isDirectory() ? dirBytes(p) : statSync(p).size
  }
  return total
}

interface Window {
  /** whole process tree (the process and its children), summed */
  rssMbMean: number
  rssMbMax: number
  pssMbMean: number | undefined
  pssMbMax: number | undefined
  /** most processes seen in the tree */
  procsMax: number
  cpuPercent: number
  writeBytes: number | undefined
  wchar: number | undefined
  dirGrowth: number | undefined
  seconds: number
}

/** Samples each process's whole tree (it and its children: the agent and its inference
 * worker) once a second for `seconds`; returns one summary per tree. */
async function observe(procs: Array<{ pid: number; dir?: string }>, seconds: number): Promise<Window[]> {
  const t0 = performance.now()
  const first = procs.map(p => treeSample(p.pid))
  const dir0 = procs.map(p => (p.dir ? dirBytes(p.dir) : undefined))
  const samples: TreeSample[][] = procs.map((_, i) => [first[i]!])
  let last = first
  for (let s = 0; s < seconds; s++) {
    await sleep(1000)
    last = procs.map(p => treeSample(p.pid))
    last.forEach((x, i) => samples[i]!.push(x))
  }
  const dt = (performance.now() - t0) / 1000
  const meanMb = (xs: number[]) => xs.reduce((x, y) => x + y, 0) / xs.length / 1024
  return procs.map((p, i) => {
    const a = first[i]!
    const b = last[i]!
    const d0 = dir0[i]
    const r = samples[i]!.map(x => x.rssKb)
    const pss = samples[i]!.every(x => x.pssKb !== undefined) ? samples[i]!.map(x => x.pssKb!) : undefined
    return {
      rssMbMean: meanMb(r),
      rssMbMax: Math.max(...r) / 1024,
      pssMbMean: pss && meanMb(pss),
      pssMbMax: pss && Math.max(...pss) / 1024,
      procsMax: Math.max(...samples[i]!.map(x => x.procs)),
      cpuPercent: ((b.cpuTicks - a.cpuTicks) / CLK_TCK / dt) * 100,
      writeBytes: a.writeBytes !== undefined && b.writeBytes !== undefined ? b.writeBytes - a.writeBytes : undefined,
      wchar: a.wchar !== undefined && b.wchar !== undefined ? b.wchar - a.wchar : undefined,
      dirGrowth: p.dir && d0 !== undefined ? dirBytes(p.dir) - d0 : undefined,
      seconds: dt,
    }
  })
}

// ---------------------------------------------------------------- results

type Verdict = 'pass' | 'FAIL' | 'info'
interface Row {
  bench: string
  figure: string
  value: number
  unit: string
  baseline?: number | undefined
  ratio?: number | undefined
  goal?: string
  verdict: Verdict
  note?: string
}
const rows: Row[] = []
function row(r: Row): void {
  rows.push(r)
}

const fmt = (n: number | undefined, digits = 2) => (n === undefined || !Number.isFinite(n) ? '-' : Math.abs(n) >= 1000 ? n.toFixed(0) : n.toFixed(digits))
const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b)
  const m = s.length >> 1
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2
}
const mb = (bytes: number) => bytes / 1024 / 1024

// ---------------------------------------------------------------- consumer

interface Consumer {
  client: MqttClient
  close(): Promise<void>
}

async function consumer(url: string, filter: string, onMessage: (topic: string, payload: Buffer, retained: boolean) => void): Promise<Consumer> {
  const client = mqtt.connect(url, {
    protocolVersion: 5,
    clientId: `bench-consumer-${newId()}`,
    clean: false,
    properties: { sessionExpiryInterval: 3600 },
    reconnectPeriod: 1000,
  })
  client.on('message', (topic, payload, packet) => onMessage(topic, payload, packet.retain))
  await new Promise<void>((resolve, reject) => {
    client.once('connect', () => resolve())
    client.once('error', reject)
  })
  await client.subscribeAsync(filter, { qos: 1 })
  // Session expiry 0 on DISCONNECT: the broker forgets the session instead of queueing
  // later benchmarks' messages for it.
  return { client, close: () => new Promise<void>(resolve => client.end(false, { properties: { sessionExpiryInterval: 0 } }, () => resolve())) }
}

// ---------------------------------------------------------------- 1 + 2: idle RSS, PSS, CPU, bytes written

const isWorkerReadyLog = (line: string) => line.includes('"inference worker ready"')

/** Polls until the tree under `pid` holds `procs` processes; ms waited. */
async function untilTree(pid: number, procs: number, timeoutMs: number): Promise<number> {
  const t0 = performance.now()
  while (treeSample(pid).procs !== procs) {
    if (performance.now() - t0 > timeoutMs) throw new Error(`pid ${pid}: its tree did not reach ${procs} process(es) within ${timeoutMs} ms`)
    await sleep(100)
  }
  return performance.now() - t0
}

/** Idle footprint of the whole process tree (agent + inference worker) against bare node
 * with one mqtt.js connection; the same agent with its worker resident (idleStopS=0, what
 * every agent did before the worker started on demand); the first inference task's
 * latency when the worker must start first; and the tree after an idle stop. */
async function benchIdle(): Promise<Record<string, unknown>> {
  const b = await broker()
  const dirDefault = tmp('cairn-bench-idle-')
  const dirEager = tmp('cairn-bench-eager-')
  const dirResident = tmp('cairn-bench-resident-')
  const agent = startAgent(b.url, dirDefault)
  const eager = startAgent(b.url, dirEager, ['--set', 'outbox.lazyWriteMs=0'])
  const resident = startAgent(b.url, dirResident, ['--set', 'tasks.inference.idleStopS=0'])
  const base = start([BASELINE_IDLE, b.url])
  await Promise.all([
    agent.waitLine(isConnectedLog, 20_000),
    eager.waitLine(isConnectedLog, 20_000),
    resident.waitLine(isConnectedLog, 20_000),
    resident.waitLine(isWorkerReadyLog, 60_000),
    base.waitLine(l => l === 'connected', 20_000),
  ])
  await sleep(CFG.warmupS * 1000 - (performance.now() - agent.spawnedAt))
  console.log(`  idle window ${CFG.idleWindowS} s (telemetry every 10 s)…`)
  const [wa, we, wb, wr] = await observe(
    [{ pid: agent.child.pid!, dir: dirDefault }, { pid: eager.child.pid!, dir: dirEager }, { pid: base.child.pid! }, { pid: resident.child.pid!, dir: dirResident }],
    CFG.idleWindowS,
  )
  await Promise.all([eager, base].map(p => stopProc(p.child)))

  // The first inference task after that idle minute: the default agent must start its
  // worker; the resident one has it up. Both load the demo model for it.
  console.log('  first inference task: worker started on demand vs resident…')
  const apiDefault = await localInfer(dirDefault)
  const apiResident = await localInfer(dirResident)
  const cold = await apiDefault.run()
  const firstResident = await apiResident.run()
  const warm: TimedTask[] = []
  for (let i = 0; i < 5; i++) warm.push(await apiDefault.run())
  apiDefault.close()
  apiResident.close()
  await Promise.all([agent, resident].map(p => stopProc(p.child)))

  // The idle stop: a short idleStopS, the tree before the first task, after the stop,
  // and the task that starts the worker again.
  const idleStopS = 2
  const dirShort = tmp('cairn-bench-idlestop-')
  const short = startAgent(b.url, dirShort, ['--set', `tasks.inference.idleStopS=${idleStopS}`])
  await short.waitLine(isConnectedLog, 20_000)
  await sleep(3000)
  console.log(`  idle stop (idleStopS=${idleStopS})…`)
  const sampleS = QUICK ? 3 : 5
  const [beforeTask] = await observe([{ pid: short.child.pid! }], sampleS)
  const apiShort = await localInfer(dirShort)
  const shortFirst = await apiShort.run()
  const stoppedAfterMs = await untilTree(short.child.pid!, 1, 60_000)
  const [afterStop] = await observe([{ pid: short.child.pid! }], sampleS)
  const restart = await apiShort.run()
  apiShort.close()
  await stopProc(short.child)

  // Short, separate measurement at a 1 s period: enough samples for a per-sample figure.
  const dirFastD = tmp('cairn-bench-fast-')
  const dirFastE = tmp('cairn-bench-fast-eager-')
  const fastD = startAgent(b.url, dirFastD, ['--telemetry-period', '1'])
  const fastE = startAgent(b.url, dirFastE, ['--telemetry-period', '1', '--set', 'outbox.lazyWriteMs=0'])
  await Promise.all([fastD.waitLine(isConnectedLog, 20_000), fastE.waitLine(isConnectedLog, 20_000)])
  await sleep(3000)
  console.log(`  telemetry-period 1 window ${CFG.fastWindowS} s…`)
  const [fd, fe] = await observe(
    [
      { pid: fastD.child.pid!, dir: dirFastD },
      { pid: fastE.child.pid!, dir: dirFastE },
    ],
    CFG.fastWindowS,
  )
  await Promise.all([fastD, fastE].map(p => stopProc(p.child)))
  await closeBroker(b)

  const w = { agent: wa!, eager: we!, base: wb!, resident: wr!, fastDefault: fd!, fastEager: fe! }
  const load = loadavg()
    .map(x => x.toFixed(2))
    .join(' ')
  const tree = (x: Window) => `${x.procsMax} process${x.procsMax === 1 ? '' : 'es'}`
  const deltaMb = w.agent.rssMbMean - w.base.rssMbMean
  row({
    bench: '1 idle',
    figure: 'RSS, whole tree (mean over window)',
    value: w.agent.rssMbMean,
    unit: 'MB',
    baseline: w.base.rssMbMean,
    ratio: w.agent.rssMbMean / w.base.rssMbMean,
    verdict: 'info',
    note: `agent and its children, ${tree(w.agent)} (no inference worker until a task); max ${fmt(w.agent.rssMbMax)} MB; baseline = bare node + 1 mqtt.js connection; load average ${load}`,
  })
  row({ bench: '1 idle', figure: 'RSS delta vs baseline, whole tree', value: deltaMb, unit: 'MB', goal: '<= +20 MB', verdict: deltaMb <= 20 ? 'pass' : 'FAIL' })
  if (w.agent.pssMbMean !== undefined && w.base.pssMbMean !== undefined)
    row({
      bench: '1 idle',
      figure: 'PSS, whole tree (mean over window)',
      value: w.agent.pssMbMean,
      unit: 'MB',
      baseline: w.base.pssMbMean,
      ratio: w.agent.pssMbMean / w.base.pssMbMean,
      verdict: 'info',
      note: `/proc/<pid>/smaps_rollup summed over the tree: shared pages split between the processes that map them; delta ${fmt(w.agent.pssMbMean - w.base.pssMbMean)} MB`,
    })
  row({
    bench: '1 idle',
    figure: 'RSS, whole tree, worker resident (idleStopS=0)',
    value: w.resident.rssMbMean,
    unit: 'MB',
    baseline: w.base.rssMbMean,
    ratio: w.resident.rssMbMean / w.base.rssMbMean,
    verdict: 'info',
    note: `the agent as it ran before the worker started on demand, ${tree(w.resident)}: RSS delta ${fmt(w.resident.rssMbMean - w.base.rssMbMean)} MB, PSS ${fmt(w.resident.pssMbMean)} MB (delta ${fmt(w.resident.pssMbMean !== undefined && w.base.pssMbMean !== undefined ? w.resident.pssMbMean - w.base.pssMbMean : undefined)} MB), CPU ${fmt(w.resident.cpuPercent)} %`,
  })
  row({
    bench: '1 idle',
    figure: 'CPU, whole tree (one core)',
    value: w.agent.cpuPercent,
    unit: '%',
    baseline: w.base.cpuPercent,
    ratio: w.base.cpuPercent > 0 ? w.agent.cpuPercent / w.base.cpuPercent : undefined,
    goal: '<= 0.5 %',
    verdict: w.agent.cpuPercent <= 0.5 ? 'pass' : 'FAIL',
    note: `${w.agent.seconds.toFixed(0)} s window, 1/100 s tick resolution`,
  })
  const phases = (x: TimedTask) =>
    Object.entries(x.timings)
      .filter(([k]) => k !== 'total')
      .map(([k, v]) => `${k} ${fmt(v)}`)
      .join(', ')
  row({
    bench: '1 idle',
    figure: 'first inference task, worker started on demand',
    value: cold.ms,
    unit: 'ms',
    baseline: firstResident.ms,
    ratio: cold.ms / firstResident.ms,
    verdict: 'info',
    note: `demo model, one 64x64 PNG, local API infer after the idle window; receipt phases (ms): ${phases(cold)}. Baseline: the first task on the resident worker (model load, no start): ${phases(firstResident)}`,
  })
  row({
    bench: '1 idle',
    figure: 'inference task, worker warm (median of 5)',
    value: median(warm.map(x => x.ms)),
    unit: 'ms',
    verdict: 'info',
    note: `the same request again on the worker the first task started: ${warm.map(x => fmt(x.ms)).join('/')} ms`,
  })
  row({
    bench: '1 idle',
    figure: `RSS, whole tree, after the idle stop (idleStopS=${idleStopS})`,
    value: afterStop!.rssMbMean,
    unit: 'MB',
    baseline: beforeTask!.rssMbMean,
    ratio: afterStop!.rssMbMean / beforeTask!.rssMbMean,
    verdict: 'info',
    note: `baseline: the same agent before its first task; worker gone ${fmt(stoppedAfterMs / 1000)} s after the task; PSS ${fmt(beforeTask!.pssMbMean)} -> ${fmt(afterStop!.pssMbMean)} MB; the next task started it again in ${fmt(restart.ms)} ms (${phases(restart)}); first task ${fmt(shortFirst.ms)} ms`,
  })
  const idleStop = { idleStopS, beforeTask, shortFirst, stoppedAfterMs, afterStop, restart }
  const firstTask = { cold, firstResident, warm }

  // Bytes per day. Primary: /proc/PID/io write_bytes (bytes this process caused to be
  // written to the block device: SQLite DB + WAL + fsyncs; stdout logs go to a pipe and do
  // not count). Fallback: wchar (all write() calls, sockets included: an over-estimate).
  const written = (x: Window) => x.writeBytes ?? x.wchar ?? NaN
  const src = w.agent.writeBytes !== undefined ? 'write_bytes' : 'wchar'
  const perDay = (x: Window) => (written(x) / x.seconds) * DAY_S
  // 1 s period: bytes per telemetry sample, scaled to 8640 samples/day (the 10 s default).
  const perSample = (x: Window) => written(x) / x.seconds // one sample per second
  const perDayFrom1s = (x: Window) => perSample(x) * (DAY_S / 10)
  row({
    bench: '2 writes',
    figure: 'state dir writes/day, default (10 s, direct)',
    value: mb(perDay(w.agent)),
    unit: 'MB/day',
    baseline: mb(perDay(w.eager)),
    ratio: perDay(w.eager) > 0 ? perDay(w.agent) / perDay(w.eager) : undefined,
    verdict: 'info',
    note: `${src} delta ${written(w.agent)} B over ${w.agent.seconds.toFixed(0)} s x ${DAY_S}/window; baseline = same agent with outbox.lazyWriteMs=0; dir growth ${w.agent.dirGrowth} B`,
  })
  row({
    bench: '2 writes',
    figure: 'state dir writes/day, lazyWriteMs=0 (10 s, direct)',
    value: mb(perDay(w.eager)),
    unit: 'MB/day',
    verdict: 'info',
    note: `${src} delta ${written(w.eager)} B over ${w.eager.seconds.toFixed(0)} s; dir growth ${w.eager.dirGrowth} B`,
  })
  row({
    bench: '2 writes',
    figure: 'writes/day at 10 s, default (from 1 s period)',
    value: mb(perDayFrom1s(w.fastDefault)),
    unit: 'MB/day',
    baseline: mb(perDayFrom1s(w.fastEager)),
    ratio: perDayFrom1s(w.fastEager) > 0 ? perDayFrom1s(w.fastDefault) / perDayFrom1s(w.fastEager) : undefined,
    verdict: 'info',
    note: `${fmt(perSample(w.fastDefault), 0)} B/sample x 8640 samples/day; dir growth ${w.fastDefault.dirGrowth} B`,
  })
  row({
    bench: '2 writes',
    figure: 'writes/day at 10 s, lazyWriteMs=0 (from 1 s period)',
    value: mb(perDayFrom1s(w.fastEager)),
    unit: 'MB/day',
    verdict: 'info',
    note: `${fmt(perSample(w.fastEager), 0)} B/sample x 8640 samples/day; dir growth ${w.fastEager.dirGrowth} B`,
  })
  return {
    ...w,
    firstTask,
    idleStop,
    loadavg: loadavg(),
    bytesSource: src,
    derivation: 'direct: delta over the idle window x 86400/window; from 1 s: (delta/window) bytes per sample x 8640 samples/day',
  }
}

// ---------------------------------------------------------------- 3: outbox drain vs raw mqtt.js

async function drainConsumer(url: string, filter: string, prefix: string, n: number) {
  const seen = new Set<string>()
  let resolveAll!: (t: number) => void
  const all = new Promise<number>(r => (resolveAll = r))
  let total = 0
  const c = await consumer(url, filter, (_topic, payload) => {
    total++
    let id: unknown
    try {
      id = (JSON.parse(payload.toString()) as { id?: unknown }).id
    } catch {
      return
    }
    if (typeof id === 'string' && id.startsWith(prefix)) {
      seen.add(id)
      if (seen.size === n) resolveAll(performance.now())
    }
  })
  return { c, seen, all, total: () => total }
}

async function withTimeout<T>(p: Promise<T>, ms: number): Promise<T | undefined> {
  let timer: NodeJS.Timeout | undefined
  const r = await Promise.race([p, new Promise<undefined>(resolve => (timer = setTimeout(() => resolve(undefined), ms)))])
  clearTimeout(timer)
  return r
}

async function benchDrain(): Promise<Record<string, unknown>> {
  const n = CFG.drainN
  const timeoutMs = 120_000
  // Mosquitto's default max_queued_messages (1000) would drop messages queued for a
  // consumer that falls behind; raised for this benchmark only.
  const b = await broker('max_queued_messages 100000')
  const rounds: Array<Record<string, number>> = []
  let payloadBytes = 0
  for (let round = 0; round < CFG.drainRounds; round++) {
    // Fill a fresh state dir's outbox offline, as an outage would.
    const dir = tmp('cairn-bench-drain-')
    const { identity } = loadOrCreateIdentity(dir)
    const topic = `cairn/v1/bench/${identity.deviceId}/event`
    const db = openStateDb(dir)
    const outbox = new Outbox(db, { clock: systemClock, maxBytes: 64 * 1024 * 1024, lazyWriteMs: 30_000, mustKeepDays: 30 })
    const pad = 'x'.repeat(135) // ~300-byte payloads
    const fillT0 = performance.now()
    db.transaction(() => {
      for (let i = 0; i < n; i++) {
        const id = `fill-${i}-${newId()}`
        const payload = Buffer.from(JSON.stringify({ v: 1, id, device: identity.deviceId, ts: Date.now(), kind: 'bench', data: { i, pad } }))
        payloadBytes = Math.max(payloadBytes, payload.length)
        outbox.enqueue({ id, cls: MsgClass.event, topic, payload })
      }
    })()
    const depth = outbox.depth()
    outbox.close()
    db.close()
    const fillMs = performance.now() - fillT0

    // Agent: spawn the bundle on that state dir and time until the consumer has all N.
    const ac = await drainConsumer(b.url, 'cairn/v1/bench/+/event', 'fill-', n)
    const agent = startAgent(b.url, dir)
    const connectedAt = await agent.waitLine(isConnectedLog, 20_000)
    const agentDone = await withTimeout(ac.all, timeoutMs)
    const agentRecv = ac.seen.size
    await stopProc(agent.child)
    await ac.c.close()

    // Baseline: raw mqtt.js, same broker, same kind of consumer, same N and payload size.
    const bc = await drainConsumer(b.url, 'cairn/v1/bench/baseline/event', 'base-', n)
    const base = start([BASELINE_PUBLISH, b.url, 'cairn/v1/bench/baseline/event', String(n), '20', String(payloadBytes)])
    const baseConnectedAt = await base.waitLine(l => l === 'connected', 20_000)
    const baseDone = await withTimeout(bc.all, timeoutMs)
    const baseRecv = bc.seen.size
    await stopProc(base.child)
    await bc.c.close()

    const r = {
      depth,
      fillMs,
      agentReceived: agentRecv,
      agentDeliveries: ac.total(),
      agentSpawnToConnectS: (connectedAt - agent.spawnedAt) / 1000,
      agentFromConnectS: agentDone !== undefined ? (agentDone - connectedAt) / 1000 : NaN,
      agentFromSpawnS: agentDone !== undefined ? (agentDone - agent.spawnedAt) / 1000 : NaN,
      baseReceived: baseRecv,
      baseDeliveries: bc.total(),
      baseSpawnToConnectS: (baseConnectedAt - base.spawnedAt) / 1000,
      baseFromConnectS: baseDone !== undefined ? (baseDone - baseConnectedAt) / 1000 : NaN,
    }
    rounds.push(r)
    console.log(`  round ${round + 1}/${CFG.drainRounds}: agent ${fmt(r.agentFromConnectS)} s (${agentRecv}/${n}), raw mqtt.js ${fmt(r.baseFromConnectS)} s (${baseRecv}/${n})`)
  }
  await closeBroker(b)

  const med = (k: string) => median(rounds.map(r => r[k]!))
  const agentFromConnectS = med('agentFromConnectS')
  const baseFromConnectS = med('baseFromConnectS')
  const agentFromSpawnS = med('agentFromSpawnS')
  const agentRate = n / agentFromConnectS
  const baseRate = n / baseFromConnectS
  const ratio = agentRate / baseRate
  const lostAgent = Math.max(...rounds.map(r => n - r.agentReceived!))
  const lostBase = Math.max(...rounds.map(r => n - r.baseReceived!))
  const per = (k: string) => rounds.map(r => fmt(r[k])).join('/')
  const m = CFG.drainRounds > 1 ? `median of ${CFG.drainRounds}, ` : ''
  row({
    bench: '3 drain',
    figure: `drain ${n} events after outage (from CONNACK)`,
    value: agentRate,
    unit: 'msg/s',
    baseline: baseRate,
    ratio,
    goal: '>= 0.7x',
    verdict: ratio >= 0.7 ? 'pass' : 'FAIL',
    note: `${m}agent ${per('agentFromConnectS')} s vs raw mqtt.js QoS 1 loop, 20 in flight, ${per('baseFromConnectS')} s; ${payloadBytes} B payloads`,
  })
  row({
    bench: '3 drain',
    figure: 'drain incl. agent start (from spawn)',
    value: n / agentFromSpawnS,
    unit: 'msg/s',
    verdict: 'info',
    note: `${m}${fmt(agentFromSpawnS)} s; spawn to CONNACK: agent ${per('agentSpawnToConnectS')} s, baseline ${per('baseSpawnToConnectS')} s`,
  })
  row({
    bench: '3 drain',
    figure: 'lost (worst round)',
    value: lostAgent,
    unit: 'msgs',
    baseline: lostBase,
    goal: '0',
    verdict: lostAgent === 0 ? 'pass' : 'FAIL',
    note: `broker max_queued_messages 100000 (default 1000 drops for a slow consumer); consumer deliveries on the agent's event topic incl. agent.started and duplicates: ${per('agentDeliveries')}`,
  })
  return { n, payloadBytes, rounds, medians: { agentFromConnectS, baseFromConnectS, agentFromSpawnS }, agentRate, baseRate, ratio, lostAgent, lostBase, brokerConfig: 'max_queued_messages 100000' }
}

// ---------------------------------------------------------------- 4: spawn to first publish

async function benchStartup(): Promise<Record<string, unknown>> {
  const b = await broker()
  let waiter: { test: (topic: string) => boolean; resolve: (t: number) => void } | undefined
  const c = await consumer(b.url, 'cairn/v1/bench/#', (topic, _payload, retained) => {
    if (retained || !waiter || !waiter.test(topic)) return
    const w = waiter
    waiter = undefined
    w.resolve(performance.now())
  })
  const seenDevices = new Set<string>()
  const firstMessage = (test: (topic: string) => boolean) => new Promise<number>(resolve => (waiter = { test, resolve }))
  const agentMs: number[] = []
  const baseMs: number[] = []
  const firstTopics: string[] = []
  for (let i = 0; i < CFG.startupRepeats; i++) {
    // Agent: fresh state dir (new key), so a message from a device not seen before is its.
    const dir = tmp('cairn-bench-start-')
    let firstTopic = ''
    const arrived = firstMessage(topic => {
      const dev = topic.split('/')[3] ?? ''
      if (seenDevices.has(dev) || dev.startsWith('baseline')) return false
      firstTopic = topic
      return true
    })
    const agent = startAgent(b.url, dir)
    const t = await withTimeout(arrived, 30_000)
    if (t === undefined) throw new Error('agent: no message within 30 s of spawn')
    agentMs.push(t - agent.spawnedAt)
    firstTopics.push(firstTopic.split('/').slice(4).join('/'))
    seenDevices.add(firstTopic.split('/')[3] ?? '')
    await stopProc(agent.child)

    // Baseline: bare node + mqtt.js publishing one QoS 1 message on connect.
    const topic = `cairn/v1/bench/baseline-${i}/status`
    const arrivedBase = firstMessage(tp => tp === topic)
    const base = start([BASELINE_IDLE, b.url, '--once', topic])
    const tb = await withTimeout(arrivedBase, 30_000)
    if (tb === undefined) throw new Error('baseline: no message within 30 s of spawn')
    baseMs.push(tb - base.spawnedAt)
    await stopProc(base.child)
  }
  await c.close()
  await closeBroker(b)
  const ma = median(agentMs)
  const mbase = median(baseMs)
  row({
    bench: '4 startup',
    figure: `spawn to first publish (median of ${CFG.startupRepeats})`,
    value: ma,
    unit: 'ms',
    baseline: mbase,
    ratio: ma / mbase,
    verdict: 'info',
    note: `first message: ${[...new Set(firstTopics)].join(', ')}; agent ${agentMs.map(x => x.toFixed(0)).join('/')} ms, baseline ${baseMs.map(x => x.toFixed(0)).join('/')} ms; fresh state dir (key generated)`,
  })
  return { agentMs, baselineMs: baseMs, medianAgentMs: ma, medianBaselineMs: mbase, ratio: ma / mbase, firstTopics }
}

// ---------------------------------------------------------------- main

function printTable(): void {
  const header = ['bench', 'figure', 'value', 'unit', 'baseline', 'ratio', 'goal', 'result']
  const body = rows.map(r => [r.bench, r.figure, fmt(r.value), r.unit, fmt(r.baseline), r.ratio === undefined ? '-' : `${fmt(r.ratio)}x`, r.goal ?? '-', r.verdict])
  const widths = header.map((h, i) => Math.max(h.length, ...body.map(b => b[i]!.length)))
  const line = (cells: string[]) => cells.map((c, i) => (i >= 2 && i <= 5 ? c.padStart(widths[i]!) : c.padEnd(widths[i]!))).join('  ')
  console.log('\n' + line(header))
  console.log(widths.map(w => '-'.repeat(w)).join('  '))
  for (const b of body) console.log(line(b))
  console.log('\nnotes:')
  for (const r of rows) if (r.note) console.log(`  [${r.bench}] ${r.figure}: ${r.note}`)
}

async function main(): Promise<number> {
  statSync(BUNDLE) // run `npm run build` first
  const t0 = performance.now()
  console.log(`cairn bench (${QUICK ? 'quick' : 'full'}): node ${process.version}, bundle ${BUNDLE}`)
  const details: Record<string, unknown> = {}
  const proofs = () =>
    benchProofs({
      quick: QUICK,
      bundle: BUNDLE,
      row,
      tmp,
      track: child => {
        children.add(child)
        child.once('exit', () => children.delete(child))
      },
      log: line => console.log(line),
    })
  const cache = () =>
    benchCache({
      quick: QUICK,
      bundle: BUNDLE,
      row,
      tmp,
      track: child => {
        children.add(child)
        child.once('exit', () => children.delete(child))
      },
      log: line => console.log(line),
    })
  const only = process.env.BENCH_ONLY?.split(',').map(s => s.trim())
  const benches: Array<[string, () => Promise<Record<string, unknown>>]> = (
    [
      ['idle', benchIdle],
      ['drain', benchDrain],
      ['startup', benchStartup],
      ['proofs', proofs],
      ['cache', cache],
      ['inference', () => benchInference({ quick: QUICK, bundle: BUNDLE, row, tmp, track: child => children.add(child), log: line => console.log(line) })],
      ['os-write', () => benchOsWrite({ quick: QUICK, bundle: BUNDLE, row, tmp, track: child => children.add(child), log: line => console.log(line) })],
      ['fleet', () => benchFleet({ quick: QUICK, bundle: BUNDLE, row, tmp, track: child => children.add(child), log: line => console.log(line) })],
    ] as Array<[string, () => Promise<Record<string, unknown>>]>
  ).filter(([name]) => !only || only.includes(name))
  let failed = false
  for (const [name, fn] of benches) {
    console.log(`\n# ${name}`)
    try {
      details[name] = await fn()
    } catch (err) {
      failed = true
      console.error(`bench ${name} failed: ${(err as Error).stack ?? String(err)}`)
      details[name] = { error: String(err) }
      await Promise.all([...children].map(c => stopProc(c)))
    }
  }
  printTable()
  const out = join(ROOT, 'bench', 'results.json')
  let allRows: unknown[] = rows
  let allDetails: Record<string, unknown> = details
  if (only) {
    // A partial run keeps the other benches' figures from the last full run.
    const prev = JSON.parse(readFileSync(out, 'utf8')) as { rows?: Row[]; details?: Record<string, unknown> }
    const ran = new Set(rows.map(r => r.bench))
    allRows = [...(prev.rows ?? []).filter(r => !ran.has(r.bench)), ...rows]
    allDetails = { ...prev.details, ...details }
  }
  writeFileSync(
    out,
    JSON.stringify(
      { date: new Date().toISOString(), quick: QUICK, node: process.version, ...(only ? { only } : {}), config: CFG, totalS: (performance.now() - t0) / 1000, rows: allRows, details: allDetails },
      null,
      2,
    ) + '\n',
  )
  console.log(`\nwrote ${out} (${((performance.now() - t0) / 1000).toFixed(0)} s)`)
  return failed ? 1 : 0
}

let code = 1
try {
  code = await main()
} finally {
  await cleanup()
}
process.exitCode = code
