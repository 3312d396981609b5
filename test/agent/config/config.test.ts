import t from 'tap'
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { envLayer, loadConfig } from '../../../agent/config/load-config.js'
import { envName, leafSettings } from '../../../agent/config/config-schema.js'
import { flagLayer } from '../../../cli/agent-cli.js'

const tmp = () => mkdtempSync(join(tmpdir(), 'cairn-cfg-'))
const noFlags = { name: 'flags', values: {} }

t.test('defaults < file < env < flags, and every value knows its source', async t => {
  const dir = tmp()
  const file = join(dir, 'cairn.yaml')
  writeFileSync(file, 'fleet: from-file\nstateDir: ' + dir + '\ntelemetry:\n  periodS: 20\nbroker:\n  url: mqtt://file:1883\n')
  const env = { CAIRN_TELEMETRY_PERIOD_S: '30', CAIRN_BROKER: 'mqtt://env:1883' }
  const flags = flagLayer({ broker: 'mqtts://flag:8883' })
  const { config, sources } = loadConfig({ configFile: file, env, flags })
  t.equal(config.fleet, 'from-file')
  t.equal(config.telemetry.periodS, 30)
  t.equal(config.broker.url, 'mqtts://flag:8883')
  t.equal(config.broker.mqttVersion, 5, 'default')
  t.equal(sources.get('fleet'), `file ${file}`)
  t.equal(sources.get('telemetry.periodS'), 'env CAIRN_TELEMETRY_PERIOD_S')
  t.equal(sources.get('broker.url'), 'flag --broker')
  t.ok(Object.isFrozen(config) && Object.isFrozen(config.broker), 'frozen')
})

t.test('JSON config files work too', async t => {
  const dir = tmp()
  const file = join(dir, 'c.json')
  writeFileSync(file, JSON.stringify({ fleet: 'j', stateDir: dir, operatorKeys: ['/a.pub', '/b.pub'] }))
  const { config } = loadConfig({ configFile: file, env: {}, flags: noFlags })
  t.same(config.operatorKeys, ['/a.pub', '/b.pub'])
})

t.test('a bad value names the field and where it came from', async t => {
  const dir = tmp()
  const file = join(dir, 'cairn.yaml')
  writeFileSync(file, `fleet: ok\nstateDir: ${dir}\ntelemetry:\n  periodS: 0\n`)
  t.throws(() => loadConfig({ configFile: file, env: {}, flags: noFlags }), { code: 'INVALID_CONFIG', message: /telemetry\.periodS: .*greater or equal to 1, got 0 \(from file .*cairn\.yaml\)/ })
  t.throws(() => loadConfig({ env: { CAIRN_TELEMETRY_PERIOD_S: 'often', CAIRN_FLEET: 'x' }, flags: noFlags }), { message: /env CAIRN_TELEMETRY_PERIOD_S: expected a number/ })
  t.throws(() => loadConfig({ env: { CAIRN_FLEET: 'Bad/Fleet', CAIRN_STATE_DIR: dir }, flags: noFlags }), { message: /fleet: Expected string to match .*got "Bad\/Fleet" \(from env CAIRN_FLEET\)/ })
  t.throws(() => loadConfig({ env: { CAIRN_STATE_DIR: dir }, flags: noFlags }), { message: /fleet: .*required/i })
  t.throws(() => loadConfig({ env: {}, flags: flagLayer({ fleet: 'x', 'state-dir': dir, 'mqtt-version': '3' }) }), { message: /broker\.mqttVersion.*from flag --mqtt-version/ })
  writeFileSync(file, `fleet: ok\nstateDir: ${dir}\ntelemetri:\n  periodS: 5\n`)
  t.throws(() => loadConfig({ configFile: file, env: {}, flags: noFlags }), { message: /telemetri.*cairn\.yaml/ }, 'unknown keys are named with the file')
  writeFileSync(file, 'fleet: [unclosed\n')
  t.throws(() => loadConfig({ configFile: file, env: {}, flags: noFlags }), { code: 'INVALID_CONFIG', message: /cairn\.yaml/ })
  t.throws(() => loadConfig({ configFile: join(dir, 'missing.yaml'), env: {}, flags: noFlags }), { message: /missing\.yaml: cannot read \(ENOENT\)/ })
  t.throws(() => flagLayer({ set: ['nope.x=1'] }), { message: /unknown setting "nope\.x"/ })
})

t.test('every setting has an environment variable derived from the schema', async t => {
  const names = leafSettings().map(l => envName(l.path))
  t.ok(names.includes('CAIRN_BROKER_URL'))
  t.ok(names.includes('CAIRN_OUTBOX_LAZY_WRITE_MS'))
  t.equal(new Set(names).size, names.length, 'names are unique')
  const layer = envLayer({ CAIRN_HEALTH_ENABLED: 'false', CAIRN_OPERATOR_KEYS: 'a.pub, b.pub', CAIRN_BROKER_MQTT_VERSION: '4', CAIRN_UNRELATED: 'x' })
  t.same(layer.values, { health: { enabled: false }, operatorKeys: ['a.pub', 'b.pub'], broker: { mqttVersion: 4 } })
})

t.test('--set reaches any setting, typed by the schema', async t => {
  const dir = tmp()
  const { config, sources } = loadConfig({ env: {}, flags: flagLayer({ fleet: 'f', 'state-dir': dir, set: ['outbox.maxInflight=5', 'broker.rejectUnauthorized=false'] }) })
  t.equal(config.outbox.maxInflight, 5)
  t.equal(config.broker.rejectUnauthorized, false)
  t.equal(sources.get('outbox.maxInflight'), 'flag --set outbox.maxInflight')
})

