// The built bundle end to end, as a user meets it: dist/cairn.mjs against Mosquitto,
// mosquitto_pub/mosquitto_sub as the outside world.

import t from 'tap'
import type { Test } from 'tap'
import { execFile, spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { createServer } from 'node:net'
import { join } from 'node:path'
import { promisify } from 'node:util'
import type { Command } from 'commander'
import { startBroker, type TestBroker } from '../helpers/broker.js'
import { Consumer, tmp } from '../helpers/agent.js'
import { openReply } from '../helpers/replies.js'
import { cairnProgram, main } from '../../cli/cli.js'

const run = promisify(execFile)
const bundle = new URL('../../dist/cairn.mjs', import.meta.url).pathname
const cairn = (args: string[]) => run(process.execPath, [bundle, ...args], { timeout: 30_000 }).catch((e: { code: number; stdout: string; stderr: string }) => e)
let broker: TestBroker
t.before(async () => {
  broker = await startBroker()
})
t.teardown(async () => broker.close())

const startAgent = (args: string[]): ChildProcess => {
  const child = spawn(process.execPath, [bundle, 'agent', ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
  child.stdout!.resume()
  child.stderr!.resume()
  return child
}
const exited = (c: ChildProcess) => new Promise<number | null>(r => (c.exitCode !== null ? r(c.exitCode) : c.once('exit', code => r(code))))

t.test('the "done when" walk-through', async t => {
  const dir = tmp()
  const state = join(dir, 'a')
  const keygen = await cairn(['fleet', 'keygen', '--out', join(dir, 'op')])
  t.match(keygen.stdout, /key id: [a-z2-7]{52}/)
  const sub = await Consumer.connect(broker.url, 'cairn/v1/demo/#', { protocolVersion: 4 })
  t.teardown(() => sub.close())
  const agent = startAgent(['--broker', broker.url, '--fleet', 'demo', '--state-dir', state, '--operator-key', join(dir, 'op.pub'), '--health-port', '0'])
  t.teardown(() => agent.kill('SIGKILL'))
  const online = await sub.waitFor(m => m.find(x => x.topic.endsWith('/status') && x.json?.state === 'online'), 15_000, 'online status')
  t.equal(online.retain, false, 'live delivery (retained copies go to late subscribers)')
  await sub.waitFor(m => m.find(x => x.topic.endsWith('/telemetry')), 15_000, 'telemetry within 15 s')
  const idOut = await cairn(['id', '--state-dir', state, '--json'])
  const { deviceId } = JSON.parse(idOut.stdout) as { deviceId: string }
  t.equal(online.json?.device, deviceId, '`cairn id` prints the id the agent uses')
  const ping = await cairn(['fleet', 'cmd', deviceId, 'ping', '--broker', broker.url, '--fleet', 'demo', '--key', join(dir, 'op')])
  t.equal((ping as { code?: number }).code ?? 0, 0, 'fleet cmd exits 0')
  t.match(JSON.parse(ping.stdout), { status: 'ok', data: { pong: true } })

  const hasMosquittoPub = spawnSync('mosquitto_pub', ['--help']).error === undefined
  if (!hasMosquittoPub) t.comment('SKIPPED mosquitto_pub part: mosquitto-clients not installed (CI installs it)')
  else {
    const topic = `cairn/v1/demo/${deviceId}/cmd/ping`
    const mpub = (payload: string) => run('mosquitto_pub', ['-p', String(broker.port), '-h', '127.0.0.1', '-q', '1', '-t', topic, '-m', payload])
    // Each reply is an envelope signed by the device (an unsigned one would not count).
    const replies = () => sub.on('/reply').flatMap(m => openReply(m.json, deviceId) ?? [])
    await mpub('{"hello":"unsigned"}')
    await sub.waitFor(() => replies().find(r => r.error?.code === 'BAD_REQUEST'), 5000, 'unsigned refused')
    const printed = await cairn(['fleet', 'cmd', deviceId, 'ping', '--fleet', 'demo', '--key', join(dir, 'op'), '--print'])
    const env = JSON.parse(printed.stdout) as { id: string }
    await mpub(printed.stdout.trim())
    await sub.waitFor(() => replies().find(r => r.id === env.id && r.status === 'ok'), 5000, 'the first copy accepted')
    await mpub(printed.stdout.trim())
    const replay = await sub.waitFor(() => replies().find(r => r.id === env.id && r.error?.code === 'REPLAY'), 5000, 'the replay refused')
    t.ok(replay, 'a replayed command published by mosquitto_pub is refused')
  }

  agent.kill('SIGKILL')
  await exited(agent)
  const offline = await sub.waitFor(m => m.find(x => x.topic.endsWith('/status') && x.json?.state === 'offline'), 10_000, 'offline after kill -9')
  t.equal(offline.json?.reason, 'connection-lost', 'the Will marks it offline')
  const lastOnline = sub.messages.filter(x => x.topic.endsWith('/status') && x.json?.state === 'online').pop()
  t.ok(
    typeof offline.json?.conn === 'number' && offline.json.conn === lastOnline?.json?.conn,
    "the Will carries its connection's conn, as that connection's online status did (ts cannot order them: the Will's is older)",
  )
  t.ok((offline.json?.ts as number) <= (lastOnline?.json?.ts as number), 'the Will was made when the connection opened, before the online status')
})

t.test('SIGTERM publishes offline and exits 0', async t => {
  const state = tmp()
  const sub = await Consumer.connect(broker.url, 'cairn/v1/term/+/status', { protocolVersion: 4 })
  t.teardown(() => sub.close())
  const agent = startAgent(['--broker', broker.url, '--fleet', 'term', '--state-dir', state, '--health-port', '0'])
  await sub.waitFor(m => m.find(x => x.json?.state === 'online'), 15_000, 'online')
  agent.kill('SIGTERM')
  t.equal(await exited(agent), 0)
  const off = await sub.waitFor(m => m.find(x => x.json?.state === 'offline'), 5000, 'offline')
  t.equal(off.json?.reason, 'shutdown')
})

t.test('bad configuration and bad state dirs fail fast with a clear message', async t => {
  const dir = tmp()
  const r1 = await cairn(['agent', '--fleet', 'demo', '--state-dir', dir, '--telemetry-period', '0'])
  t.equal((r1 as { code: number }).code, 2)
  t.match(r1.stderr, /telemetry\.periodS: .*got 0 \(from flag --telemetry-period\)/)
  writeFileSync(join(dir, 'cairn.yaml'), 'fleet: demo\nbroker:\n  url: http://nope\n')
  const r2 = await cairn(['agent', '--config', join(dir, 'cairn.yaml'), '--state-dir', dir])
  t.match(r2.stderr, /broker\.url: .*from file .*cairn\.yaml/)
  writeFileSync(join(dir, 'file'), 'x')
  const r3 = await cairn(['agent', '--fleet', 'demo', '--state-dir', join(dir, 'file', 'sub')])
  t.equal((r3 as { code: number }).code, 1)
  t.match(r3.stderr, /state dir .*cannot create \(ENOTDIR\)/)
  const r4 = await cairn(['fleet', 'cmd', 'x'])
  t.equal((r4 as { code: number }).code, 2)
  const r5 = await cairn(['nonsense'])
  t.match(r5.stderr, /unknown command 'nonsense'/)
})

/** `main` in this process, its output captured. */
async function inProcess(args: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = ''
  let err = ''
  const code = await main(args, { out: { write: (s: string) => (out += s) }, err: { write: (s: string) => (err += s) }, env: {} })
  return { code, out, err }
}

/** Every command path of the tree: [], ['agent'], ['fleet'], ['fleet', 'cmd'], … */
function commandPaths(cmd: Command, path: string[] = []): string[][] {
  return [path, ...cmd.commands.flatMap(c => commandPaths(c, [...path, c.name()]))]
}

/** A loopback port nothing listens on: tcpmux's port 1, which no test binds. (A port a
 * test had just closed could be taken by the next server another test starts, and the
 * client then met that server instead of a refusal, as happened under load.) */
const REFUSED_PORT = 1

/** A server on loopback that answers every connection with bytes that are not MQTT. */
async function notMqttServer(t: Test): Promise<string> {
  const server = createServer(sock => {
    // resume(): read to the client's FIN, so the socket closes when the client's does.
    sock.on('error', () => {}).resume()
    sock.end('HTTP/1.1 400 Bad Request\r\n\r\n')
  })
  await new Promise<void>(r => server.listen(0, '127.0.0.1', r))
  // Nothing is destroyed here: the client must close its own socket (the server's close
  // waits for every connection, so one the client leaked would hang this teardown).
  t.teardown(() => new Promise(r => server.close(r)))
  return `mqtt://127.0.0.1:${(server.address() as { port: number }).port}`
}

t.test('every command and subcommand answers --help and -h with its usage and an example', async t => {
  const nothing = { write: () => true }
  const paths = commandPaths(cairnProgram({ out: nothing, err: nothing, env: {}, setExitCode: () => undefined }))
  t.ok(paths.length > 30, `the whole tree is walked (${paths.length} commands)`)
  for (const path of paths) {
    for (const flag of ['--help', '-h']) {
      const r = await inProcess([...path, flag])
      const name = ['cairn', ...path].join(' ')
      t.equal(r.code, 0, `${name} ${flag} exits 0`)
      t.equal(r.err, '', `${name} ${flag}: nothing on stderr`)
      t.match(r.out, new RegExp(`^Usage: ${name} `, 'm'), `${name} ${flag}: a usage line naming it`)
      t.match(r.out, /^Examples?:\n {2}(sudo )?cairn /m, `${name} ${flag}: an example`)
    }
  }
  const all = await inProcess(['help'])
  t.equal(all.code, 0)
  for (const [top] of paths.filter(p => p.length === 1)) t.match(all.out, new RegExp(`^  ${top}\\b`, 'm'), `cairn help lists ${top}`)
  t.same(await inProcess([]), all, 'cairn alone is cairn help')
  const one = await inProcess(['help', 'fleet'])
  t.equal(one.code, 0)
  t.match(one.out, /^Usage: cairn fleet /m, 'cairn help <command>')
})

t.test('unknown commands and flags: one line and the nearest name, exit 2', async t => {
  const cmd = await inProcess(['valdator'])
  t.equal(cmd.code, 2)
  t.equal(cmd.err, "cairn: unknown command 'valdator'\n(Did you mean validator?)\n")
  t.equal(cmd.out, '')
  const flag = await inProcess(['agent', '--brokr', 'x'])
  t.equal(flag.code, 2)
  t.equal(flag.err, "cairn agent: unknown option '--brokr'\n(Did you mean --broker?)\n")
  const deep = await inProcess(['fleet', 'rollout', 'stauts'])
  t.equal(deep.code, 2)
  t.match(deep.err, /^cairn fleet rollout: unknown command 'stauts'\n\(Did you mean status\?\)\n$/)
})

t.test('fleet cmd checks the device id, the command and its body before it connects', async t => {
  const dir = tmp()
  const key = join(dir, 'op')
  t.equal((await inProcess(['fleet', 'keygen', '--out', key])).code, 0)
  const port = REFUSED_PORT
  const cmd = (...args: string[]) => inProcess(['fleet', 'cmd', ...args, '--broker', `mqtt://127.0.0.1:${port}`, '--fleet', 'demo', '--key', key])
  const cases: Array<[string[], RegExp]> = [
    [['Not/A-Device', 'ping'], /^cairn fleet cmd: "Not\/A-Device" is not a device id: /],
    [['abc', 'pnig'], /^cairn fleet cmd: unknown command "pnig"; did you mean ping\? \(known: ping, /],
    [['abc', 'restart-agnet'], /did you mean restart-agent\?/],
    [['abc', 'logs', '{"lines":0}'], /^cairn fleet cmd: body of logs: \/lines .*greater or equal to 1/],
    [['abc', 'pin-version', '{"version":"latest"}'], /^cairn fleet cmd: body of pin-version: \/version /],
    [['abc', 'ping', '{"extra":1}'], /^cairn fleet cmd: body of ping: /],
    [['abc', 'ping', '{nope'], /^cairn fleet cmd: json-body is not JSON/],
  ]
  for (const [args, message] of cases) {
    const r = await cmd(...args)
    t.equal(r.code, 2, `${args.join(' ')}: exit 2`)
    t.match(r.err, message, `${args.join(' ')}: says why`)
    t.equal(r.err.split('\n').length, 2, `${args.join(' ')}: one line`)
    t.notMatch(r.err, /broker/, `${args.join(' ')}: never tried the broker`)
  }
  const good = await cmd('abc', 'logs', '{"lines":5}')
  t.equal(good.code, 1, 'a good command does go to the broker')
  t.match(good.err, /cannot reach the broker/)
})

t.test('a broker that cannot be reached is one line and exit 1, no stack', async t => {
  const dir = tmp()
  const key = join(dir, 'op')
  await cairn(['fleet', 'keygen', '--out', key])
  const url = `mqtt://127.0.0.1:${REFUSED_PORT}`
  const r = (await cairn(['fleet', 'cmd', 'abc', 'ping', '--broker', url, '--fleet', 'demo', '--key', key])) as { code?: number; stderr: string }
  t.equal(r.code, 1)
  t.equal(r.stderr, `cairn fleet cmd: cannot reach the broker at ${url} (connection refused)\n`)
  t.notMatch(r.stderr, /^ {4}at /m, 'no stack trace')
  const task = await inProcess(['task', 'submit', 'abc', '--broker', url, '--fleet', 'demo', '--key', key, '--type', 'cache', '--cid', 'a'.repeat(64), '--origin', 'http://127.0.0.1:1/'])
  t.equal(task.code, 1)
  t.equal(task.err, `cairn task submit: cannot reach the broker at ${url} (connection refused)\n`)
  const rollout = await inProcess(['fleet', 'rollout', 'status', '--broker', url, '--fleet', 'demo'])
  t.equal(rollout.code, 1)
  t.equal(rollout.err, `cairn fleet rollout status: cannot reach the broker at ${url} (connection refused)\n`)
})

t.test('a server that does not speak MQTT is one line and exit 1, no stack', async t => {
  const dir = tmp()
  const key = join(dir, 'op')
  await inProcess(['fleet', 'keygen', '--out', key])
  const url = await notMqttServer(t)
  const r = await inProcess(['fleet', 'cmd', 'abc', 'ping', '--broker', url, '--fleet', 'demo', '--key', key, '--timeout', '5'])
  t.equal(r.code, 1, r.err)
  t.match(r.err, new RegExp(`^cairn fleet cmd: cannot reach the broker at ${url.replaceAll('.', '\\.')} \\(the server does not speak MQTT \\(.+\\)\\)\n$`))
  t.notMatch(r.err, /^ {4}at /m, 'no stack trace')
})

t.test('--key given a public key says so, rather than "chmod 600"', async t => {
  const dir = tmp()
  const key = join(dir, 'op')
  await inProcess(['fleet', 'keygen', '--out', key])
  const r = await inProcess(['fleet', 'cmd', 'abc', 'ping', '--fleet', 'demo', '--key', `${key}.pub`, '--print'])
  t.equal(r.code, 2)
  t.match(r.err, /op\.pub: that is a public key; this needs the private key file/)
  t.notMatch(r.err, /chmod/)
})

t.test('cairn id --id-only prints just the device id', async t => {
  const state = tmp()
  const r = await inProcess(['id', '--state-dir', state, '--init', '--id-only'])
  t.equal(r.code, 0, r.err)
  const { deviceId } = JSON.parse((await inProcess(['id', '--state-dir', state, '--json'])).out) as { deviceId: string }
  t.equal(r.out, `${deviceId}\n`)
  t.equal((await inProcess(['id', '--state-dir', state, '--id-only', '--json'])).code, 2, '--id-only and --json do not mix')
})

t.test('read-only and full state dirs (tmpfs mounts; needs root)', async t => {
  const base = tmp()
  const ro = join(base, 'ro')
  const full = join(base, 'full')
  mkdirSync(ro)
  mkdirSync(full)
  const m1 = spawnSync('mount', ['-t', 'tmpfs', '-o', 'ro,size=1m', 'tmpfs', ro])
  if (m1.status !== 0) {
    t.comment(`SKIPPED: cannot mount tmpfs here (${m1.stderr.toString().trim() || 'not root'}); CI runs as root`)
    return
  }
  t.teardown(() => void spawnSync('umount', ['-l', ro]))
  const r1 = await cairn(['agent', '--fleet', 'demo', '--state-dir', ro, '--broker', broker.url])
  t.equal((r1 as { code: number }).code, 1)
  t.match(r1.stderr, /state dir .*cannot write device key \(EROFS\)/, 'read-only: a clear error')
  spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=64k', 'tmpfs', full])
  t.teardown(() => void spawnSync('umount', ['-l', full]))
  spawnSync('dd', ['if=/dev/zero', `of=${join(full, 'filler')}`, 'bs=4k', 'count=1000'])
  const r2 = await cairn(['agent', '--fleet', 'demo', '--state-dir', full, '--broker', broker.url, '--health-port', '0'])
  t.equal((r2 as { code: number }).code, 1)
  t.match(r2.stderr, /(disk full|ENOSPC|SQLITE_FULL|cannot write device key)/, 'full disk: a clear error')
})

t.test('SIGHUP reloads the config file: a new telemetry period applies live', async t => {
  const dir = tmp()
  const file = join(dir, 'cairn.yaml')
  writeFileSync(file, `fleet: hup\nstateDir: ${join(dir, 'state')}\nbroker:\n  url: ${broker.url}\ntelemetry:\n  periodS: 3600\nhealth:\n  port: 0\n`)
  const sub = await Consumer.connect(broker.url, 'cairn/v1/hup/+/telemetry', { protocolVersion: 4 })
  t.teardown(() => sub.close())
  const agent = startAgent(['--config', file])
  t.teardown(() => agent.kill('SIGKILL'))
  await sub.waitFor(m => m.length >= 1, 15_000, 'the first sample')
  await new Promise(r => setTimeout(r, 1500))
  t.equal(sub.messages.length, 1, 'one sample an hour')
  writeFileSync(file, `fleet: hup\nstateDir: ${join(dir, 'state')}\nbroker:\n  url: ${broker.url}\ntelemetry:\n  periodS: 1\nhealth:\n  port: 0\n`)
  agent.kill('SIGHUP')
  await sub.waitFor(m => m.length >= 3, 10_000, 'samples every second after SIGHUP')
  t.pass('the new period is live without a restart')
  agent.kill('SIGTERM')
  t.equal(await exited(agent), 0)
})

t.test('broker credentials: a password-protected Mosquitto accepts the right ones only', async t => {
  const dir = tmp()
  const pwfile = join(dir, 'passwd')
  const mk = spawnSync('mosquitto_passwd', ['-b', '-c', pwfile, 'device', 's3cret'])
  if (mk.error || mk.status !== 0) {
    t.comment('SKIPPED: mosquitto_passwd not available (CI installs mosquitto)')
    return
  }
  const secured = await startBroker({ anonymous: false, extraConfig: `password_file ${pwfile}` })
  if (secured.kind !== 'mosquitto') {
    await secured.close()
    t.comment('SKIPPED: needs mosquitto (the aedes fallback has no password file)')
    return
  }
  t.teardown(() => secured.close())
  writeFileSync(join(dir, 'pw'), 's3cret\n', { mode: 0o600 })
  const sub = await Consumer.connect(secured.url, 'cairn/v1/auth/+/status', { protocolVersion: 4, username: 'device', password: 's3cret' })
  t.teardown(() => sub.close())
  const good = startAgent([
    '--broker',
    secured.url,
    '--fleet',
    'auth',
    '--state-dir',
    join(dir, 'a'),
    '--health-port',
    '0',
    '--set',
    'broker.username=device',
    '--set',
    `broker.passwordFile=${join(dir, 'pw')}`,
  ])
  t.teardown(() => good.kill('SIGKILL'))
  await sub.waitFor(m => m.find(x => x.json?.state === 'online'), 15_000, 'online with the right password')
  const bad = startAgent(['--broker', secured.url, '--fleet', 'auth', '--state-dir', join(dir, 'b'), '--health-port', '0', '--set', 'broker.username=device', '--set', 'broker.password=wrong'])
  t.teardown(() => bad.kill('SIGKILL'))
  await new Promise(r => setTimeout(r, 2500))
  t.equal(onlineDevices(sub), 1, 'the wrong password never gets online')
  t.equal(bad.exitCode, null, 'the agent keeps retrying rather than dying')
})

t.test('SIGHUP with a changed fleet restarts in place: offline (restart) on the old tree, online on the new', async t => {
  const dir = tmp()
  const file = join(dir, 'cairn.yaml')
  const conf = (fleet: string) => `fleet: ${fleet}\nstateDir: ${join(dir, 'state')}\nbroker:\n  url: ${broker.url}\nhealth:\n  port: 0\n`
  writeFileSync(file, conf('hup-a'))
  const sub = await Consumer.connect(broker.url, ['cairn/v1/hup-a/+/status', 'cairn/v1/hup-b/+/status'], { protocolVersion: 4 })
  t.teardown(() => sub.close())
  const agent = startAgent(['--config', file])
  t.teardown(() => agent.kill('SIGKILL'))
  await sub.waitFor(m => m.find(x => x.topic.startsWith('cairn/v1/hup-a/') && x.json?.state === 'online'), 15_000, 'online in hup-a')
  writeFileSync(file, conf('hup-b'))
  agent.kill('SIGHUP')
  const off = await sub.waitFor(m => m.find(x => x.topic.startsWith('cairn/v1/hup-a/') && x.json?.state === 'offline'), 10_000, 'offline in hup-a')
  t.equal(off.json?.reason, 'restart')
  t.equal(off.json?.fleet, 'hup-a', 'the farewell names the fleet it was in')
  await sub.waitFor(m => m.find(x => x.topic.startsWith('cairn/v1/hup-b/') && x.json?.state === 'online'), 15_000, 'online in hup-b')
  t.pass('restarted in place with the new fleet')
  agent.kill('SIGTERM')
  t.equal(await exited(agent), 0)
})

t.test('TLS: mqtts:// to a Mosquitto with its own CA; an untrusted CA is refused', async t => {
  const dir = tmp()
  const ossl = (args: string[]) => spawnSync('openssl', args, { cwd: dir, stdio: 'pipe' })
  ossl(['req', '-x509', '-newkey', 'ed25519', '-nodes', '-keyout', 'ca.key', '-out', 'ca.crt', '-days', '2', '-subj', '/CN=cairn test CA'])
  ossl(['req', '-newkey', 'ed25519', '-nodes', '-keyout', 'server.key', '-out', 'server.csr', '-subj', '/CN=127.0.0.1'])
  writeFileSync(join(dir, 'san.ext'), 'subjectAltName=IP:127.0.0.1\n')
  const sign = ossl(['x509', '-req', '-in', 'server.csr', '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'server.crt', '-days', '2', '-extfile', 'san.ext'])
  ossl(['req', '-x509', '-newkey', 'ed25519', '-nodes', '-keyout', 'other.key', '-out', 'other.crt', '-days', '2', '-subj', '/CN=other CA'])
  t.equal(sign.status, 0, 'test certificates made with openssl')
  const tls = await startBroker({ extraConfig: `cafile ${join(dir, 'ca.crt')}\ncertfile ${join(dir, 'server.crt')}\nkeyfile ${join(dir, 'server.key')}` })
  t.teardown(() => tls.close())
  if (tls.kind !== 'mosquitto') {
    t.comment('SKIPPED: needs mosquitto (the aedes fallback has no TLS listener here)')
    return
  }
  const url = `mqtts://127.0.0.1:${tls.port}`
  const sub = await Consumer.connect(url, 'cairn/v1/tls/+/status', { protocolVersion: 4, ca: readFileSync(join(dir, 'ca.crt')) })
  t.teardown(() => sub.close())
  const good = startAgent(['--broker', url, '--fleet', 'tls', '--state-dir', join(dir, 'a'), '--health-port', '0', '--set', `broker.ca=${join(dir, 'ca.crt')}`])
  t.teardown(() => good.kill('SIGKILL'))
  await sub.waitFor(m => m.find(x => x.json?.state === 'online'), 15_000, 'online over TLS')
  const bad = startAgent(['--broker', url, '--fleet', 'tls', '--state-dir', join(dir, 'b'), '--health-port', '0', '--set', `broker.ca=${join(dir, 'other.crt')}`])
  t.teardown(() => bad.kill('SIGKILL'))
  await new Promise(r => setTimeout(r, 2500))
  t.equal(onlineDevices(sub), 1, 'a broker certificate from another CA is refused')
})

/** Devices seen online (one device may publish online more than once, e.g. when its
 * inference executor joins and the status is republished). */
function onlineDevices(sub: Consumer): number {
  return new Set(sub.messages.filter(x => x.json?.state === 'online').map(x => x.topic)).size
}

t.test('output piped into a reader that has gone (| head) ends quietly, exit 0', async t => {
  // The reading end is closed before the CLI (a fresh Node process) gets to write.
  const child = spawn(process.execPath, [bundle, 'fleet', 'cmd', '--help'], { stdio: ['ignore', 'pipe', 'pipe'] })
  child.stdout.destroy()
  let stderr = ''
  child.stderr.on('data', d => (stderr += d))
  const code = await new Promise<number | null>(r => child.on('exit', c => r(c)))
  t.notMatch(stderr, /EPIPE|Unhandled/, 'no EPIPE stack')
  t.equal(code, 0)
})
