// Uptime-proof benchmarks, run by bench/run.ts (`npm run bench`):
//
//  (a) ed25519 verify rate on one core for a real heartbeat: node:crypto on the signed
//      bytes, the validator's whole checkProof path (JSON, schemas, key from the key id,
//      signature) and tweetnacl, each against `openssl speed ed25519` run in the same bench.
//  (p) the validator's pipeline (parse, verify, chain checks, store) per CPU-second
//      against openssl's verifies per CPU-second: bench/proofs-pipeline.ts.
//  (b) N simulated devices (`cairn sim`, in their own processes) at one heartbeat per
//      slot of 60 s, against one Mosquitto, with the validator as a separate process
//      (`cairn validator --slot 60`): the validator's CPU over whole slots after the ramp,
//      and accounting: every heartbeat a sim device got a PUBACK for must be in the
//      validator's store.
//
// Broker settings for (b), each a deliberate change from Mosquitto's defaults:
//  - run under `ulimit -n 65536` (it inherits the limit: 10,000 devices need 10,000
//    sockets), as are the sim processes;
//  - max_queued_messages 100000 (default 1000): the validator's session must not lose
//    heartbeats while it catches up after a burst; the default would drop them silently
//    and show up here as unaccounted (docs/validator.md names the setting for production);
//  - persistence off: a 1 s autosave of 10,000 sessions would measure the broker's disk.
// max_inflight_messages stays at its default: each device has at most a few messages in
// flight, and for MQTT 5 the validator's own receive maximum governs deliveries to it.

import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { verify as edVerify } from 'node:crypto'
import { appendFileSync, readFileSync, writeFileSync } from 'node:fs'
import { connect } from 'node:net'
import { loadavg } from 'node:os'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import Database from 'better-sqlite3'
import nacl from 'tweetnacl'
import { signEnvelope, signedBytes } from '../protocol/envelope.js'
import { newId } from '../protocol/ids.js'
import { generateKeyPair, rawPublicKey } from '../protocol/keys.js'
import { asJson, checkProof, encodeProof, ProofType, telemetryDigest, type HeartbeatBody } from '../protocol/proof-format.js'
import { validatorKey } from '../validator/validator-cli.js'
import { benchPipeline, type PipelineFigures } from './proofs-pipeline.js'
import { freePort, mosquittoPath } from '../test/helpers/broker.js'

/** Same shape as bench/run.ts's rows. */
interface BenchRow {
  bench: string
  figure: string
  value: number
  unit: string
  baseline?: number | undefined
  ratio?: number | undefined
  goal?: string
  verdict: 'pass' | 'FAIL' | 'info'
  note?: string
}

export interface BenchKit {
  quick: boolean
  bundle: string
  row(r: BenchRow): void
  tmp(prefix: string): string
  /** Registers a child so the harness kills it on exit. */
  track(child: ChildProcess): void
  log(line: string): void
}

export const CLK_TCK = 100
export const sleep = (ms: number) => new Promise(r => setTimeout(r, ms))

export async function benchProofs(kit: BenchKit): Promise<Record<string, unknown>> {
  const verify = benchVerify(kit)
  const pipeline = benchPipelineRows(kit, verify.openssl.verifyPerS)
  // BENCH_PROOF_LOAD=0 leaves out the devices-against-a-validator run (minutes).
  if (process.env.BENCH_PROOF_LOAD === '0') return { verify, pipeline }
  const load = await benchLoad(kit, verify.nodeVerifyPerS)
  return { verify, pipeline, load }
}

// ---------------------------------------------------------------- the pipeline per CPU-second

/** Interleaved repetitions of the batched pipeline (as the validator runs it) and of one
 * transaction per heartbeat (as it ran before), the median of each against openssl. */
