// Issue 17, finding 5: a signed set-config must never brick the next start. A value
// that another layer shadows today is still checked on its own before it is persisted,
// and a remote layer that is invalid or damaged at start is set aside (kept under
// another name, reported as an event and in the status), never fatal.

import t from 'tap'
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { loadConfig, REMOTE_CONFIG_FILE } from '../../../agent/config/load-config.js'
import { flagLayer } from '../../../cli/agent-cli.js'
import { sendCommand, signCommand } from '../../../fleet/command-client.js'
import { startBroker, type TestBroker } from '../../helpers/broker.js'
import { Consumer, operatorKey, startTestAgent, tmp } from '../../helpers/agent.js'
import { schemaErrors } from '../../helpers/schemas.js'

let broker: TestBroker
t.before(async () => {
  broker = await startBroker()
})
t.teardown(async () => broker.close())

const base = (dir: string) => ({ fleet: 'rc', 'state-dir': dir })

t.test('a remote value shadowed by a flag is still checked on its own before it is kept', async t => {
  const dir = tmp()
  const flags = flagLayer({ ...base(dir), 'telemetry-period': '1' })
  t.throws(() => loadConfig({ env: {}, flags }, { telemetry: { periodS: 0 } }), { code: 'INVALID_CONFIG', message: /telemetry\.periodS/ })
  t.doesNotThrow(() => loadConfig({ env: {}, flags }, { telemetry: { periodS: 5 } }), 'a valid shadowed value is accepted')
})

t.test('at start, an invalid or damaged remote layer is set aside, not fatal', async t => {
  for (const [what, text] of [
    ['invalid', JSON.stringify({ telemetry: { periodS: 0 } })],
    ['damaged', '{"telemetry": {"periodS": '],
  ] as const) {
    const dir = tmp()
    writeFileSync(join(dir, REMOTE_CONFIG_FILE), text)
    const loaded = loadConfig({ env: {}, flags: flagLayer(base(dir)) })
    t.equal(loaded.config.telemetry.periodS, 10, `${what}: the default applies`)
    t.match(loaded.remoteRejected, { reason: what === 'invalid' ? /telemetry\.periodS/ : /not JSON|damaged/ }, `${what}: the reason is kept`)
    t.notMatch(loaded.sources.get('telemetry.periodS') ?? 'defaults', /remote/, `${what}: nothing comes from the remote layer`)
  }
})

t.test('a device told to brick itself comes back online, says so, and keeps the file aside', async t => {
  const dir = tmp()
  const op = operatorKey(dir)
  const stateDir = join(dir, 'state')
  // Started with a flag that shadows telemetry.periodS: set-config of a bad value is refused.
  const a = await startTestAgent({ url: broker.url, stateDir, fleet: 'rc', operatorKeys: [op.pub], values: { telemetry: { periodS: 1 } } })
  const env = signCommand({ fleet: 'rc', device: a.agent.deviceId, name: 'set-config', body: { telemetry: { periodS: 0 } }, key: op, ttlMs: 60_000 })
  const reply = await sendCommand(env, { url: broker.url, mqttVersion: broker.mqtt5 ? 5 : 4, timeoutMs: 8000 })
  t.match(reply, { status: 'error', error: { code: 'INVALID_CONFIG' } }, 'refused, though shadowed')
  t.notOk(existsSync(join(stateDir, REMOTE_CONFIG_FILE)), 'nothing persisted')
  await a.stop()

  // A bad file from an older agent (or a hand edit): the next start sets it aside.
  writeFileSync(join(stateDir, REMOTE_CONFIG_FILE), JSON.stringify({ telemetry: { periodS: 0 } }))
  const c = await Consumer.connect(broker.url, `cairn/v1/rc/${a.agent.deviceId}/#`, { protocolVersion: broker.mqtt5 ? 5 : 4 })
  t.teardown(() => c.close())
  const b = await startTestAgent({ url: broker.url, stateDir, fleet: 'rc', operatorKeys: [op.pub], values: {} })
  t.teardown(() => b.stop())
  const online = await c.waitFor(m => m.find(x => x.topic.endsWith('/status') && x.json?.state === 'online' && x.json?.problems), 10_000, 'online with a problem')
  t.equal(schemaErrors('status', online.json), null, 'status schema')
  t.match(online.json?.problems, [{ code: 'REMOTE_CONFIG_REJECTED', message: /telemetry\.periodS/ }])
  const ev = await c.waitFor(m => m.find(x => x.topic.endsWith('/event') && x.json?.kind === 'config.remote-rejected'), 10_000, 'config.remote-rejected event')
  t.equal(schemaErrors('event', ev.json), null, 'event schema')
  t.match(ev.json?.data, { reason: /telemetry\.periodS/, keptAs: /config\.remote\.rejected/ })
  t.notOk(existsSync(join(stateDir, REMOTE_CONFIG_FILE)), 'the bad file is no longer read')
  const kept = readdirSync(stateDir).filter(f => f.startsWith('config.remote.rejected'))
  t.equal(kept.length, 1, 'kept under another name')
  t.same(JSON.parse(readFileSync(join(stateDir, kept[0]!), 'utf8')), { telemetry: { periodS: 0 } }, 'unchanged')
})
