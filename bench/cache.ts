// Cache server benchmark, run by bench/run.ts (`npm run bench`, BENCH_ONLY=cache):
// requests/s and p99 latency for GET of one 1 MiB object (and a 4 KiB one, per-request
// overhead), the bundled agent's cache server (dist/cairn.mjs agent, a real broker, the
// objects in its store) against nginx serving the same files from a temp config, both on
// 127.0.0.1, in the same run.
//
// Fairness on a small shared machine: the load generator runs on the same cores as the
// server, so it must cost as little as possible. wrk (C, epoll; `apt-get install -y wrk`)
// is used when installed: one thread, 10 keep-alive connections. autocannon (a Node
// process parsing every body in JS) is the fallback; it saturated a core by itself at
// ~35 MiB/s here, which made the 1 MiB figure measure autocannon, not the servers. Both
// servers run for the whole bench and are measured in alternating rounds (cairn, nginx,
// cairn, nginx, …), median per server, so a burst of load from other processes does not
// land on one server only.
//
// nginx runs as our own child (`daemon off;`, one worker, sendfile on, access log off,
// its service never enabled). Where nginx is not installed (`apt-get install -y nginx`)
// the bench says so and reports Cairn alone. Goal: Cairn >= 0.6x nginx requests/s.

import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { chmodSync, mkdirSync, writeFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { randomBytes, createHash } from 'node:crypto'
import { ContentStore } from '../agent/cache/store.js'
import { freePort, startBroker } from '../test/helpers/broker.js'
import type { BenchKit } from './proofs.js'

interface Load {
  reqPerS: number
  p50Ms: number
  p99Ms: number
  bytesPerS: number
}
interface CannonResult {
  requests: { average: number }
  latency: { p50: number; p99: number }
  throughput: { average: number }
  non2xx: number
  errors: number
}
type Cannon = (opts: Record<string, unknown>) => Promise<CannonResult>

const SIZE = 1024 * 1024
const CONNECTIONS = 10

const WRK = ['/usr/bin/wrk', '/usr/local/bin/wrk'].find(p => spawnSync(p, ['-v'], { stdio: 'ignore' }).error === undefined)

/** One measurement of `url` for `durationS` seconds with wrk, else autocannon. */
async function measure(url: string, durationS: number): Promise<Load> {
  if (WRK) return wrk(url, durationS)
  // autocannon ships no types; it is a CommonJS module whose call returns a promise.
  const autocannon = createRequire(import.meta.url)('autocannon') as Cannon
  const r = await autocannon({ url, connections: CONNECTIONS, duration: durationS })
  if (r.non2xx > 0 || r.errors > 0) throw new Error(`${url}: ${r.non2xx} non-2xx, ${r.errors} errors`)
  return { reqPerS: r.requests.average, p50Ms: r.latency.p50, p99Ms: r.latency.p99, bytesPerS: r.throughput.average }
}

function wrk(url: string, durationS: number): Promise<Load> {
  return new Promise((resolve, reject) => {
    const p = spawn(WRK!, ['-t1', `-c${CONNECTIONS}`, `-d${durationS}s`, '--latency', url], { stdio: ['ignore', 'pipe', 'pipe'] })
    let out = ''
    p.stdout.on('data', d => (out += d))
    p.stderr.on('data', d => (out += d))
    p.once('error', reject)
    p.once('exit', code => {
      const ms = (v: string, unit: string) => Number(v) * ({ us: 0.001, ms: 1, s: 1000, m: 60_000 } as Record<string, number>)[unit]!
      const pct = (q: string) => {
        const m = new RegExp(`^\\s*${q}%\\s+([\\d.]+)(us|ms|s|m)\\s*$`, 'm').exec(out)
        return m ? ms(m[1]!, m[2]!) : NaN
      }
      const rps = /Requests\/sec:\s+([\d.]+)/.exec(out)
      const tput = /Transfer\/sec:\s+([\d.]+)(B|KB|MB|GB)/.exec(out)
      const bad = /Non-2xx or 3xx responses:\s+(\d+)/.exec(out)
      const errs = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out)
      if (code !== 0 || !rps) return reject(new Error(`wrk exited ${code}: ${out.trim()}`))
      if (bad || (errs && errs.slice(1, 4).some(n => n !== '0'))) return reject(new Error(`${url}: ${out.trim()}`))
      const scale = { B: 1, KB: 1024, MB: 1024 ** 2, GB: 1024 ** 3 } as Record<string, number>
      resolve({ reqPerS: Number(rps[1]), p50Ms: pct('50'), p99Ms: pct('99'), bytesPerS: tput ? Number(tput[1]) * scale[tput[2]!]! : NaN })
    })
  })
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor((xs.length - 1) / 2)]!

