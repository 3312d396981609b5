// The fleet service end to end, in both MQTT versions: two `fleet serve` processes
// (FleetService instances, each its own store connection) on one SQLite file, sharing
// the fleet's messages through a shared subscription, against a real Mosquitto; a real
// agent (the built bundle) whose `kill -9` the service sees through its Will, and an
// in-process agent that stops cleanly; junk on the device topics refused and counted.

import t, { type Test } from 'tap'
import { execFileSync, spawn, type ChildProcess } from 'node:child_process'
import { readFileSync, statSync, writeFileSync } from 'node:fs'
import { request as httpsRequest } from 'node:https'
import { join } from 'node:path'
import mqtt from 'mqtt'
import { FleetService } from '../../../fleet/service/fleet-service.js'
import { SqliteFleetStore } from '../../../fleet/service/sqlite-store.js'
import { verifyPassword } from '../../../fleet/service/passwords.js'
import { createLogger } from '../../../protocol/log.js'
import { systemClock } from '../../../protocol/clock.js'
import { startBroker, type TestBroker } from '../../helpers/broker.js'
import { startTestAgent, tmp, until } from '../../helpers/agent.js'
import { MQTT_VERSIONS } from '../../helpers/mqtt-versions.js'
import { startSim } from '../../../fleet/sim/sim.js'
import { makeRepo, payload, serveRepo } from '../../helpers/release.js'

const bundle = new URL('../../../dist/cairn.mjs', import.meta.url).pathname
let broker: TestBroker
t.before(async () => {
  broker = await startBroker()
})
t.teardown(async () => broker.close())

const logs: string[] = []
const log = createLogger({ level: 'info', out: { write: (s: string) => logs.push(s) } })

async function service(dir: string, fleet: string, instance: string, mqttVersion: 4 | 5): Promise<{ svc: FleetService; url: string }> {
  const svc = new FleetService({
    brokerUrl: broker.url,
    mqtt: { protocolVersion: mqttVersion },
    fleet,
    store: new SqliteFleetStore(dir),
    clock: systemClock,
    log: log.child({ instance }),
    listen: { host: '127.0.0.1', port: 0 },
    shareGroup: `fleet-${fleet}`,
    instance,
  })
  const url = await svc.start()
  return { svc, url }
}

const api = async (base: string, path: string) => {
  const res = await fetch(`${base}${path}`)
  return { status: res.status, body: (await res.json()) as Record<string, unknown> }
}