function benchPipelineRows(kit: BenchKit, opensslVerifyPerS: number) {
  const reps = kit.quick ? 3 : 5
  const devices = kit.quick ? 1000 : 2000
  const perDevice = 6
  // Mosquitto hands one client at most 20 unacknowledged messages (max_inflight_messages),
  // so the validator's batches hold at most 20.
  const batch = 20
  kit.log(`  pipeline: ${devices} devices x ${perDevice - 1} timed heartbeats, ${reps} interleaved repetitions, batches of ${batch}…`)
  const runs: Record<'batch' | 'single', PipelineFigures[]> = { batch: [], single: [] }
  for (let i = 0; i < reps; i++) {
    for (const mode of ['batch', 'single'] as const) runs[mode].push(benchPipeline(kit.tmp('cairn-bench-pipeline-'), { devices, perDevice, batch, mode }))
  }
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!
  const load = loadavg()
    .map(x => x.toFixed(1))
    .join(' ')
  const out: Record<string, unknown> = { reps, devices, perDevice, batch, loadavg: load }
  for (const mode of ['batch', 'single'] as const) {
    const rates = runs[mode].map(r => r.perCpuS)
    const lost = runs[mode].reduce((a, r) => a + r.lost, 0)
    const value = median(rates)
    const ratio = value / opensslVerifyPerS
    const spread = `${Math.min(...rates).toFixed(0)}-${Math.max(...rates).toFixed(0)}`
    kit.row({
      bench: '5 proofs',
      figure: mode === 'batch' ? 'validator pipeline per CPU-second (batched store)' : 'validator pipeline per CPU-second, one transaction per heartbeat',
      value,
      unit: 'proofs/CPU-s',
      baseline: opensslVerifyPerS,
      ratio,
      ...(mode === 'batch' ? { goal: '>= 0.8x, 0 lost' } : {}),
      verdict: mode === 'batch' ? (ratio >= 0.8 && lost === 0 ? 'pass' : 'FAIL') : 'info',
      note: `parse + schema + verify + chain and beacon checks + SQLite store (ProofIngest, in process), CPU time (process.cpuUsage) against openssl's CPU time; median of ${reps} (${spread}), ${lost} lost; load ${load}; MQTT not included`,
    })
    out[mode] = { median: value, ratio, rates, lost }
  }
  return out
}

// ---------------------------------------------------------------- (a) verify rates

/** Operations per CPU-second of this process (openssl speed reports its own CPU time,
 * so a busy machine slows neither side's figure), run for `seconds` of wall time. */
function opsPerSecond(seconds: number, fn: () => void): number {
  for (let i = 0; i < 50; i++) fn()
  let n = 0
  const t0 = performance.now()
  const cpu0 = process.cpuUsage()
  do {
    for (let i = 0; i < 20; i++) fn()
    n += 20
  } while (performance.now() - t0 < seconds * 1000)
  const cpu = process.cpuUsage(cpu0)
  return n / ((cpu.user + cpu.system) / 1e6)
}

/** `openssl speed -seconds S ed25519`, verify/s of the 253-bit Ed25519 row. */
function opensslVerifyPerS(seconds: number): { verifyPerS: number; signPerS: number; version: string } {
  const r = spawnSync('openssl', ['speed', '-seconds', String(seconds), 'ed25519'], { encoding: 'utf8', timeout: 60_000 })
  if (r.error || r.status !== 0) throw new Error(`openssl speed failed: ${r.error?.message ?? r.stderr}`)
  const out = r.stdout + r.stderr
  const table = /^\s*253 bits EdDSA \(Ed25519\)\s+[\d.]+s\s+[\d.]+s\s+([\d.]+)\s+([\d.]+)\s*$/m.exec(out)
  const version = spawnSync('openssl', ['version'], { encoding: 'utf8' }).stdout.trim()
  if (table) return { signPerS: Number(table[1]), verifyPerS: Number(table[2]), version }
  const doing = /(\d+) 253 bits Ed25519 verify in ([\d.]+)s/.exec(out)
  if (doing) return { signPerS: NaN, verifyPerS: Number(doing[1]) / Number(doing[2]), version }
  throw new Error(`cannot parse openssl speed output:\n${out.slice(-800)}`)
}

