// `cairn fleet serve`'s settings in layers (fleet/service/serve-config.ts): a file, the
// environment and flags, later winning; every bad or unknown setting named with the
// layer it came from; the flags and the schema agree.

import t from 'tap'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { Command } from 'commander'
import { flagLayer, leafSettings } from '../../../protocol/config-layers.js'
import { loadServeConfig, SERVE_FLAGS, ServeConfigSchema, serveEnvName } from '../../../fleet/service/serve-config.js'
import { serveCommand } from '../../../fleet/service/serve-cli.js'
import { tmp } from '../../helpers/agent.js'

const NO_FLAGS = { name: 'flags', values: {} }
const file = (text: string, ext = 'yaml') => {
  const f = join(tmp('cairn-serve-config-'), `fleet.${ext}`)
  writeFileSync(f, text)
  return f
}
const flags = (given: Record<string, unknown>) => flagLayer(given, SERVE_FLAGS, ServeConfigSchema)

t.test('a file alone: every setting, the defaults filled, retention and alert rules in ms', async t => {
  const f = file(`fleet: demo
stateDir: /var/lib/cairn-fleet
broker: { url: 'mqtts://broker.example:8883', mqttVersion: 4, username: svc, passwordFile: /etc/pw }
validators: [/etc/v.pub, ed25519-abc]
retention: { rawHours: 72, minuteDays: 90, hourDays: 730 }
alerts: { offlineMinutes: 30, hotC: 75, outboxMinutes: 15 }
`)
  const c = loadServeConfig({ configFile: f, env: {}, flags: NO_FLAGS })
  t.match(c.config, {
    fleet: 'demo',
    stateDir: '/var/lib/cairn-fleet',
    listen: '127.0.0.1:8080',
    store: 'sqlite',
    instance: '1',
    share: true,
    trustProxy: false,
    logLevel: 'info',
    broker: { url: 'mqtts://broker.example:8883', mqttVersion: 4, username: 'svc', passwordFile: '/etc/pw' },
    validators: ['/etc/v.pub', 'ed25519-abc'],
    operatorKeys: [],
  })
  t.same(c.retention, { rawMs: 72 * 3_600_000, minuteMs: 90 * 86_400_000, hourMs: 730 * 86_400_000 })
  t.same(c.alertRules, { offlineMs: 30 * 60_000, hotC: 75, diskPercent: 90, scoreBelow: 900_000, outboxQueued: 1000, outboxAgeMs: 15 * 60_000 }, 'the thresholds not set keep their defaults')
  t.equal(c.sources.get('alerts.hotC'), `file ${f}`)
  t.ok(Object.isFrozen(c.config.broker), 'frozen')
  const json = loadServeConfig({ configFile: file('{"fleet":"demo","stateDir":"/s"}', 'json'), env: {}, flags: NO_FLAGS })
  t.equal(json.config.fleet, 'demo', 'JSON as well')
})

t.test('the environment over the file, the flags over both; the file named by CAIRN_FLEET_SERVE_CONFIG', async t => {
  const f = file('fleet: demo\nstateDir: /s\nlisten: 127.0.0.1:1000\nvalidators: [a.pub, b.pub]\nshare: true\n')
  const env = { CAIRN_FLEET_SERVE_CONFIG: f, CAIRN_FLEET_SERVE_LISTEN: '127.0.0.1:2000', CAIRN_FLEET_SERVE_ALERTS_HOT_C: '70', CAIRN_FLEET_SERVE_TRUST_PROXY: 'yes' }
  const fromEnv = loadServeConfig({ env, flags: NO_FLAGS })
  t.equal(fromEnv.config.listen, '127.0.0.1:2000', 'env over file')
  t.equal(fromEnv.config.alerts.hotC, 70, 'a number from its text')
  t.equal(fromEnv.config.trustProxy, true, 'a boolean from yes')
  t.equal(fromEnv.name('listen'), 'listen (from env CAIRN_FLEET_SERVE_LISTEN)')
  const fromFlags = loadServeConfig({ env, flags: flags({ listen: '127.0.0.1:3000', validator: ['c.pub'], 'no-share': false, 'mqtt-version': '4' }) })
  t.equal(fromFlags.config.listen, '127.0.0.1:3000', 'flag over env and file')
  t.same(fromFlags.config.validators, ['c.pub'], "a list given as flags replaces the file's")
  t.equal(fromFlags.config.share, false, '--no-share')
  t.equal(fromFlags.config.broker.mqttVersion, 4, '--mqtt-version 4 as the number')
  t.equal(fromFlags.name('listen'), '--listen', 'an error about a flag names the flag')
  t.equal(fromFlags.name('fleet'), `fleet (from file ${f})`)
})

