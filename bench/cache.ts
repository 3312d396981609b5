// Cache server benchmark, run by bench/run.ts (`npm run bench`, BENCH_ONLY=cache):
// requests/s and p99 latency for GET of one 1 MiB object, the bundled agent's cache
// server (dist/cairn.mjs agent, a real broker, the object in its store) against nginx
// serving the same file from a temp config in the same run, both on 127.0.0.1 and both
// measured by the same autocannon load (10 connections, keep-alive).
//
// nginx runs as our own child (`daemon off;`, one worker, sendfile on, access log off,
// its service never enabled). Where nginx is not installed (`apt-get install -y nginx`)
// the bench says so and reports Cairn alone. Goal: Cairn >= 0.6x nginx requests/s.
// Caveat printed with the figures: autocannon is one Node process on the same cores, so
// on a small machine the load generator itself limits both servers.

import { spawn, spawnSync } from 'node:child_process'
import { chmodSync, mkdirSync, writeFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { ContentStore } from '../agent/cache/store.js'
import { freePort, startBroker } from '../test/helpers/broker.js'
import type { BenchKit } from './proofs.js'
import { randomBytes, createHash } from 'node:crypto'

interface CannonResult {
  requests: { average: number; total: number }
  latency: { p50: number; p99: number; average: number }
  throughput: { average: number }
  non2xx: number
  errors: number
  timeouts: number
}
type Cannon = (opts: Record<string, unknown>) => Promise<CannonResult>
// autocannon ships no types; it is a CommonJS module whose call returns a promise.
const autocannon = createRequire(import.meta.url)('autocannon') as Cannon

const SIZE = 1024 * 1024
const CONNECTIONS = 10

export async function benchCache(kit: BenchKit): Promise<Record<string, unknown>> {
  const durationS = kit.quick ? 5 : 15
  // 1 MiB is the goal's figure; 4 KiB (info) shows per-request overhead, where bytes do not hide it.
  const objects = [SIZE, 4096].map(size => {
    const body = randomBytes(size)
    return { size, body, sha: createHash('sha256').update(body).digest('hex') }
  })
  const load = async (url: string): Promise<CannonResult> => {
    await autocannon({ url, connections: CONNECTIONS, duration: 2 }) // warm-up
    const r = await autocannon({ url, connections: CONNECTIONS, duration: durationS })
    if (r.non2xx > 0 || r.errors > 0) throw new Error(`${url}: ${r.non2xx} non-2xx, ${r.errors} errors`)
    return r
  }

  // Cairn: the bundled agent, its store filled before it starts (the store is single-process).
  const broker = await startBroker()
  const stateDir = kit.tmp('cairn-bench-cache-')
  const store = await ContentStore.open({ dir: join(stateDir, 'cache'), quotaBytes: 1 << 30, maxObjectBytes: 1 << 30 })
  for (const o of objects) await store.put(o.sha, o.body)
  store.close()
  const cairnPort = await freePort()
  const agent = spawn(process.execPath, [kit.bundle, 'agent', '--broker', broker.url, '--fleet', 'bench', '--state-dir', stateDir, '--health-port', '0', '--set', `cache.port=${cairnPort}`, '--log-level', 'warn'], { stdio: ['ignore', 'pipe', 'pipe'] })
  kit.track(agent)
  const cairn: CannonResult[] = []
  try {
    await waitHttp(`http://127.0.0.1:${cairnPort}/c/${objects[0]!.sha}`, 20_000)
    for (const o of objects) {
      kit.log(`  cairn agent cache server: ${o.size} B object, ${durationS} s, ${CONNECTIONS} connections…`)
      cairn.push(await load(`http://127.0.0.1:${cairnPort}/c/${o.sha}`))
    }
  } finally {
    agent.kill('SIGTERM')
    await new Promise(r => agent.once('exit', r))
    await broker.close()
  }

  // nginx: the same bytes, same path shape.
  const nginx: CannonResult[] = []
  let nginxWhy = ''
  const bin = ['/usr/sbin/nginx', '/usr/bin/nginx', '/usr/local/sbin/nginx'].find(p => spawnSync(p, ['-v'], { stdio: 'ignore' }).error === undefined)
  if (!bin) {
    nginxWhy = 'nginx is not installed (apt-get install -y nginx): Cairn alone'
    kit.log(`  ${nginxWhy}`)
  } else {
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
    const ng = spawn(bin, ['-c', conf, '-p', dir, '-e', join(dir, 'error.log')], { stdio: ['ignore', 'ignore', 'pipe'] })
    kit.track(ng)
    let err = ''
    createInterface({ input: ng.stderr! }).on('line', l => (err += l + '\n'))
    try {
      await waitHttp(`http://127.0.0.1:${port}/c/${objects[0]!.sha}`, 10_000)
      for (const o of objects) {
        kit.log(`  nginx ${bin}: ${o.size} B object, ${durationS} s, ${CONNECTIONS} connections…`)
        nginx.push(await load(`http://127.0.0.1:${port}/c/${o.sha}`))
      }
    } catch (e) {
      nginxWhy = `nginx did not run: ${(e as Error).message} ${err}`.trim()
      nginx.length = 0
      kit.log(`  ${nginxWhy}`)
    } finally {
      ng.kill('SIGTERM')
      await new Promise(r => (ng.exitCode !== null ? r(undefined) : ng.once('exit', r)))
    }
  }

  const note = `${CONNECTIONS} connections, ${durationS} s after 2 s warm-up; autocannon runs in the bench process on the same cores, so on a small or busy machine it can be the limit for both; nginx 1 worker, sendfile`
  const details: Record<string, unknown> = { connections: CONNECTIONS, durationS, nginx: nginxWhy || bin }
  objects.forEach((o, i) => {
    const c = cairn[i]!
    const n = nginx[i]
    const ratio = n ? c.requests.average / n.requests.average : undefined
    const label = o.size === SIZE ? '1 MiB' : `${o.size} B`
    const goal = o.size === SIZE
    kit.row({ bench: 'cache', figure: `GET ${label} object: requests/s`, value: c.requests.average, unit: 'req/s', baseline: n?.requests.average, ratio, ...(goal ? { goal: '>= 0.6x nginx' } : {}), verdict: ratio === undefined || !goal ? 'info' : ratio >= 0.6 ? 'pass' : 'FAIL', note: n ? note : `${note}; ${nginxWhy}` })
    kit.row({ bench: 'cache', figure: `GET ${label} object: p99 latency`, value: c.latency.p99, unit: 'ms', baseline: n?.latency.p99, ratio: n ? c.latency.p99 / n.latency.p99 : undefined, verdict: 'info' })
    const pick = (r: CannonResult) => ({ reqPerS: r.requests.average, total: r.requests.total, p50Ms: r.latency.p50, p99Ms: r.latency.p99, bytesPerS: r.throughput.average })
    details[label] = { cairn: pick(c), nginx: n ? pick(n) : undefined, ratio }
  })
  return details
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