function benchVerify(kit: BenchKit) {
  const seconds = kit.quick ? 1 : 3
  // A real heartbeat as a device signs it: one beacon cited, telemetry digest, owner.
  const key = generateKeyPair()
  const now = Date.now()
  const body: HeartbeatBody = {
    seq: 42,
    prev: 'ab'.repeat(32),
    beacons: [{ v: generateKeyPair().keyId, slot: Math.floor(now / 60_000), h: 'cd'.repeat(32) }],
    tel: telemetryDigest({ cpu: 0.12, tempC: 51.3 }),
    owner: 'payout:bench',
    period: 60,
  }
  const env = signEnvelope(key, { type: ProofType.heartbeat, id: newId(now), fleet: 'bench', sub: '*', iat: now, exp: now + 86_400_000, body: asJson(body) })
  const payload = encodeProof(env)
  const signed = signedBytes(env)
  const sig = Buffer.from(env.sig, 'base64url')
  const raw = rawPublicKey(key.publicKey)
  if (!edVerify(null, signed, key.publicKey, sig) || !nacl.sign.detached.verify(signed, sig, raw)) throw new Error('heartbeat does not verify')

  kit.log(`  ed25519 verify, ${seconds} s each: node:crypto, checkProof, tweetnacl, openssl speed…`)
  const nodeVerifyPerS = opsPerSecond(seconds, () => edVerify(null, signed, key.publicKey, sig))
  const checkProofPerS = opsPerSecond(seconds, () => checkProof(payload, ProofType.heartbeat, { fleet: 'bench', signer: key.keyId }))
  const tweetnaclPerS = opsPerSecond(seconds, () => nacl.sign.detached.verify(signed, sig, raw))
  const openssl = opensslVerifyPerS(seconds)
  const nodeRatio = nodeVerifyPerS / openssl.verifyPerS
  const src = `${signed.length} signed bytes of a ${payload.length}-byte heartbeat`
  kit.row({
    bench: '5 proofs',
    figure: 'ed25519 verify, node:crypto (one core)',
    value: nodeVerifyPerS,
    unit: 'verify/s',
    baseline: openssl.verifyPerS,
    ratio: nodeRatio,
    goal: '>= 0.8x',
    verdict: nodeRatio >= 0.8 ? 'pass' : 'FAIL',
    note: `${src}; baseline: openssl speed -seconds ${seconds} ed25519 (${openssl.version}), verify/s column`,
  })
  kit.row({
    bench: '5 proofs',
    figure: 'checkProof(heartbeat): JSON + schemas + verify',
    value: checkProofPerS,
    unit: 'verify/s',
    baseline: openssl.verifyPerS,
    ratio: checkProofPerS / openssl.verifyPerS,
    verdict: 'info',
    note: 'the validator path per heartbeat, before SQLite',
  })
  kit.row({
    bench: '5 proofs',
    figure: 'ed25519 verify, tweetnacl (one core)',
    value: tweetnaclPerS,
    unit: 'verify/s',
    baseline: openssl.verifyPerS,
    ratio: tweetnaclPerS / openssl.verifyPerS,
    verdict: 'info',
    note: 'pure JS (nacl-fast); for the browser console only',
  })
  return {
    seconds,
    signedBytes: signed.length,
    payloadBytes: payload.length,
    nodeVerifyPerS,
    checkProofPerS,
    tweetnaclPerS,
    openssl,
    ratios: { nodeOverOpenssl: nodeRatio, checkProofOverOpenssl: checkProofPerS / openssl.verifyPerS, tweetnaclOverOpenssl: tweetnaclPerS / openssl.verifyPerS },
  }
}

// ---------------------------------------------------------------- (b) devices against one validator

interface Child {
  child: ChildProcess
  lines: string[]
  stderr(): string
  waitLine(match: (line: string) => boolean, timeoutMs: number): Promise<string>
  exited: Promise<void>
}

/** `cairn sim` for `n` devices in processes of at most `perProc` each (a connection per
 * device, under a raised open-file limit), connecting `rampTotal` a second between them;
 * resolves once every one says it has ramped. Each writes its summary to its file. */