for (const { mqttVersion, label } of MQTT_VERSIONS) {
  t.test(`${label}: two processes, one store; presence (Will and clean stop), telemetry, events; junk refused`, async t => {
    if (mqttVersion === 5 && !broker.mqtt5) return t.comment('SKIPPED: MQTT 5 needs mosquitto; the aedes fallback speaks 3.1.1 only')
    const fleet = `fs${mqttVersion}`
    const dir = tmp('cairn-fleet-')
    const a = await service(dir, fleet, 'a', mqttVersion)
    t.teardown(() => a.svc.stop())
    const b = await service(dir, fleet, 'b', mqttVersion)
    t.teardown(() => b.svc.stop())

    // a real agent, the built bundle, that will be killed
    const state = tmp('cairn-state-')
    const child: ChildProcess = spawn(
      process.execPath,
      [
        bundle,
        'agent',
        '--broker',
        broker.url,
        '--fleet',
        fleet,
        '--state-dir',
        state,
        '--mqtt-version',
        String(mqttVersion),
        '--telemetry-period',
        '1',
        '--health-port',
        '0',
        '--set',
        'cache.port=0',
        '--set',
        'tasks.enabled=false',
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    )
    child.stdout!.resume()
    child.stderr!.resume()
    t.teardown(() => void child.kill('SIGKILL'))
    // and one in process, stopped cleanly
    const quiet = await startTestAgent({ url: broker.url, fleet, mqttVersion, values: { telemetry: { periodS: 1 } } })
    t.teardown(() => quiet.stop())

    let killed: string | undefined
    await until(
      async () => {
        const r = await api(a.url, '/api/v1/devices?state=online&sort=id')
        const items = r.body.items as Array<{ id: string; telemetryTs: number | null }>
        killed = items.find(d => d.id !== quiet.agent.deviceId)?.id
        return items.length === 2 && items.every(d => d.telemetryTs !== null)
      },
      60_000,
      'both agents online with telemetry, as either process tells',
    )
    const dev = (await api(b.url, `/api/v1/devices/${killed}`)).body
    t.match(dev, { state: 'online', board: String, version: String, latest: { memPercent: Number } }, 'the other process serves the same registry')
    t.ok(
      a.svc.ingest.stats.stored.telemetry > 0 && b.svc.ingest.stats.stored.telemetry > 0,
      `both processes took a share of the telemetry (${a.svc.ingest.stats.stored.telemetry} and ${b.svc.ingest.stats.stored.telemetry})`,
    )

    child.kill('SIGKILL')
    await until(async () => (await api(a.url, `/api/v1/devices/${killed}`)).body.state === 'offline', 60_000, 'the killed agent offline')
    t.match((await api(b.url, `/api/v1/devices/${killed}`)).body, { state: 'offline', reason: 'connection-lost' }, 'kill -9: offline through its Will')
    await quiet.stop()
    await until(async () => (await api(b.url, `/api/v1/devices/${quiet.agent.deviceId}`)).body.state === 'offline', 60_000, 'the stopped agent offline')
    t.match((await api(a.url, `/api/v1/devices/${quiet.agent.deviceId}`)).body, { state: 'offline', reason: 'shutdown' })
    const presence = (await api(a.url, `/api/v1/devices/${killed}/presence`)).body
    t.match(
      presence.items,
      [
        { state: 'online', reason: null },
        { state: 'offline', reason: 'connection-lost' },
      ],
      'its history: online, then lost',
    )
    const series = (await api(b.url, `/api/v1/devices/${killed}/telemetry?resolution=raw`)).body
    t.ok((series.points as unknown[]).length >= 1, `its telemetry series (${(series.points as unknown[]).length} points)`)
    const events = (await api(a.url, `/api/v1/devices/${quiet.agent.deviceId}/events`)).body
    t.ok(
      (events.items as Array<{ kind: string }>).some(e => e.kind === 'agent.started'),
      'its events: agent.started',
    )

    // junk on a device's topics: refused, counted, nothing stored
    const refusedBefore = a.svc.ingest.stats.refused + b.svc.ingest.stats.refused
    const junk = await mqtt.connectAsync(broker.url, { protocolVersion: mqttVersion })
    t.teardown(() => junk.endAsync(true))
    const topic = (kind: string) => `cairn/v1/${fleet}/${killed}/${kind}`
    await junk.publishAsync(topic('telemetry'), 'not json', { qos: 1 })
    await junk.publishAsync(topic('telemetry'), JSON.stringify({ v: 1, id: 'x1234567', device: quiet.agent.deviceId, ts: 1, sample: {} }), { qos: 1 })
    await junk.publishAsync(topic('status'), JSON.stringify({ v: 1, id: 'x1234568', device: killed, state: 'online', ts: 1, board: '<img src=x onerror=alert(1)>' }), { qos: 1 })
    await junk.publishAsync(topic('event'), Buffer.alloc(20_000, 'a'), { qos: 1 })
    await until(() => a.svc.ingest.stats.refused + b.svc.ingest.stats.refused >= refusedBefore + 4, 30_000, 'four refusals')
    t.match((await api(a.url, `/api/v1/devices/${killed}`)).body, { state: 'offline', reason: 'connection-lost' }, 'the device as it was')
    t.ok(
      logs.some(l => /device message refused/.test(l)),
      'refusals are logged (the first of each kind)',
    )
  })
}

t.test('cairn sim --telemetry-period: simulated devices appear as agents do; one gone dark is offline by its Will, one with a failed update alerts', async t => {
  const fleet = 'fsim'
  const a = await service(tmp('cairn-fleet-'), fleet, 'a', broker.mqtt5 ? 5 : 4)
  t.teardown(() => a.svc.stop())
  const sim = startSim({
    devices: 30,
    brokerUrl: broker.url,
    fleet,
    validators: [],
    mqtt: { protocolVersion: broker.mqtt5 ? 5 : 4 },
    periodS: 60,
    telemetryPeriodS: 1,
    rampPerS: 1000,
    // dark for ten minutes, two seconds after it first connected
    misbehave: [
      { kind: 'offline', who: { index: 3 }, arg: 600, at: 2 },
      { kind: 'update-failed', who: { index: 5 } },
    ],
  })
  t.teardown(() => sim.stop())
  await sim.ready
  const dark = sim.devices[3]!.id
  await until(
    async () => {
      const r = await api(a.url, '/api/v1/devices?limit=100')
      const items = r.body.items as Array<{ id: string; state: string; telemetryTs: number | null }>
      return items.length === 30 && items.filter(d => d.id !== dark).every(d => d.state === 'online' && d.telemetryTs !== null) && items.find(d => d.id === dark)?.state === 'offline'
    },
    60_000,
    '30 simulated devices, 29 online with telemetry, the dark one offline',
  )
  t.match((await api(a.url, `/api/v1/devices/${dark}`)).body, { state: 'offline', reason: 'connection-lost' }, 'gone dark: offline through its Will')
  t.match((await api(a.url, '/api/v1/devices?board=jetson-orin&limit=100')).body, { total: 10 }, 'a third of them Jetson Orins')
  const failed = sim.devices[5]!.id
  await until(async () => ((await api(a.url, `/api/v1/devices/${failed}`)).body.alerts as string[]).includes('update-failed'), 60_000, 'the failed update reported')
  t.match((await api(a.url, `/api/v1/devices/${failed}`)).body, { ota: { phase: 'rolled-back', version: '9.9.9-sim' }, alerts: ['update-failed'] }, 'its update rolled back: an alert')
  t.equal(a.svc.ingest.stats.refused, 0, 'everything the sim sends passes the checks an agent’s messages pass')
  await sim.stop()
  await until(async () => ((await api(a.url, '/api/v1/fleet')).body.counts as { online: number }).online === 0, 60_000, 'all offline after the sim stopped')
  t.match((await api(a.url, `/api/v1/devices/${sim.devices[0]!.id}`)).body, { state: 'offline', reason: 'shutdown' }, 'a clean stop: offline (shutdown)')
})

/** `cairn fleet serve ARGS` as a process of its own, killed when the test ends; resolves
 * with its API's base URL once it says it listens (rejects when it exits first). */
async function serveProcess(t: Test, args: string[], env: NodeJS.ProcessEnv = process.env): Promise<{ child: ChildProcess; base: string }> {
  const child = spawn(process.execPath, [bundle, 'fleet', 'serve', ...args], { stdio: ['ignore', 'pipe', 'pipe'], env })
  t.teardown(() => void child.kill('SIGKILL'))
  child.stderr!.resume()
  const base = await new Promise<string>((resolve, reject) => {
    let out = ''
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString()
      const m = /fleet service for [a-z0-9_-]+: (https?:\/\/127\.0\.0\.1:\d+)\/api\/v1/.exec(out)
      if (m) resolve(m[1]!)
    })
    child.on('exit', code => reject(new Error(`fleet serve exited (${code}): ${out}`)))
  })
  return { child, base }
}