t.test('remote overrides sit between the file and the environment; a damaged file is left out and reported', async t => {
  const dir = tmp()
  writeFileSync(join(dir, 'config.remote.json'), JSON.stringify({ telemetry: { periodS: 42 }, broker: { url: 'mqtt://evil:1883' } }))
  const { config, sources } = loadConfig({ env: { CAIRN_FLEET: 'f', CAIRN_STATE_DIR: dir }, flags: noFlags })
  t.equal(config.telemetry.periodS, 42)
  t.match(sources.get('telemetry.periodS'), /^remote/)
  t.equal(config.broker.url, 'mqtt://127.0.0.1:1883', 'sections that cannot be set remotely are ignored')
  const env2 = loadConfig({ env: { CAIRN_FLEET: 'f', CAIRN_STATE_DIR: dir, CAIRN_TELEMETRY_PERIOD_S: '7' }, flags: noFlags })
  t.equal(env2.config.telemetry.periodS, 7, 'env wins over remote')
  writeFileSync(join(dir, 'config.remote.json'), '{oops')
  const damaged = loadConfig({ env: { CAIRN_FLEET: 'f', CAIRN_STATE_DIR: dir }, flags: noFlags })
  t.equal(damaged.config.telemetry.periodS, 10, 'the other layers apply')
  t.match(damaged.remoteRejected, { file: join(dir, 'config.remote.json'), reason: /config\.remote\.json: damaged/ })
})

t.test('__proto__ in a config layer is refused, and nothing leaks onto Object.prototype', async t => {
  const dir = tmp()
  const file = join(dir, 'c.json')
  writeFileSync(file, `{"fleet":"f","stateDir":${JSON.stringify(dir)},"outbox":{"__proto__":{"polluted":1}}}`)
  t.throws(() => loadConfig({ configFile: file, env: {}, flags: noFlags }), { code: 'INVALID_CONFIG', message: /outbox\.__proto__: not a setting/ })
  t.equal(({} as Record<string, unknown>).polluted, undefined)
})

t.test('the example in docs/configuration.md is a valid configuration', async t => {
  const doc = readFileSync(new URL('../../../docs/configuration.md', import.meta.url), 'utf8')
  const yaml = /## Example `\/etc\/cairn\.yaml`\n\n```yaml\n([\s\S]*?)```/.exec(doc)?.[1]
  t.ok(yaml, 'the example is there')
  const file = join(tmp(), 'cairn.yaml')
  writeFileSync(file, yaml!)
  const { config } = loadConfig({ configFile: file, env: {}, flags: noFlags })
  t.equal(config.fleet, 'solar-north')
  t.same(config.proof.validatorKeys, ['/etc/cairn/validators/solar-north-1.pub'])
  t.equal(config.proof.periodS, 60, 'heartbeat period default')
})

t.test('proof flags map onto proof settings and bad values name the flag', async t => {
  const flags = flagLayer({ fleet: 'f', 'state-dir': tmp(), 'proof-period': '30', 'validator-key': ['/v1.pub', '/v2.pub'], owner: 'payout:bob' })
  const { config, sources } = loadConfig({ env: {}, flags })
  t.equal(config.proof.periodS, 30)
  t.same(config.proof.validatorKeys, ['/v1.pub', '/v2.pub'])
  t.equal(config.proof.owner, 'payout:bob')
  t.equal(sources.get('proof.owner'), 'flag --owner')
  t.throws(() => loadConfig({ env: {}, flags: flagLayer({ fleet: 'f', owner: 'has space' }) }), /proof\.owner.*flag --owner/)
  t.throws(() => loadConfig({ env: {}, flags: flagLayer({ fleet: 'f', 'proof-period': '0' }) }), /proof\.periodS.*flag --proof-period/)
})

t.test('tasks.inference.idleStopS: 300 s by default, 0 keeps the worker, out of range names the field', async t => {
  const dir = tmp()
  const base = { fleet: 'f', 'state-dir': dir }
  t.equal(loadConfig({ env: {}, flags: flagLayer(base) }).config.tasks.inference.idleStopS, 300)
  t.equal(loadConfig({ env: { CAIRN_TASKS_INFERENCE_IDLE_STOP_S: '0' }, flags: flagLayer(base) }).config.tasks.inference.idleStopS, 0, 'from its environment variable')
  t.equal(loadConfig({ env: {}, flags: flagLayer({ ...base, set: ['tasks.inference.idleStopS=45'] }) }).config.tasks.inference.idleStopS, 45, 'and --set')
  const file = join(dir, 'cairn.yaml')
  writeFileSync(file, 'tasks:\n  inference:\n    idleStopS: -1\n')
  t.throws(() => loadConfig({ configFile: file, env: {}, flags: flagLayer(base) }), {
    code: 'INVALID_CONFIG',
    message: /tasks\.inference\.idleStopS: .*greater or equal to 0, got -1 \(from file .*cairn\.yaml\)/,
  })
  t.throws(() => loadConfig({ env: { CAIRN_TASKS_INFERENCE_IDLE_STOP_S: '1.5' }, flags: flagLayer(base) }), { code: 'INVALID_CONFIG', message: /tasks\.inference\.idleStopS/ }, 'whole seconds')
  t.throws(() => loadConfig({ env: {}, flags: flagLayer({ ...base, set: ['tasks.inference.idleStopS=604801'] }) }), { message: /tasks\.inference\.idleStopS: .*less or equal to 604800/ })
  writeFileSync(file, 'tasks:\n  inference:\n    idleStop: 10\n')
  t.throws(() => loadConfig({ configFile: file, env: {}, flags: flagLayer(base) }), { message: /tasks\.inference\.idleStop\b/ }, 'a misspelt key is named')
})
