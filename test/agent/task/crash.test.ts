// kill -9 of the built agent (dist/cairn.mjs) while tasks run, then a fresh start on the
// same state dir: the running inference task fails with INTERRUPTED, the running cache
// task is resumed and finishes, each with exactly one receipt, and neither id runs
// again when its request is sent a second time. Real executors, a real loopback origin
// that stalls on purpose to keep the tasks running. Once per MQTT version (the agent and
// the dispatcher alike): what a kill -9 loses and resends travels over the broker.

import t from 'tap'
import { spawn, type ChildProcess } from 'node:child_process'
import { existsSync } from 'node:fs'
import { signEnvelope } from '../../../protocol/envelope.js'
import { newId } from '../../../protocol/ids.js'
import { loadOrCreateIdentity } from '../../../protocol/identity.js'
import type { TaskReceipt } from '../../../protocol/task-format.js'
import { verifiedUpdate } from '../../helpers/replies.js'
import { startBroker } from '../../helpers/broker.js'
import { Consumer, operatorKey, tmp } from '../../helpers/agent.js'
import { MQTT_VERSIONS } from '../../helpers/mqtt-versions.js'
import { blob, sha256, startOrigin } from '../cache/origin.js'

const bundle = new URL('../../../dist/cairn.mjs', import.meta.url).pathname
const FLEET = 'test'

for (const { mqttVersion, label } of MQTT_VERSIONS)
  t.test(`${label}: kill -9 mid-task: INTERRUPTED or resumed as documented, one receipt each`, async t => {
    if (!existsSync(bundle)) {
      t.comment('SKIP: dist/cairn.mjs not built (npm run build)')
      return
    }
    const broker = await startBroker()
    t.teardown(() => broker.close())
    const origin = await startOrigin()
    t.teardown(() => origin.close())
    const state = tmp()
    const d = operatorKey(tmp(), 'dispatcher')
    const device = loadOrCreateIdentity(state).identity.deviceId
    const base = `cairn/v1/${FLEET}/${device}/task`
    const c = await Consumer.connect(broker.url, [`${base}/update`, `${base}/receipt`, `cairn/v1/${FLEET}/${device}/status`], { protocolVersion: mqttVersion })
    t.teardown(() => c.close())
    const args = [
      'agent',
      '--broker',
      broker.url,
      '--mqtt-version',
      String(mqttVersion),
      '--fleet',
      FLEET,
      '--state-dir',
      state,
      '--health-port',
      '0',
      '--dispatcher-key',
      d.pub,
      '--set',
      'cache.port=0',
      '--set',
      'proof.enabled=false',
      '--set',
      'tasks.concurrency=2',
    ]
    const start = (): ChildProcess => {
      const child = spawn(process.execPath, [bundle, ...args], { stdio: ['ignore', 'ignore', 'pipe'] })
      child.stderr!.resume()
      t.teardown(() => child.kill('SIGKILL'))
      return child
    }
    const inferenceReady = async (after: number) => {
      const st = await c.waitFor(m => m.slice(after).find(x => (x.json as { tasks?: { types: string[] } } | undefined)?.tasks?.types.includes('inference')), 60_000, 'inference ready in status')
      t.equal(st.json?.mqtt, mqttVersion, `the agent runs ${label}`)
      return st
    }
    const send = async (task: string, type: string, params: unknown) => {
      const now = Date.now()
      const env = signEnvelope(d, {
        type: 'task.request',
        id: newId(now),
        fleet: FLEET,
        sub: device,
        iat: now,
        exp: now + 120_000,
        body: { task, type, params: params as never, deadline: now + 110_000, priority: 0 },
      })
      await c.client.publishAsync(`${base}/request`, JSON.stringify(env), { qos: 1 })
    }
    const updates = (task: string) =>
      c
        .on('/task/update')
        .map(m => verifiedUpdate(m.payload, device, FLEET))
        .filter(u => u.task === task)
    const receipts = (task: string) =>
      c
        .on('/task/receipt')
        .map(m => m.json as unknown as TaskReceipt)
        .filter(r => r.body.task === task)

    const first = start()
    await inferenceReady(0)
    const model = blob(200_000)
    const object = blob(100_000)
    origin.route('/model', { kind: 'stall', body: model, firstBytes: 1000 })
    origin.route('/object', { kind: 'stall', body: object, firstBytes: 1000 })
    await send('crash-infer-01', 'inference', { model: { sha256: sha256(model), urls: [`${origin.url}/model`] }, input: { tensor: { shape: [1, 2], dtype: 'float32', data: [1, 2] } } })
    await send('crash-cache-01', 'cache', { objects: [{ sha256: sha256(object), origins: [`${origin.url}/object`] }] })
    await c.waitFor(() => updates('crash-infer-01').some(u => u.event === 'started') && updates('crash-cache-01').some(u => u.event === 'started'), 20_000, 'both tasks running')
    await new Promise<void>(r => {
      first.once('exit', () => r())
      first.kill('SIGKILL')
    })
    t.same([...receipts('crash-infer-01'), ...receipts('crash-cache-01')], [], 'no receipt before the crash')

    // The object's origin behaves now; the resumed cache task fetches it in full.
    origin.route('/object', { kind: 'ok', body: object })
    const seen = c.messages.length
    start()
    const inf = await c.waitFor(() => receipts('crash-infer-01')[0], 30_000, 'inference receipt')
    t.equal(inf.body.outcome, 'failed')
    t.equal(inf.body.error?.code, 'INTERRUPTED')
    const cache = await c.waitFor(() => receipts('crash-cache-01')[0], 30_000, 'cache receipt')
    t.equal(cache.body.outcome, 'done', `the cache task was resumed and finished: ${JSON.stringify(cache.body.error)}`)
    t.equal(cache.body.attempts, 2)
    t.same(
      cache.body.outputs.map(o => o.sha256),
      [sha256(object)],
    )
    await inferenceReady(seen)

    // Sent again: duplicates, stored state back, no new run.
    await send('crash-infer-01', 'inference', { model: 'demo', input: { tensor: { shape: [1, 2], dtype: 'float32', data: [1, 2] } } })
    const dup = await c.waitFor(() => updates('crash-infer-01').find(u => u.error?.code === 'DUPLICATE'), 10_000, 'duplicate')
    t.equal(dup.state, 'failed')
    // QoS 1 and an outbox whose acknowledgements a kill -9 can lose: updates may come
    // twice, with the same id (consumers de-duplicate on it). Distinct starts: one.
    t.equal(
      new Set(
        updates('crash-infer-01')
          .filter(u => u.event === 'started')
          .map(u => u.id),
      ).size,
      1,
      'started once only',
    )
    t.equal(new Set(receipts('crash-infer-01').map(r => r.id)).size, 1, 'one receipt for the inference task')
    t.equal(new Set(receipts('crash-cache-01').map(r => r.id)).size, 1, 'one receipt for the cache task')
  })