/** `cairn fleet serve ARGS` that is to stop at once: its exit code and stderr. */
function serveRefused(args: string[]): Promise<{ code: number | null; err: string }> {
  return new Promise(resolve => {
    const c = spawn(process.execPath, [bundle, 'fleet', 'serve', ...args], { stdio: ['ignore', 'ignore', 'pipe'] })
    let err = ''
    c.stderr!.on('data', (d: Buffer) => (err += d.toString()))
    c.on('close', code => resolve({ code, err }))
  })
}

/** `cairn fleet ...` with `input` on stdin: exit code, stdout, stderr. */
function fleetCli(args: string[], input = ''): Promise<{ code: number | null; out: string; err: string }> {
  return new Promise(resolve => {
    const c = spawn(process.execPath, [bundle, 'fleet', ...args], { stdio: ['pipe', 'pipe', 'pipe'] })
    let out = ''
    let err = ''
    c.stdout!.on('data', (d: Buffer) => (out += d.toString()))
    c.stderr!.on('data', (d: Buffer) => (err += d.toString()))
    c.on('close', code => resolve({ code, out, err }))
    c.stdin!.end(input)
  })
}

t.test('fleet account: add, list, role, passwd, remove; the password from stdin, never a flag', async t => {
  const dir = join(tmp('cairn-fleet-'), 'state')
  const sd = ['--state-dir', dir]
  t.match(await fleetCli(['account', 'list', ...sd]), { code: 0, out: /no accounts/ })
  t.match(await fleetCli(['account', 'add', 'ada', '--role', 'admin', ...sd], 'short\n'), { code: 2, err: /at least 10 characters/ }, 'a short password: a usage error')
  t.match(await fleetCli(['account', 'add', 'Ada!', ...sd], 'a good long password\n'), { code: 2, err: /account name/ })
  t.match(
    await fleetCli(['account', 'add', 'ada', '--role', 'root', ...sd], 'a good long password\n'),
    { code: 2, err: /Allowed choices are viewer, operator, admin/ },
    'an unknown role: a usage error naming the roles',
  )
  t.match(await fleetCli(['account', 'add', 'ada', '--role', 'admin', ...sd], 'a good long password\n'), { code: 0, out: 'added ada (admin)\n' })
  t.match(await fleetCli(['account', 'add', 'ada', ...sd], 'a good long password\n'), { code: 2, err: /exists/ })
  t.match(await fleetCli(['account', 'add', 'otto', ...sd], 'another long password\n'), { code: 0, out: 'added otto (operator)\n' }, 'operator by default')
  t.match(await fleetCli(['account', 'role', 'otto', '--role', 'viewer', ...sd]), { code: 0, out: 'otto is now viewer\n' })
  t.match(await fleetCli(['account', 'passwd', 'otto', ...sd], 'a third long password\n'), { code: 0, out: /new password for otto/ })
  t.match(await fleetCli(['account', 'list', ...sd]), { code: 0, out: /^ada\tadmin\tsince .*\notto\tviewer\tsince / })
  t.match(await fleetCli(['account', 'remove', 'otto', ...sd]), { code: 0, out: 'removed otto\n' })
  t.match(await fleetCli(['account', 'remove', 'otto', ...sd]), { code: 2, err: /no account otto/ })
  const store = new SqliteFleetStore(dir)
  t.teardown(() => store.close())
  const ada = await store.getAccount('ada')
  t.ok(ada && (await verifyPassword('a good long password', ada.passwordHash)), 'the stored hash verifies the password given on stdin')
})