export async function benchCache(kit: BenchKit): Promise<Record<string, unknown>> {
  const rounds = kit.quick ? 1 : 3
  const durationS = 5
  const tool = WRK ? `wrk (${WRK}, 1 thread)` : 'autocannon (wrk not installed: apt-get install -y wrk)'
  kit.log(`  load generator: ${tool}`)
  // 1 MiB is the goal's figure; 4 KiB (info) shows per-request overhead, where bytes do not hide it.
  const objects = [SIZE, 4096].map(size => {
    const body = randomBytes(size)
    return { size, body, sha: createHash('sha256').update(body).digest('hex') }
  })

  // Cairn: the bundled agent, its store filled before it starts (the store is single-process).
  const broker = await startBroker()
  const stateDir = kit.tmp('cairn-bench-cache-')
  const store = await ContentStore.open({ dir: join(stateDir, 'cache'), quotaBytes: 1 << 30, maxObjectBytes: 1 << 30 })
  for (const o of objects) await store.put(o.sha, o.body)
  store.close()
  const cairnPort = await freePort()
  const agent = spawn(
    process.execPath,
    [kit.bundle, 'agent', '--broker', broker.url, '--fleet', 'bench', '--state-dir', stateDir, '--health-port', '0', '--set', `cache.port=${cairnPort}`, '--log-level', 'warn'],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  )
  kit.track(agent)
  let ng: ChildProcess | undefined
  const cairn: Load[][] = objects.map(() => [])
  const nginx: Load[][] = objects.map(() => [])
  let nginxWhy = ''
  try {
    await waitHttp(`http://127.0.0.1:${cairnPort}/c/${objects[0]!.sha}`, 20_000)
    // nginx: the same bytes, same path shape, up beside the agent for the whole bench.
    const bin = ['/usr/sbin/nginx', '/usr/bin/nginx', '/usr/local/sbin/nginx'].find(p => spawnSync(p, ['-v'], { stdio: 'ignore' }).error === undefined)
    let nginxPort = 0
    if (!bin) {
      nginxWhy = 'nginx is not installed (apt-get install -y nginx): Cairn alone'
      kit.log(`  ${nginxWhy}`)
    } else {
      const started = await startNginx(kit, bin, objects)
      ng = started.child
      nginxPort = started.port
      nginxWhy = started.why
      if (nginxWhy) kit.log(`  ${nginxWhy}`)
    }
    for (const [i, o] of objects.entries()) {
      const cairnUrl = `http://127.0.0.1:${cairnPort}/c/${o.sha}`
      const nginxUrl = `http://127.0.0.1:${nginxPort}/c/${o.sha}`
      await measure(cairnUrl, 2) // warm-up
      if (nginxPort && !nginxWhy) await measure(nginxUrl, 2)
      for (let r = 0; r < rounds; r++) {
        kit.log(`  ${o.size} B object, round ${r + 1}/${rounds}, ${durationS} s each, ${CONNECTIONS} connections: cairn${nginxPort && !nginxWhy ? ', nginx' : ''}…`)
        cairn[i]!.push(await measure(cairnUrl, durationS))
        if (nginxPort && !nginxWhy) nginx[i]!.push(await measure(nginxUrl, durationS))
      }
    }
  } finally {
    agent.kill('SIGTERM')
    ng?.kill('SIGTERM')
    await Promise.all([agent, ng].map(c => (!c || c.exitCode !== null ? Promise.resolve() : new Promise(r => c.once('exit', r)))))
    await broker.close()
  }

  const note = `${tool}, ${CONNECTIONS} keep-alive connections, median of ${rounds} alternating ${durationS} s rounds per server after a 2 s warm-up; the load generator shares the machine's cores with the server; nginx 1 worker, sendfile`
  const details: Record<string, unknown> = { tool, connections: CONNECTIONS, durationS, rounds, nginx: nginxWhy || 'nginx 1 worker' }
  objects.forEach((o, i) => {
    const pick = (runs: Load[]): Load | undefined =>
      runs.length === 0
        ? undefined
        : { reqPerS: median(runs.map(x => x.reqPerS)), p50Ms: median(runs.map(x => x.p50Ms)), p99Ms: median(runs.map(x => x.p99Ms)), bytesPerS: median(runs.map(x => x.bytesPerS)) }
    const c = pick(cairn[i]!)!
    const n = pick(nginx[i]!)
    const ratio = n ? c.reqPerS / n.reqPerS : undefined
    const label = o.size === SIZE ? '1 MiB' : `${o.size} B`
    const goal = o.size === SIZE
    kit.row({
      bench: 'cache',
      figure: `GET ${label} object: requests/s`,
      value: c.reqPerS,
      unit: 'req/s',
      baseline: n?.reqPerS,
      ratio,
      ...(goal ? { goal: '>= 0.6x nginx' } : {}),
      verdict: ratio === undefined || !goal ? 'info' : ratio >= 0.6 ? 'pass' : 'FAIL',
      note: n ? note : `${note}; ${nginxWhy}`,
    })
    kit.row({ bench: 'cache', figure: `GET ${label} object: p99 latency`, value: c.p99Ms, unit: 'ms', baseline: n?.p99Ms, ratio: n ? c.p99Ms / n.p99Ms : undefined, verdict: 'info' })
    details[label] = { cairn: c, nginx: n, ratio, rounds: { cairn: cairn[i]!.map(x => x.reqPerS), nginx: nginx[i]!.map(x => x.reqPerS) } }
  })
  return details
}