export async function spawnSims(
  kit: BenchKit,
  o: { n: number; perProc: number; rampTotal: number; dir: string; url: string; fleet: string; args: string[] },
): Promise<Array<{ c: Child; devices: number; summaryFile: string }>> {
  const nProcs = Math.ceil(o.n / o.perProc)
  const sims = Array.from({ length: nProcs }, (_, i) => {
    const devices = Math.floor(o.n / nProcs) + (i < o.n % nProcs ? 1 : 0)
    const summaryFile = join(o.dir, `sim-${i}.json`)
    const argv = ['sim', '--devices', String(devices), '--broker', o.url, '--fleet', o.fleet, '--ramp', String(o.rampTotal / nProcs), '--summary-file', summaryFile, ...o.args]
    return { c: spawnLimited(kit, [process.execPath, kit.bundle, ...argv]), devices, summaryFile }
  })
  const rampTimeoutMs = (o.n / o.rampTotal) * 1000 + 120_000
  await Promise.all(sims.map(s => s.c.waitLine(l => l.includes('"sim.ramped"'), rampTimeoutMs)))
  return sims
}

/** Spawns under a raised open-file limit (root may raise the hard limit; others get theirs). */
export function spawnLimited(kit: BenchKit, argv: string[]): Child {
  const script = 'ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"; exec "$@"'
  const child = spawn('bash', ['-c', script, 'bash', ...argv], { stdio: ['ignore', 'pipe', 'pipe'] })
  return watch(kit, child)
}

function spawnNode(kit: BenchKit, args: string[]): Child {
  return watch(kit, spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] }))
}

function watch(kit: BenchKit, child: ChildProcess): Child {
  kit.track(child)
  const lines: string[] = []
  let err = ''
  const waiters: Array<{ match: (l: string) => boolean; resolve: (l: string) => void }> = []
  const logFile = process.env.BENCH_PROOF_LOG_DIR ? join(process.env.BENCH_PROOF_LOG_DIR, `pid-${child.pid}.log`) : undefined
  createInterface({ input: child.stdout! }).on('line', line => {
    if (logFile) appendFileSync(logFile, line + '\n')
    lines.push(line)
    if (lines.length > 500) lines.shift()
    for (const w of [...waiters]) {
      if (!w.match(line)) continue
      waiters.splice(waiters.indexOf(w), 1)
      w.resolve(line)
    }
  })
  child.stderr!.on('data', d => (err = (err + String(d)).slice(-4000)))
  const exited = new Promise<void>(r => child.once('exit', () => r()))
  return {
    child,
    lines,
    stderr: () => err,
    exited,
    waitLine: (match, timeoutMs) =>
      new Promise((resolve, reject) => {
        const hit = lines.find(match)
        if (hit) return resolve(hit)
        const timer = setTimeout(() => reject(new Error(`pid ${child.pid}: no matching line within ${timeoutMs} ms\n${lines.slice(-3).join('\n')}\n${err}`)), timeoutMs)
        void exited.then(() => reject(new Error(`pid ${child.pid} exited (${child.exitCode ?? child.signalCode})\n${lines.slice(-3).join('\n')}\n${err}`)))
        waiters.push({ match, resolve: l => (clearTimeout(timer), resolve(l)) })
      }),
  }
}

export async function terminate(c: Child, graceMs: number): Promise<void> {
  if (c.child.exitCode !== null || c.child.signalCode !== null) return
  const timer = setTimeout(() => c.child.kill('SIGKILL'), graceMs)
  c.child.kill('SIGTERM')
  await c.exited
  clearTimeout(timer)
}

async function waitForPort(port: number, timeoutMs: number): Promise<void> {
  const until = Date.now() + timeoutMs
  for (;;) {
    const ok = await new Promise<boolean>(resolve => {
      const s = connect(port, '127.0.0.1')
      s.once('connect', () => (s.destroy(), resolve(true)))
      s.once('error', () => resolve(false))
    })
    if (ok) return
    if (Date.now() > until) throw new Error(`mosquitto did not listen on ${port}`)
    await sleep(50)
  }
}

