// Faults: the broker stopped and restarted under load, the agent killed with SIGKILL
// in the middle of draining a backlog. Nothing that was queued may be lost; consumers
// de-duplicate by message id.

import t from 'tap'
import { spawn, type ChildProcess } from 'node:child_process'
import { startBroker, type TestBroker } from '../helpers/broker.js'
import { Consumer, sleep, startTestAgent, tmp, until } from '../helpers/agent.js'
import { ManualClock } from '../../protocol/clock.js'
import { loadOrCreateIdentity } from '../../protocol/identity.js'
import { MsgClass, Outbox } from '../../agent/core/outbox.js'
import { openStateDb } from '../../agent/core/state-db.js'

const bundle = new URL('../../dist/cairn.mjs', import.meta.url).pathname
let broker: TestBroker
t.before(async () => {
  // A consumer that falls behind must not lose messages to Mosquitto's default
  // 1,000-message queue limit: that would be the broker's loss, not the agent's.
  broker = await startBroker({ extraConfig: 'max_queued_messages 100000' })
})
t.teardown(async () => broker.close())

/** Fills a fresh state dir's outbox with must-keep records, as after a long outage;
 * returns the device id they are addressed from. */
function prefillBacklog(stateDir: string, prefix: string, total: number, pad: string): string {
  const { identity } = loadOrCreateIdentity(stateDir)
  const id = identity.deviceId
  const db = openStateDb(stateDir)
  const ob = new Outbox(db, { clock: new ManualClock(Date.now()), maxBytes: 64 << 20, lazyWriteMs: 0, mustKeepDays: 30 })
  db.transaction(() => {
    for (let i = 0; i < total; i++) {
      const msgId = `${prefix}${String(i).padStart(6, '0')}`
      const body = pad ? { id: msgId, pad } : { id: msgId }
      ob.enqueue({ id: msgId, cls: MsgClass.mustKeep, topic: `cairn/v1/test/${id}/event`, payload: Buffer.from(JSON.stringify(body)) })
    }
  })()
  ob.close()
  db.close()
  return id
}

const uniqueIds = (c: Consumer, suffix: string) => new Set(c.on(suffix).map(m => m.json?.id as string))

t.test('broker stopped and restarted under steady load: every event arrives', async t => {
  const a = await startTestAgent({ url: broker.url, mqttVersion: broker.mqtt5 ? 5 : 4 })
  t.teardown(() => a.stop())
  await until(() => a.agent.link.connected, 5000, 'connected')
  const c = await Consumer.connect(broker.url, `cairn/v1/test/${a.agent.deviceId}/event`, { clientId: 'fault-consumer-1', clean: false, protocolVersion: 4 })
  t.teardown(() => c.close())
  const total = 600
  for (let i = 0; i < total; i++) {
    a.agent.publishEvent('load.test', { i })
    if (i === 200) await broker.stop('SIGTERM')
    if (i === 400) await broker.start()
    await sleep(5)
  }
  const loadEvents = () => c.on('/event').filter(m => m.json?.kind === 'load.test')
  const unique = () => new Set(loadEvents().map(m => (m.json?.data as { i: number }).i))
  await c.waitFor(() => unique().size >= total || undefined, 30_000, `${total} events after the broker restart`)
  t.same(
    [...unique()].sort((x, y) => x - y),
    [...Array(total).keys()],
    'every event arrived',
  )
  const dupes = loadEvents().length - unique().size
  t.comment(`duplicates delivered (de-duplicated by id): ${dupes}`)
  t.ok(a.agent.metrics.get('cairn_mqtt_reconnects_total')! >= 1, 'the agent reconnected')
  // The consumer can see the last event a moment before the agent reads its PUBACK.
  await until(() => a.agent.outbox.depth() === 0, 5000, 'the outbox to drain')
  t.equal(a.agent.outbox.depth(), 0, 'the outbox drained')
})

t.test('agent killed with SIGKILL while draining a backlog: restarted, nothing is lost', async t => {
  const stateDir = tmp()
  const total = 3000
  const id = prefillBacklog(stateDir, 'backlog-', total, 'x'.repeat(250))
  const c = await Consumer.connect(broker.url, `cairn/v1/test/${id}/event`, { clientId: 'fault-consumer-2', clean: false, protocolVersion: 4 })
  t.teardown(() => c.close())
  const run = (): ChildProcess =>
    spawn(process.execPath, [bundle, 'agent', '--broker', broker.url, '--fleet', 'test', '--state-dir', stateDir, '--health-port', '0', '--telemetry-period', '3600'], { stdio: 'ignore' })
  const backlog = () => [...uniqueIds(c, '/event')].filter(x => x.startsWith('backlog-')).length
  const first = run()
  await c.waitFor(() => backlog() >= 300 || undefined, 20_000, 'the drain to start')
  first.kill('SIGKILL')
  await new Promise(r => first.once('exit', r))
  const atKill = backlog()
  t.ok(atKill < total, `killed mid-drain (${atKill} of ${total} delivered)`)
  const second = run()
  t.teardown(() => second.kill('SIGKILL'))
  await c.waitFor(() => backlog() >= total || undefined, 30_000, 'the rest of the backlog')
  t.equal(backlog(), total, 'every backlog record arrived exactly once after de-duplication')
  second.kill('SIGTERM')
  const code = await new Promise(r => second.once('exit', r))
  t.equal(code, 0, 'SIGTERM exits cleanly')
  const db = openStateDb(stateDir)
  t.equal((db.prepare('SELECT COUNT(*) AS n FROM outbox').get() as { n: number }).n, 0, 'the outbox on disk is empty')
  db.close()
})

