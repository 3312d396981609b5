// The local API against a hostile neighbourhood, without an agent: a token path someone
// else prepared (symlink, foreign owner, loose mode, junk), a socket path that is not a
// socket, authenticated upgrades that never become WebSockets, and a client library fed
// frames that are JSON but not objects. Each case checks what is left behind, not only
// that nothing threw.

import t from 'tap'
import { chownSync, chmodSync, existsSync, readFileSync, readdirSync, statSync, symlinkSync, writeFileSync } from 'node:fs'
import { spawnSync } from 'node:child_process'
import { createServer } from 'node:http'
import { connect } from 'node:net'
import { join } from 'node:path'
import { WebSocketServer } from 'ws'
import { tmp } from '../../helpers/agent.js'
import { createLogger, LogRing } from '../../../protocol/log.js'
import { LocalBus } from '../../../agent/core/local-bus.js'
import { AgentState, GpioHost } from '../../../agent/device-ui/device-ui.js'
import { startLocalApi, type LocalApi } from '../../../agent/local-api/api-server.js'
import { loadOrCreateToken } from '../../../agent/local-api/token.js'
import { LocalApiClient } from '../../../agent/local-api/api-client.js'
import { createCommandRunner } from '../../../hw/index.js'
import { RawClient, upgradeStatus } from './helpers.js'

const log = createLogger({ level: 'fatal', ring: new LogRing(10), out: { write: () => true } })

function startApi(dir: string, over: { socket?: string; maxClients?: number } = {}): Promise<LocalApi> {
  const bus = new LocalBus()
  return startLocalApi({
    config: { enabled: true, host: '127.0.0.1', port: 0, maxClients: over.maxClients ?? 4, maxFrameBytes: 1 << 20, maxQueueBytes: 1 << 20, ...(over.socket ? { socket: over.socket } : {}) },
    stateDir: dir,
    log,
    host: {
      hello: { device: 'd', fleet: 'f', version: '1.0.0' },
      status: async () => ({ connected: false, board: 'generic', model: 'x', outboxDepth: 0 }),
      bus,
      state: new AgentState({ bus, connected: () => false, network: () => true, provisioningError: () => false }),
      gpio: new GpioHost({ hw: { root: '/nonexistent', run: createCommandRunner() }, driver: 'fake', log, reserved: new Map() }),
      led: () => undefined,
      selfTest: async () => ({ ok: true, failures: [] }),
    },
  })
}

t.test('token file: a planted symlink is refused and its target left alone', async t => {
  const dir = tmp('cairn-lapi-')
  const victim = join(dir, 'device.key')
  writeFileSync(victim, '-----BEGIN PRIVATE KEY-----\nsecret\n', { mode: 0o600 })
  symlinkSync(victim, join(dir, 'api.token'))
  t.throws(() => loadOrCreateToken(join(dir, 'api.token')), { code: 'INVALID_CONFIG', message: /symlink/ })
  t.equal(readFileSync(victim, 'utf8'), '-----BEGIN PRIVATE KEY-----\nsecret\n', 'the target is not overwritten')
  t.equal(statSync(victim).mode & 0o777, 0o600, 'nor chmod-ed')
  // A dangling link (the target does not exist yet) is not followed to create it either.
  const dangling = join(dir, 'nothing-here')
  symlinkSync(dangling, join(dir, 'other.token'))
  t.throws(() => loadOrCreateToken(join(dir, 'other.token')), { code: 'INVALID_CONFIG' })
  t.notOk(existsSync(dangling), 'nothing created through the link')
})

t.test('token file: owned by another user is refused; junk is replaced atomically; a loose mode is tightened', async t => {
  const dir = tmp('cairn-lapi-')
  const file = join(dir, 'api.token')
  if (process.getuid?.() === 0) {
    writeFileSync(file, 'A'.repeat(43) + '\n', { mode: 0o644 })
    chownSync(file, 4242, 4242)
    t.throws(() => loadOrCreateToken(file), { code: 'INVALID_CONFIG', message: /uid 4242/ }, 'a token someone else wrote (and so knows) is not used')
  } else {
    t.comment('not root: cannot make a file owned by another user here; the ownership check is not exercised')
  }
  const junk = join(dir, 'junk.token')
  writeFileSync(junk, 'half a tok', { mode: 0o644 })
  const made = loadOrCreateToken(junk)
  t.equal(made.created, true)
  t.equal(statSync(junk).mode & 0o777, 0o640, 'the replacement is 0640, not the old 0644')
  t.equal(readFileSync(junk, 'utf8'), made.token + '\n')
  t.same(
    readdirSync(dir).filter(f => f.endsWith('.tmp')),
    [],
    'no temporary file left',
  )
  chmodSync(junk, 0o644)
  t.same(loadOrCreateToken(junk), { token: made.token, created: false }, 'a valid token is kept')
  t.equal(statSync(junk).mode & 0o777, 0o640, 'and its mode tightened')
})