export async function startMosquitto(kit: BenchKit): Promise<{ url: string; proc: Child }> {
  const bin = mosquittoPath()
  if (!bin) throw new Error('mosquitto is not installed (apt-get install mosquitto)')
  const dir = kit.tmp('cairn-bench-mosq-')
  const port = await freePort()
  const conf = join(dir, 'mosquitto.conf')
  const lines = [
    `listener ${port} 127.0.0.1`,
    'allow_anonymous true',
    'persistence false',
    'max_queued_messages 100000',
    'set_tcp_nodelay true',
    'log_dest stderr',
    'log_type error',
    'log_type warning',
  ]
  if (process.getuid?.() === 0) lines.push('user root')
  writeFileSync(conf, lines.join('\n') + '\n')
  const proc = spawnLimited(kit, [bin, '-c', conf])
  await waitForPort(port, 10_000)
  return { url: `mqtt://127.0.0.1:${port}`, proc }
}

export function sample(pid: number): { ticks: number; rssMb: number } {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
  const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  const rss = /VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1]
  return { ticks: Number(rest[11]) + Number(rest[12]), rssMb: Number(rss ?? NaN) / 1024 }
}

function openFileLimit(pid: number): string {
  try {
    return /^Max open files\s+(\S+)/m.exec(readFileSync(`/proc/${pid}/limits`, 'utf8'))?.[1] ?? '?'
  } catch {
    return '?'
  }
}

interface SimSummary {
  devices: number
  totals: { heartbeats: number; acked: number; failed: number; challenges: number; refused: number; beacons: number }
  refusedByCode: Record<string, number>
  perDevice: Array<{ id: string; acked: number; heartbeats: number }>
}