t.test('bad settings: each named with where it came from, nothing started', async t => {
  const bad = (text: string, env: Record<string, string> = {}, given: Record<string, unknown> = {}) => {
    try {
      loadServeConfig({ configFile: file(text), env, flags: flags(given) })
    } catch (err) {
      return err as Error & { code?: string }
    }
    throw new Error('no error')
  }
  const f = bad('fleet: demo\nstateDir: /s\nalerts: { hotC: warm }\n')
  t.equal(f.code, 'INVALID_CONFIG')
  t.match(f.message, /alerts\.hotC: Expected number, got "warm" \(from file \/.*fleet\.yaml\)/)
  t.match(bad('fleet: demo\nstateDir: /s\nretension: { rawHours: 1 }\n').message, /Unexpected property.*retension|retension/, 'an unknown key (a typo) is refused')
  t.match(bad('stateDir: /s\n').message, /fleet: required; set it with --fleet, in the config file or with CAIRN_FLEET_SERVE_FLEET/)
  t.match(bad('fleet: Demo!\nstateDir: /s\n').message, /fleet: Expected string to match/)
  t.match(bad('fleet: demo\nstateDir: /s\n', { CAIRN_FLEET_SERVE_TRUST_PROXY: 'maybe' }).message, /env CAIRN_FLEET_SERVE_TRUST_PROXY: expected true or false, got "maybe"/)
  t.match(bad('fleet: demo\nstateDir: /s\n', {}, { 'mqtt-version': '3' }).message, /broker\.mqttVersion: .* \(from flag --mqtt-version\)/)
  t.match(bad('fleet: demo\nstateDir: /s\nretention: { rawHours: 800, minuteDays: 30 }\n').message, /retention: raw samples \(800 h\) must not outlive the 1-minute rollups \(30 days\)/)
  t.match(bad('fleet: demo\nstateDir: /s\nretention: { minuteDays: 400 }\n').message, /nor those the 1-hour rollups \(365 days\)/)
  t.match(
    bad('fleet: demo\nstateDir: /s\nreleases: { url: "https://r.example/cairn" }\n').message,
    /releases\.url \(from file .*\) is set without releases\.root \(--release-root\)/,
    'a repository without its trusted root',
  )
  t.match(bad('fleet: demo\nstateDir: /s\n', {}, { 'release-root': 'root.json' }).message, /--release-root is set without releases\.url \(--release-url\)/)
  t.match(bad('fleet: demo\nstateDir: /s\n', {}, { 'release-url': 'ftp://r.example', 'release-root': 'root.json' }).message, /releases\.url: Expected string to match/, 'http(s) only')
  const ok = loadServeConfig({
    configFile: file('fleet: demo\nstateDir: /s\n'),
    env: { CAIRN_FLEET_SERVE_RELEASES_POLL_SECONDS: '300' },
    flags: flags({ 'release-url': 'https://r.example/cairn', 'release-root': 'root.json' }),
  })
  t.match(ok.config.releases, { url: 'https://r.example/cairn', root: 'root.json', pollSeconds: 300 }, 'flags and the environment together')
  t.match(bad('__proto__: { fleet: x }\n').message, /__proto__: not a setting/, 'no prototype keys')
  t.match(bad('- a\n- b\n').message, /the top level must be a mapping of settings/)
  t.match(bad('fleet: [\n').message, /config file .*fleet\.yaml: /, 'YAML that does not parse: the file named')
  t.throws(() => loadServeConfig({ configFile: '/nonexistent/fleet.yaml', env: {}, flags: NO_FLAGS }), /config file \/nonexistent\/fleet\.yaml: cannot read \(ENOENT\)/)
})

t.test('every flag of `fleet serve` sets a setting of the schema, and the help says where the rest are', async t => {
  const paths = new Set(leafSettings(ServeConfigSchema).map(l => l.path.join('.')))
  for (const f of SERVE_FLAGS) t.ok(paths.has(f.path), `--${f.flag}: ${f.path} is a setting`)
  const cmd = serveCommand({ out: { write: () => true }, err: { write: () => true }, env: {}, setExitCode: () => undefined }) as Command
  const mapped = new Set(SERVE_FLAGS.map(f => f.flag))
  for (const o of cmd.options) if (o.name() !== 'config') t.ok(mapped.has(o.name()), `--${o.name()} maps to a setting`)
  t.equal(serveEnvName(['retention', 'rawHours']), 'CAIRN_FLEET_SERVE_RETENTION_RAW_HOURS')
})

t.test('the broker password: from the later of broker.password and broker.passwordFile; both in one layer is an error; a mistyped variable too', async t => {
  const f = file('fleet: demo\nstateDir: /s\nbroker: { passwordFile: /etc/pw }\n')
  t.equal(loadServeConfig({ configFile: f, env: {}, flags: NO_FLAGS }).passwordFrom, 'file')
  t.equal(loadServeConfig({ configFile: f, env: {}, flags: flags({ password: 'p' }) }).passwordFrom, 'value', '--password over the file')
  t.equal(loadServeConfig({ configFile: f, env: { CAIRN_FLEET_SERVE_BROKER_PASSWORD: 'p' }, flags: NO_FLAGS }).passwordFrom, 'value', 'the environment over the file')
  t.equal(loadServeConfig({ configFile: file('fleet: demo\nstateDir: /s\n'), env: {}, flags: NO_FLAGS }).passwordFrom, 'none')
  t.throws(() => loadServeConfig({ configFile: file('fleet: demo\nstateDir: /s\nbroker: { password: a, passwordFile: /etc/pw }\n'), env: {}, flags: NO_FLAGS }), /both set in file .*; keep one/)
  t.throws(() => loadServeConfig({ configFile: f, env: { CAIRN_FLEET_SERVE_LISTN: '127.0.0.1:1' }, flags: NO_FLAGS }), /CAIRN_FLEET_SERVE_LISTN: no such setting/)
})