t.test('fleet serve with TLS: HTTPS, accounts on, Secure session cookies', async t => {
  const dir = tmp('cairn-fleet-')
  const state = join(dir, 'state')
  t.equal((await fleetCli(['account', 'add', 'ada', '--role', 'admin', '--state-dir', state], 'a good long password\n')).code, 0)
  execFileSync(
    'openssl',
    [
      'req',
      '-x509',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:prime256v1',
      '-nodes',
      '-days',
      '2',
      '-subj',
      '/CN=127.0.0.1',
      '-addext',
      'subjectAltName=IP:127.0.0.1',
      '-keyout',
      join(dir, 'key.pem'),
      '-out',
      join(dir, 'cert.pem'),
    ],
    { stdio: 'ignore' },
  )
  const { child, base } = await serveProcess(t, [
    '--broker',
    broker.url,
    '--mqtt-version',
    broker.mqtt5 ? '5' : '4',
    '--fleet',
    'tls',
    '--state-dir',
    state,
    '--listen',
    '127.0.0.1:0',
    '--tls-cert',
    join(dir, 'cert.pem'),
    '--tls-key',
    join(dir, 'key.pem'),
    '--log-level',
    'warn',
  ])
  const ca = readFileSync(join(dir, 'cert.pem'))
  const request = (method: string, path: string, body?: unknown) =>
    new Promise<{ status: number; body: Record<string, unknown>; cookie: string | undefined }>((resolve, reject) => {
      const req = httpsRequest(`${base}${path}`, { method, ca, headers: body ? { 'content-type': 'application/json' } : {} }, res => {
        let text = ''
        res.on('data', (d: Buffer) => (text += d.toString()))
        res.on('end', () => resolve({ status: res.statusCode!, body: JSON.parse(text) as Record<string, unknown>, cookie: res.headers['set-cookie']?.[0] }))
      })
      req.on('error', reject)
      req.end(body ? JSON.stringify(body) : undefined)
    })
  t.match(await request('GET', '/api/v1/devices'), { status: 401 }, 'HTTPS, and with an account every call signs in')
  const signIn = await request('POST', '/api/v1/session', { name: 'ada', password: 'a good long password' })
  t.match(signIn, { status: 200, body: { account: { name: 'ada', role: 'admin' } } })
  t.match(signIn.cookie, /; Secure(;|$)/, 'the session cookie is Secure behind TLS')
  child.kill('SIGTERM')
  await new Promise(r => child.once('exit', r))
})