async function startNginx(kit: BenchKit, bin: string, objects: Array<{ sha: string; body: Buffer }>): Promise<{ child: ChildProcess; port: number; why: string }> {
  const dir = kit.tmp('cairn-bench-nginx-')
  // nginx's worker drops root for an unprivileged user: it must be able to read the files.
  chmodSync(dir, 0o755)
  mkdirSync(join(dir, 'root', 'c'), { recursive: true })
  for (const o of objects) writeFileSync(join(dir, 'root', 'c', o.sha), o.body)
  const port = await freePort()
  const conf = join(dir, 'nginx.conf')
  writeFileSync(
    conf,
    `daemon off;\nworker_processes 1;\npid ${dir}/nginx.pid;\nerror_log ${dir}/error.log;\nevents { worker_connections 1024; }\nhttp {\n  access_log off;\n  sendfile on;\n  tcp_nopush on;\n  client_body_temp_path ${dir}/tmp;\n  proxy_temp_path ${dir}/tmp;\n  fastcgi_temp_path ${dir}/tmp;\n  uwsgi_temp_path ${dir}/tmp;\n  scgi_temp_path ${dir}/tmp;\n  server {\n    listen 127.0.0.1:${port};\n    root ${dir}/root;\n    location /c/ { default_type application/octet-stream; etag on; }\n  }\n}\n`,
  )
  mkdirSync(join(dir, 'tmp'))
  const child = spawn(bin, ['-c', conf, '-p', dir, '-e', join(dir, 'error.log')], { stdio: ['ignore', 'ignore', 'pipe'] })
  kit.track(child)
  let err = ''
  createInterface({ input: child.stderr! }).on('line', l => (err += l + '\n'))
  try {
    await waitHttp(`http://127.0.0.1:${port}/c/${objects[0]!.sha}`, 10_000)
    return { child, port, why: '' }
  } catch (e) {
    return { child, port, why: `nginx did not run: ${(e as Error).message} ${err}`.trim() }
  }
}

async function waitHttp(url: string, timeoutMs: number): Promise<void> {
  const until = Date.now() + timeoutMs
  for (;;) {
    try {
      const r = await fetch(url, { method: 'HEAD' })
      if (r.status === 200) return
    } catch {
      // not up yet
    }
    if (Date.now() > until) throw new Error(`${url} not answering within ${timeoutMs} ms`)
    await new Promise(r => setTimeout(r, 100))
  }
}
