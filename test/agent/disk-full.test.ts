// Issue 17, finding 2: a full disk never kills the agent. The built agent runs on a
// small tmpfs state dir that is then filled to the last byte: it keeps its broker link,
// publishes what it can at QoS 0, says DISK_FULL in its status and /metrics, starts
// again on the still-full disk, and catches up when space returns. Also with the broker
// down while the disk fills. (Mounting a tmpfs needs root; CI runs as root.)

import t from 'tap'
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { mkdirSync, openSync, closeSync, rmSync, writeSync } from 'node:fs'
import { join } from 'node:path'
import { startBroker, type TestBroker } from '../helpers/broker.js'
import { Consumer, operatorKey, tmp } from '../helpers/agent.js'
import { sendCommand, signCommand } from '../../fleet/command-client.js'
import { loadOrCreateIdentity } from '../../protocol/identity.js'

const bundle = new URL('../../dist/cairn.mjs', import.meta.url).pathname
const FLEET = 'full'

let broker: TestBroker
t.before(async () => {
  broker = await startBroker()
})
t.teardown(async () => broker.close())

/** A fresh tmpfs of `size` (e.g. '16m'), unmounted at teardown; undefined where this
 * process may not mount (not root). */
function tmpfs(t: { teardown(fn: () => unknown): void }, size: string): string | undefined {
  const dir = join(tmp(), 'state')
  mkdirSync(dir)
  const m = spawnSync('mount', ['-t', 'tmpfs', '-o', `size=${size},mode=0700`, 'tmpfs', dir])
  if (m.status !== 0) return undefined
  t.teardown(() => void spawnSync('umount', ['-l', dir]))
  return dir
}

/** Writes a file until the file system has no byte left (ENOSPC). */
function fill(dir: string): string {
  const file = join(dir, `filler-${process.hrtime.bigint()}`)
  const fd = openSync(file, 'w')
  const chunk = Buffer.alloc(64 * 1024)
  try {
    for (;;) writeSync(fd, chunk)
  } catch (err) {
    if ((err as { code?: string }).code !== 'ENOSPC') throw err
  }
  // The last partial pages: byte by byte until nothing fits.
  try {
    for (;;) writeSync(fd, chunk.subarray(0, 512))
  } catch {
    // full
  }
  closeSync(fd)
  return file
}

interface Agent {
  child: ChildProcess
  exited: Promise<number | string | null>
  stderr(): string
  /** Resolves with the health endpoint's base URL once the agent logs it. */
  health: Promise<string>
}