async function benchLoad(kit: BenchKit, nodeVerifyPerS: number): Promise<Record<string, unknown>> {
  const n = Number(process.env.BENCH_PROOF_DEVICES ?? (kit.quick ? 1000 : 10_000))
  const slotS = Number(process.env.BENCH_PROOF_SLOT ?? (kit.quick ? 20 : 60))
  const windowSlots = Number(process.env.BENCH_PROOF_WINDOW_SLOTS ?? (kit.quick ? 2 : 3))
  const perProc = 5000
  const nProcs = Math.ceil(n / perProc)
  const rampTotal = 200
  const jitterMs = 30_000
  // The agent caps the beacon jitter at 0.3 slot so a heartbeat still cites a fresh beacon.
  const jitterCapMs = Math.min(jitterMs, Math.floor(slotS * 300))
  const slotMs = slotS * 1000

  const { url, proc: mosq } = await startMosquitto(kit)
  const vdir = kit.tmp('cairn-bench-val-')
  const vkey = validatorKey(vdir)
  const pub = join(vdir, 'validator.key.pub')
  const validator = spawnNode(kit, [kit.bundle, 'validator', '--broker', url, '--fleet', 'bench', '--state-dir', vdir, '--slot', String(slotS), '--instance', 'bench', '--log-level', 'info'])
  await validator.waitLine(l => l.includes('"validator started"'), 20_000)

  kit.log(`  ${n} devices in ${nProcs} sim process(es), ramp ${rampTotal}/s, slot ${slotS} s, jitter ${jitterCapMs} ms…`)
  const tRamp0 = Date.now()
  const sims = await spawnSims(kit, { n, perProc, rampTotal, dir: vdir, url, fleet: 'bench', args: ['--validator-key', pub, '--period', String(2 * slotS), '--jitter', String(jitterMs)] })
  const rampS = (Date.now() - tRamp0) / 1000
  kit.log(`  all ${n} connected after ${rampS.toFixed(0)} s`)

  // Steady state: whole slots, once every connect-time heartbeat (retained beacon +
  // jitter) is out, so each device beats once per slot. Starting mid-slot keeps each
  // slot-boundary burst (beacon, heartbeats, challenges) well inside the window, with
  // time for the last challenges to be answered before the devices stop.
  const startAt = Math.ceil((Date.now() + jitterCapMs + 2000 - slotMs / 2) / slotMs) * slotMs + slotMs / 2
  await sleep(startAt - Date.now())
  const pids = { validator: validator.child.pid!, mosquitto: mosq.child.pid!, sims: sims.map(s => s.c.child.pid!) }
  const all = [pids.validator, pids.mosquitto, ...pids.sims]
  kit.log(`  window ${windowSlots} slots (${windowSlots * slotS} s)…`)
  const w0 = Date.now()
  const first = all.map(sample)
  const rssMax = first.map(s => s.rssMb)
  const windowEnd = w0 + windowSlots * slotMs
  while (Date.now() < windowEnd) {
    await sleep(Math.min(5000, windowEnd - Date.now()))
    all.map(sample).forEach((s, i) => (rssMax[i] = Math.max(rssMax[i]!, s.rssMb)))
  }
  const last = all.map(sample)
  const w1 = Date.now()
  const dt = (w1 - w0) / 1000
  const cpu = all.map((_, i) => ((last[i]!.ticks - first[i]!.ticks) / CLK_TCK / dt) * 100)
  const statusLines = sims.map(s => s.c.lines.filter(l => l.includes('"sim.status"')).slice(-1)[0])
  const limits = { mosquitto: openFileLimit(pids.mosquitto), sim: openFileLimit(pids.sims[0]!) }

  // Stop the devices (each waits for its in-flight PUBACKs and writes its counts), then
  // let the validator drain what the broker still holds for it.
  const stoppedAt = Date.now()
  await Promise.all(sims.map(s => terminate(s.c, 60_000)))
  const summaries = sims.map(s => JSON.parse(readFileSync(s.summaryFile, 'utf8')) as SimSummary)
  const acked = new Map<string, number>()
  for (const s of summaries) for (const d of s.perDevice) acked.set(d.id, d.acked)
  const ackedTotal = [...acked.values()].reduce((a, b) => a + b, 0)
  const dbFile = join(vdir, 'validator.db')
  const countStored = () => {
    const db = new Database(dbFile, { readonly: true, fileMustExist: true })
    try {
      return (db.prepare('SELECT COUNT(*) AS c FROM heartbeats').get() as { c: number }).c
    } finally {
      db.close()
    }
  }
  let stable = 0
  let prev = -1
  const drainUntil = Date.now() + 30_000
  while (Date.now() < drainUntil && stable < 3) {
    await sleep(1000)
    const c = countStored()
    stable = c === prev && c >= ackedTotal ? stable + 1 : 0
    prev = c
  }
  await terminate(validator, 20_000)
  await terminate(mosq, 10_000)

  const db = new Database(dbFile, { readonly: true, fileMustExist: true })
  const stored = new Map((db.prepare('SELECT device, COUNT(*) AS n FROM heartbeats GROUP BY device').all() as Array<{ device: string; n: number }>).map(r => [r.device, r.n]))
  const inWindow = (db.prepare('SELECT COUNT(*) AS c FROM heartbeats WHERE recv >= ? AND recv < ?').get(w0, w1) as { c: number }).c
  const evidence = Object.fromEntries((db.prepare('SELECT kind, COUNT(*) AS n FROM evidence GROUP BY kind').all() as Array<{ kind: string; n: number }>).map(r => [r.kind, r.n]))
  // Challenges sent in the window whose deadline passed while the devices still ran.
  const challenges = db.prepare('SELECT COUNT(*) AS sent, COUNT(response) AS answered FROM challenges WHERE sent >= ? AND sent < ? AND deadline < ?').get(w0, w1, stoppedAt) as {
    sent: number
    answered: number
  }
  const beacons = (db.prepare('SELECT COUNT(*) AS c FROM beacons').get() as { c: number }).c
  db.close()
  let unaccounted = 0
  let storedTotal = 0
  for (const [id, a] of acked) unaccounted += Math.max(0, a - (stored.get(id) ?? 0))
  for (const v of stored.values()) storedTotal += v

  const validatorCpu = cpu[0]!
  const mosqCpu = cpu[1]!
  const simCpu = cpu.slice(2)
  const simRss = rssMax.slice(2)
  const hbPerS = inWindow / dt
  const verifyOnlyPct = (hbPerS / nodeVerifyPerS) * 100
  const sustained = validatorCpu <= 25 && unaccounted === 0 && ackedTotal > 0
  const simRssTotal = simRss.reduce((a, b) => a + b, 0)
  const kbPerDevice = (simRssTotal * 1024) / n
  const simFailed = summaries.reduce((a, s) => a + s.totals.failed, 0)
  const refused = summaries.map(s => s.refusedByCode)

  const setup = `${n} devices in ${nProcs} sim process(es), slot ${slotS} s, one heartbeat per beacon (jitter <= ${jitterCapMs / 1000} s), window ${dt.toFixed(0)} s after a ${rampS.toFixed(0)} s ramp`
  kit.row({
    bench: '5 proofs',
    figure: `validator CPU, ${n} devices at 1 heartbeat/slot`,
    value: validatorCpu,
    unit: '% core',
    baseline: verifyOnlyPct,
    ratio: verifyOnlyPct > 0 ? validatorCpu / verifyOnlyPct : undefined,
    goal: '<= 25 %',
    verdict: validatorCpu <= 25 ? 'pass' : 'FAIL',
    note: `${setup}; ${hbPerS.toFixed(1)} heartbeats/s stored; baseline = the ed25519 verifies alone at node:crypto's rate; ${challenges.sent} challenges sent in the window, ${challenges.answered} answered`,
  })
  kit.row({
    bench: '5 proofs',
    figure: 'unaccounted heartbeats (PUBACKed, not stored)',
    value: unaccounted,
    unit: 'msgs',
    goal: '0',
    verdict: unaccounted === 0 ? 'pass' : 'FAIL',
    note: `acked ${ackedTotal}, stored ${storedTotal} (over the whole run, per device); sim publish failures ${simFailed}; evidence ${JSON.stringify(evidence)}`,
  })
  kit.row({
    bench: '5 proofs',
    figure: 'largest N sustained (this run)',
    value: sustained ? n : 0,
    unit: 'devices',
    goal: kit.quick ? `>= ${n}` : '>= 10000',
    verdict: sustained && (kit.quick || n >= 10_000) ? 'pass' : 'FAIL',
    note: `one N per run (BENCH_PROOF_DEVICES=N to try another); sustained = validator CPU <= 25 % and 0 unaccounted`,
  })
  kit.row({
    bench: '5 proofs',
    figure: 'sim RSS per device',
    value: kbPerDevice,
    unit: 'KB',
    verdict: 'info',
    note: `sim processes ${simRss.map(x => x.toFixed(0)).join('+')} MB RSS (max), CPU ${simCpu.map(x => x.toFixed(1)).join('+')} % core; each device its own mqtt.js connection and key`,
  })
  kit.row({
    bench: '5 proofs',
    figure: `mosquitto CPU, ${n} connections`,
    value: mosqCpu,
    unit: '% core',
    verdict: 'info',
    note: `RSS ${rssMax[1]!.toFixed(0)} MB; open-file limit mosquitto ${limits.mosquitto}, sim ${limits.sim}`,
  })
  return {
    devices: n,
    simProcesses: nProcs,
    slotS,
    jitterMs,
    jitterCapMs,
    periodS: 2 * slotS,
    rampS,
    windowS: dt,
    validatorKey: vkey.keyId,
    cpuPercent: { validator: validatorCpu, mosquitto: mosqCpu, sims: simCpu },
    rssMbMax: { validator: rssMax[0], mosquitto: rssMax[1], sims: simRss },
    simKbPerDevice: kbPerDevice,
    heartbeatsPerSInWindow: hbPerS,
    verifyOnlyPercent: verifyOnlyPct,
    acked: ackedTotal,
    stored: storedTotal,
    unaccounted,
    simPublishFailures: simFailed,
    simRefused: refused,
    beacons,
    challengesInWindow: challenges,
    evidence,
    sustained,
    openFileLimits: limits,
    lastSimStatus: statusLines.map(l => (l ? (JSON.parse(l) as unknown) : null)),
    brokerConfig: 'persistence false, max_queued_messages 100000, set_tcp_nodelay true, ulimit -n 65536',
  }
}