t.test('the connection drops with a full window in flight: the drain resumes and delivers everything', async t => {
  const stateDir = tmp()
  const total = 4000
  const id = prefillBacklog(stateDir, 'window-', total, 'y'.repeat(250))
  const c = await Consumer.connect(broker.url, `cairn/v1/test/${id}/event`, { clientId: 'fault-consumer-3', clean: false, protocolVersion: 4 })
  t.teardown(() => c.close())
  const a = await startTestAgent({ url: broker.url, stateDir, mqttVersion: broker.mqtt5 ? 5 : 4, values: { log: { level: 'info' } } })
  t.teardown(() => a.stop())
  const got = () => [...uniqueIds(c, '/event')].filter(x => x.startsWith('window-')).length
  await c.waitFor(() => got() >= 200 || undefined, 20_000, 'the drain to start')
  const inflightAtDrop = a.agent.link.inflightCount()
  await broker.stop('SIGTERM')
  t.comment(`dropped with ${inflightAtDrop} publishes in flight, ${got()} of ${total} delivered`)
  await sleep(500)
  await broker.start()
  await c.waitFor(() => got() >= total || undefined, 30_000, 'the whole backlog after the drop')
  t.equal(got(), total, 'every record arrived')
  await until(() => a.agent.outbox.depth() === 0, 5000, 'the outbox to drain')
  t.equal(a.agent.link.inflightCount(), 0, 'nothing stranded in flight')
})

t.test('SIGTERM in the middle of a large backlog: a prompt clean exit, nothing lost', async t => {
  const stateDir = tmp()
  const total = 20_000
  const id = prefillBacklog(stateDir, 'term-', total, '')
  const c = await Consumer.connect(broker.url, `cairn/v1/test/${id}/event`, { protocolVersion: 4 })
  t.teardown(() => c.close())
  const agent = spawn(process.execPath, [bundle, 'agent', '--broker', broker.url, '--fleet', 'test', '--state-dir', stateDir, '--health-port', '0', '--telemetry-period', '3600'], { stdio: 'ignore' })
  t.teardown(() => agent.kill('SIGKILL'))
  // "Prompt" is measured against this run's own drain rate, not a wall-clock limit: the
  // exit must come well before delivering the rest of the backlog would have.
  const seen = () => c.on('/event').length
  await c.waitFor(() => seen() >= 100 || undefined, 20_000, 'the drain to start')
  const n1 = seen()
  const t1 = Date.now()
  await c.waitFor(() => seen() >= n1 + 500 || undefined, 20_000, 'the drain to go on')
  const ratePerMs = (seen() - n1) / Math.max(1, Date.now() - t1)
  const t0 = Date.now()
  const drainRestMs = (total - seen()) / ratePerMs
  agent.kill('SIGTERM')
  const code = await new Promise(r => agent.once('exit', r))
  const exitMs = Date.now() - t0
  t.equal(code, 0, 'clean exit')
  t.ok(exitMs < drainRestMs / 2, `exited in ${exitMs} ms; delivering the other ${total - n1 - 500}-odd records at this run's rate would take ${Math.round(drainRestMs)} ms`)
  await sleep(300)
  const delivered = new Set(
    c
      .on('/event')
      .map(m => m.json?.id as string)
      .filter(x => x?.startsWith('term-')),
  )
  const db = openStateDb(stateDir)
  // The agent's own records (its start event, status) share the outbox: only the backlog counts.
  const left = (db.prepare('SELECT id FROM outbox').all() as Array<{ id: string }>).map(r => r.id).filter(x => x.startsWith('term-'))
  db.close()
  const union = new Set([...delivered, ...left])
  const missing = [...Array(total).keys()].map(i => `term-${String(i).padStart(6, '0')}`).filter(x => !union.has(x))
  t.same(missing.slice(0, 10), [], `nothing lost: ${delivered.size} delivered + ${left.length} kept on disk cover all ${total}`)
  t.equal(union.size, total, 'and nothing but the backlog counted')
})