function agent(t: { teardown(fn: () => unknown): void }, state: string, op: string): Agent {
  const args = ['agent', '--broker', broker.url, '--fleet', FLEET, '--state-dir', state, '--health-port', '0', '--operator-key', op, '--telemetry-period', '1', '--proof-period', '2']
  args.push('--set', 'cache.enabled=false', '--set', 'tasks.enabled=false', '--set', 'localApi.enabled=false', '--mqtt-version', broker.mqtt5 ? '5' : '4')
  const child = spawn(process.execPath, [bundle, ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
  let err = ''
  child.stderr!.on('data', d => (err = (err + String(d)).slice(-20_000)))
  let out = ''
  const health = new Promise<string>(resolve => {
    child.stdout!.on('data', d => {
      out = (out + String(d)).slice(-100_000)
      const m = /"url":"(http:\/\/127\.0\.0\.1:\d+)\/healthz"/.exec(out)
      if (m) resolve(m[1]!)
    })
  })
  t.teardown(() => void child.kill('SIGKILL'))
  const exited = new Promise<number | string | null>(r => child.once('exit', (code, signal) => r(signal ?? code)))
  return { child, exited, stderr: () => err, health }
}

/** Waits until the agent's /metrics says its state dir is full. */
async function metricsSayFull(a: Agent): Promise<void> {
  const url = await a.health
  for (;;) {
    const text = await (await fetch(`${url}/metrics`)).text()
    if (/^cairn_storage_full 1$/m.test(text)) return
    await new Promise(r => setTimeout(r, 200))
  }
}

const problems = (m: { json?: Record<string, unknown> | undefined }) => (m.json?.problems as Array<{ code: string }> | undefined)?.map(p => p.code) ?? []

t.test('the disk fills while the agent runs: it stays, says so, restarts, catches up', async t => {
  const state = tmpfs(t, '16m')
  if (!state) return t.comment('SKIPPED: cannot mount a tmpfs here (not root); CI runs as root')
  const op = operatorKey(tmp())
  const device = loadOrCreateIdentity(state).identity.deviceId
  const c = await Consumer.connect(broker.url, `cairn/v1/${FLEET}/${device}/#`, { protocolVersion: broker.mqtt5 ? 5 : 4 })
  t.teardown(() => c.close())
  const a = agent(t, state, op.pub)
  let dead = false
  void a.exited.then(() => (dead = true))
  await c.waitFor(m => m.find(x => x.topic.endsWith('/status') && x.json?.state === 'online'), 30_000, 'online')

  const filler = fill(state)
  const full = await c.waitFor(m => m.find(x => x.topic.endsWith('/status') && problems(x).includes('DISK_FULL')), 30_000, 'DISK_FULL in the status')
  t.equal(full.json?.state, 'online')
  // Still alive a few telemetry periods later, and still publishing (QoS 0, not stored).
  const seen = c.messages.length
  await c.waitFor(m => m.slice(seen).filter(x => x.topic.endsWith('/telemetry')).length >= 3, 30_000, 'telemetry while the disk is full')
  t.notOk(dead, 'the agent did not die')
  const env = signCommand({ fleet: FLEET, device, name: 'ping', body: {}, key: op, ttlMs: 60_000 })
  const reply = await sendCommand(env, { url: broker.url, mqttVersion: broker.mqtt5 ? 5 : 4, timeoutMs: 15_000 })
  t.equal(reply?.status, 'ok', 'a command is answered (its reply sent once, unstored)')

  // A restart with the disk full to the last byte again (the room the agent freed for
  // itself taken too): it comes back, and says so again.
  a.child.kill('SIGTERM')
  const code = await a.exited
  t.ok(code === 0 || code === 'SIGTERM', `a clean stop (${code}); stderr: ${a.stderr().slice(-500)}`)
  const refill = fill(state)
  const before = c.messages.length
  const b = agent(t, state, op.pub)
  let deadB = false
  void b.exited.then(() => (deadB = true))
  await c.waitFor(m => m.slice(before).find(x => x.topic.endsWith('/status') && x.json?.state === 'online' && problems(x).includes('DISK_FULL')), 60_000, 'online again, DISK_FULL')
  t.notOk(deadB, 'started on a full disk')

  // Space comes back: the problem clears and signed heartbeats are stored and sent again.
  rmSync(filler)
  rmSync(refill)
  const cleared = c.messages.length
  await c.waitFor(m => m.slice(cleared).find(x => x.topic.endsWith('/status') && x.json?.state === 'online' && !problems(x).includes('DISK_FULL')), 60_000, 'DISK_FULL cleared')
  await c.waitFor(m => m.slice(cleared).find(x => x.topic.endsWith('/proof')), 30_000, 'a heartbeat after recovery')
  t.notOk(deadB, 'alive throughout')
})

t.test('the disk fills while the broker is down: the agent is still there when it returns', async t => {
  const state = tmpfs(t, '16m')
  if (!state) return t.comment('SKIPPED: cannot mount a tmpfs here (not root); CI runs as root')
  const op = operatorKey(tmp())
  const device = loadOrCreateIdentity(state).identity.deviceId
  const a = agent(t, state, op.pub)
  let dead = false
  void a.exited.then(() => (dead = true))
  const c = await Consumer.connect(broker.url, `cairn/v1/${FLEET}/${device}/status`, { protocolVersion: broker.mqtt5 ? 5 : 4 })
  t.teardown(() => c.close())
  await c.waitFor(m => m.find(x => x.json?.state === 'online'), 30_000, 'online')
  await c.close()
  await broker.stop()
  fill(state)
  // Offline, the agent queues telemetry and events in its outbox: writes meet the full
  // disk within a few telemetry periods, which /metrics tells. Then the broker returns.
  await Promise.race([metricsSayFull(a), a.exited])
  t.notOk(dead, 'alive while offline on a full disk, and it knows')
  await broker.start()
  const c2 = await Consumer.connect(broker.url, `cairn/v1/${FLEET}/${device}/status`, { protocolVersion: broker.mqtt5 ? 5 : 4 })
  t.teardown(() => c2.close())
  await c2.waitFor(m => m.find(x => x.json?.state === 'online' && problems(x).includes('DISK_FULL')), 60_000, 'back online, DISK_FULL')
  t.notOk(dead, 'alive')
})