t.test('fleet serve --config: the broker, fleet and thresholds from a file, the environment over it, a flag over both', async t => {
  const dir = tmp('cairn-fleet-')
  const conf = join(dir, 'fleet.yaml')
  // listen on a port this process may not open: the flag must win over it
  writeFileSync(
    conf,
    `fleet: configured\nstateDir: ${join(dir, 'state')}\nlisten: 127.0.0.1:1\nbroker: { url: '${broker.url}', mqttVersion: ${broker.mqtt5 ? 5 : 4} }\nalerts: { offlineMinutes: 30, hotC: 55 }\nlogLevel: warn\n`,
  )
  // and a release repository to follow, by flags
  const { repo } = makeRepo()
  repo.addRelease([payload(tmp('cairn-rel-files-'), 'cairn-agent.tar', 1000)], { version: '1.2.0', channel: 'stable', rollout: 30, kind: 'agent' })
  const releases = await serveRepo(repo)
  t.teardown(() => releases.close())
  const { child, base } = await serveProcess(t, ['--config', conf, '--listen', '127.0.0.1:0', '--release-url', releases.url, '--release-root', join(repo.paths.metadata, '1.root.json')], {
    ...process.env,
    CAIRN_FLEET_SERVE_ALERTS_DISK_PERCENT: '75',
  })
  const fleet = await api(base, '/api/v1/fleet')
  t.match(fleet, { status: 200, body: { fleet: 'configured', alertRules: { offlineMs: 30 * 60_000, hotC: 55, diskPercent: 75 } } }, 'the thresholds from the file and the environment')
  await until(async () => ((await api(base, '/api/v1/rollouts')).body.repository as { ok?: boolean } | null)?.ok === true, 30_000, 'the release repository read')
  t.match((await api(base, '/api/v1/rollouts')).body.published, [{ version: '1.2.0', rollout: 30, targets: 1 }], 'its release listed, verified against the root given')
  t.ok(statSync(join(dir, 'state', 'tuf-1', 'root.json')).isFile(), 'its verified metadata kept in the state dir, one directory per process (instance 1)')
  child.kill('SIGTERM')
  await new Promise(r => child.once('exit', r))

  const bad = join(dir, 'bad.yaml')
  writeFileSync(bad, `fleet: configured\nstateDir: ${join(dir, 'state')}\nalerts: { hotC: warm }\nlistne: 127.0.0.1:9\n`)
  const refused = await serveRefused(['--config', bad])
  t.equal(refused.code, 2, 'a bad file: a usage error')
  t.match(refused.err, /alerts\.hotC: Expected number, got "warm" \(from file .*bad\.yaml\)/, 'the bad value named with its file')
  t.match(refused.err, /listne/, 'and the unknown key')
})

t.test('fleet serve: flags checked before anything opens', async t => {
  const run = serveRefused
  const dir = tmp('cairn-fleet-')
  const off = await run(['--fleet', 'x', '--state-dir', join(dir, 's'), '--listen', '0.0.0.0:8080'])
  t.equal(off.code, 2, 'a usage error')
  t.match(off.err, /beyond loopback the service needs TLS/, 'beyond loopback without TLS: refused')
  t.equal(off.err.trim().split('\n').length, 1, 'one line')
  const half = await run(['--fleet', 'x', '--state-dir', join(dir, 's'), '--tls-cert', join(dir, 'c.pem')])
  t.match(half, { code: 2, err: /--tls-cert and --tls-key \(tls.cert and tls.key\) go together: --tls-cert is set alone/ })
  const openProxy = await run(['--fleet', 'x', '--state-dir', join(dir, 's'), '--listen', '0.0.0.0:8080', '--trust-proxy'])
  t.match(openProxy, { code: 2, err: /needs TLS/ }, '--trust-proxy does not stand in for TLS on a public address: the proxy is on this machine')
  const noAccounts = await run(['--fleet', 'x', '--state-dir', join(dir, 's'), '--listen', '127.0.0.1:8080', '--trust-proxy'])
  t.match(
    noAccounts,
    { code: 2, err: /--trust-proxy: reached from beyond this machine, the service needs accounts, and .* has none: add one first \(cairn fleet account add/ },
    'behind a proxy with no account: refused, saying how to add one',
  )
  const noRoot = await run(['--fleet', 'x', '--state-dir', join(dir, 's'), '--release-url', 'http://127.0.0.1:9/r', '--release-root', join(dir, 'none.json')])
  t.match(noRoot, { code: 2, err: /--release-root .*none\.json: cannot read \(ENOENT\)/ }, 'a trusted root that is not there')
  const store = await run(['--fleet', 'x', '--state-dir', join(dir, 's'), '--store', 'postgres://x'])
  t.match(store.err, /only sqlite for now/)
})