t.test('socket path: a regular file or a symlink there is refused, never deleted', async t => {
  const dir = tmp('cairn-lapi-')
  const precious = join(dir, 'cairn.yaml')
  writeFileSync(precious, 'fleet: demo\n')
  await t.rejects(startApi(dir, { socket: precious }), { code: 'INVALID_CONFIG', message: /not a socket/ })
  t.equal(readFileSync(precious, 'utf8'), 'fleet: demo\n', 'a mistyped localApi.socket does not delete the file')
  const link = join(dir, 'link.sock')
  symlinkSync(precious, link)
  await t.rejects(startApi(dir, { socket: link }), { code: 'INVALID_CONFIG', message: /symlink/ })
  t.ok(existsSync(precious), 'the link target survives')
})

t.test('socket path: a stale socket is replaced, a live one is LOCKED', async t => {
  const dir = tmp('cairn-lapi-')
  const stale = join(dir, 'api.sock')
  const other = createServer()
  await new Promise<void>(r => other.listen(stale, r))
  await t.rejects(startApi(dir), { code: 'LOCKED' }, 'a socket that answers belongs to someone')
  t.ok(statSync(stale).isSocket(), 'and is left in place')
  await new Promise<void>(r => other.close(() => r()))
  // A crash leaves the socket file behind (a clean close unlinks it): a child killed while listening.
  spawnSync(process.execPath, ['-e', `require('net').createServer().listen(${JSON.stringify(stale)}, () => process.kill(process.pid, 'SIGKILL'))`])
  t.ok(statSync(stale).isSocket(), 'a stale socket file is there')
  const api = await startApi(dir)
  t.teardown(() => api.close())
  t.equal(statSync(api.socketPath!).mode & 0o777, 0o660)
})

t.test('authenticated upgrades that ws refuses or that vanish do not use up client slots', async t => {
  const dir = tmp('cairn-lapi-')
  const api = await startApi(dir, { maxClients: 2 })
  t.teardown(() => api.close())
  const token = readFileSync(api.tokenFile, 'utf8').trim()
  for (let i = 0; i < 5; i++) {
    const r = await upgradeStatus(api.socketPath!, { authorization: `Bearer ${token}`, 'sec-websocket-version': '99' })
    t.equal(r.status, 400, `bad handshake ${i + 1} refused by ws`)
  }
  const c1 = await RawClient.open(api.socketPath!, token)
  t.teardown(() => c1.close())
  const c2 = await RawClient.open(api.socketPath!, token)
  t.teardown(() => c2.close())
  t.equal(api.clientCount, 2, 'both slots still usable after five refused handshakes')
  await t.rejects(RawClient.open(api.socketPath!, token), { message: 'HTTP 503' }, 'and the limit still holds')
})

t.test('client library: a frame that is JSON but not an object is reported, not thrown', async t => {
  const dir = tmp('cairn-lapi-')
  const path = join(dir, 'fake.sock')
  const wss = new WebSocketServer({ noServer: true })
  const http = createServer()
  http.on('upgrade', (req, socket, head) =>
    wss.handleUpgrade(req, socket, head, ws => {
      for (const f of ['null', '42', '"hi"', '[1]']) ws.send(f)
      ws.send(JSON.stringify({ v: 1, type: 'hello', api: 1, device: 'd', fleet: 'f', version: '1' }))
    }),
  )
  await new Promise<void>(r => http.listen(path, r))
  t.teardown(() => new Promise<void>(r => http.close(() => r())))
  const c = new LocalApiClient({ socketPath: path, token: 'x'.repeat(43) })
  t.teardown(() => c.close())
  const errors: string[] = []
  c.on('error', e => errors.push((e as Error & { code: string }).code))
  const hello = await c.connect()
  t.equal(hello.device, 'd', 'the hello after them still connects')
  t.same(errors, ['BAD_JSON', 'BAD_JSON', 'BAD_JSON', 'BAD_JSON'])
  for (const w of wss.clients) w.terminate()
})

t.test('stop does not wait for a peer that never finishes its upgrade request', async t => {
  const dir = tmp('cairn-lapi-')
  const api = await startApi(dir)
  const half = connect(api.socketPath!)
  const ended = new Promise<void>(r => half.once('close', () => r()))
  half.on('error', () => undefined)
  await new Promise<void>(r => half.once('connect', () => r()))
  half.write('GET /v1 HTTP/1.1\r\nUpgrade: websocket\r\nAuthoriz')
  await api.close()
  await ended
  t.equal(half.destroyed, true, 'the half-open connection was ended by close(), which then returned')
  t.notOk(existsSync(api.socketPath!), 'and the socket file is gone')
})
