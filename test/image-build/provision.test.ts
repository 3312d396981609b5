// The first-boot program of the OS image (image-build/provision), run on a temporary
// root the way the device runs it on '/': validation messages, the files it writes,
// secrets leaving the CAIRN drive, the result file, and re-provisioning.

import t from 'tap'
import { existsSync, lstatSync, mkdirSync, readFileSync, readlinkSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { createRequire } from 'node:module'
import { parse as parseYaml } from 'yaml'
import { parseProvisioning, ProvisionError, KEPT_SECRET } from '../../image-build/provision/spec.js'
import { DEVICE_LAYOUT, parseWpaConfig, planProvision, wpaPskHex, type Facts } from '../../image-build/provision/provision-plan.js'
import { provision, type ProvisionEnv } from '../../image-build/provision/main.js'
import { redact, wipeAndRemove } from '../../image-build/provision/drive.js'
import { generateKeyPair, publicKeyPem } from '../../protocol/keys.js'
import { loadConfig } from '../../agent/config/load-config.js'
import { tmp } from '../helpers/agent.js'

const op = generateKeyPair()
const validator = generateKeyPair()
const GOOD = `
fleet: solar-north
broker:
  url: mqtt://broker.example.net:1883
  username: node-17
  password: "hunter2-broker"
operatorKeys:
  - ${op.keyId}
validatorKeys:
  - |
${publicKeyPem(validator.publicKey)
  .trim()
  .split('\n')
  .map(l => '    ' + l)
  .join('\n')}
owner: alice@example.org
hostname: garage-pi
timezone: Europe/Berlin
wifi:
  ssid: Home Net
  psk: "correct horse battery"   # the passphrase
  country: DE
ssh:
  authorizedKeys:
    - ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBd3k0D2Q9XrVZbmp7OQv9wJm5gK3xYJ1yQ4m8cVx0aZ me@laptop
agent:
  telemetry:
    periodS: 30
`

const problems = (text: string): readonly string[] => {
  try {
    parseProvisioning(text)
  } catch (err) {
    if (err instanceof ProvisionError) return err.problems
    throw err
  }
  return []
}

t.test('a complete file validates', async t => {
  const spec = parseProvisioning(GOOD)
  t.equal(spec.fleet, 'solar-north')
  t.equal(spec.broker.password, 'hunter2-broker')
  t.same(spec.operatorKeys, [op.keyId])
  t.match(spec.validatorKeys[0], /^-----BEGIN PUBLIC KEY-----/)
  t.same(spec.wifi, { ssid: 'Home Net', psk: 'correct horse battery', country: 'DE', hidden: false })
  t.same(spec.agent, { telemetry: { periodS: 30 } })
})

t.test('errors name the field and say what to write', async t => {
  t.match(problems('fleet: x'), ['cairn.yaml: broker: required (at least "broker: { url: mqtt://host:1883 }")'])
  t.match(problems('broker: {url: mqtt://h:1883}'), ['cairn.yaml: fleet: required'])
  t.match(problems('fleet: My Fleet\nbroker: {url: mqtt://h}'), [/fleet: "My Fleet" is not a fleet name: use lowercase letters/])
  t.match(problems('fleet: f\nbroker: {url: http://h}'), [/broker\.url: "http:\/\/h" is not a broker URL: write mqtt:\/\/host:1883/])
  t.match(problems('fleet: f\nbroker: {url: mqtt://h}\nwif: {}'), [/wif: unknown setting \(did you mean wifi\?\)/])
  t.match(problems('fleet: f\nbroker: {url: mqtt://h}\nwifi: {ssid: x, psk: short, country: de}'), [
    /wifi\.psk: a WPA passphrase is 8 to 63 printable ASCII characters \(got 5\)/,
    /wifi\.country: "de" is not a two-letter country code/,
  ])
  t.match(problems('fleet: f\nbroker: {url: mqtt://h}\noperatorKeys: [nope]'), [/operatorKeys\[0\]: not an ed25519 public key: give the key id/])
  t.match(problems('fleet: f\nbroker: {url: mqtt://h}\nssh: {authorizedKeys: ["-----BEGIN OPENSSH PRIVATE KEY-----"]}'), [
    /ssh\.authorizedKeys\[0\]: expected one public key line.*not the private key/,
  ])
  t.match(problems('fleet: f\nbroker: {url: mqtt://h}\nhostname: Bad_Name'), [/hostname: "Bad_Name" is not a host name/])
  t.match(problems('fleet: f\nbroker:\n  url: mqtt://h\n  url: mqtt://g'), ['cairn.yaml: not valid YAML (line 4, column 3): Map keys must be unique'])
  t.match(problems(''), [/the file is empty or not a mapping/])
  // settings under agent: are checked by the agent's own schema
  t.match(problems('fleet: f\nbroker: {url: mqtt://h}\nagent: {telemetry: {periodS: 0}}'), [/agent setting telemetry\.periodS: .*0/])
  t.match(problems('fleet: f\nbroker: {url: mqtt://h}\nagent: {telemetry: {period: 5}}'), [/agent setting telemetry/])
})

t.test('a number-looking value is taken as text where text is expected', async t => {
  t.equal(parseProvisioning('fleet: f\nbroker: {url: mqtt://h, username: 1234, password: 5678}').broker.password, '5678')
})

const planProblems = (fn: () => unknown): readonly string[] => {
  try {
    fn()
  } catch (err) {
    if (err instanceof ProvisionError) return err.problems
    throw err
  }
  return []
}

const facts = (over: Partial<Facts> = {}): Facts => ({
  layout: DEVICE_LAYOUT,
  deviceId: 'abcdefgh' + 'a'.repeat(44),
  cairn: { uid: 990, gid: 990 },
  stored: { brokerPassword: false },
  timezoneExists: n => ['UTC', 'Europe/Berlin'].includes(n),
  now: new Date('2026-01-02T03:04:05Z'),
  ...over,
})

t.test('the plan: agent settings, secrets in files of their own, OS settings on the data partition', async t => {
  const steps = planProvision(parseProvisioning(GOOD), facts())
  const write = (p: string) => steps.find(s => s.kind === 'write' && s.path === p) as { content: string; mode: number; owner: { uid: number; gid: number } } | undefined
  const cfg = parseYaml(write('/var/lib/cairn/etc/cairn.yaml')!.content) as Record<string, unknown>
  t.equal(cfg.stateDir, '/var/lib/cairn/agent')
  t.same(cfg.broker, { url: 'mqtt://broker.example.net:1883', username: 'node-17', passwordFile: '/var/lib/cairn/etc/broker-password' })
  t.notMatch(write('/var/lib/cairn/etc/cairn.yaml')!.content, /hunter2/, 'the password is not in the agent config')
  t.same(cfg.operatorKeys, ['/var/lib/cairn/etc/operators/1.pub'])
  t.same(cfg.proof, { validatorKeys: ['/var/lib/cairn/etc/validators/1.pub'], owner: 'alice@example.org' })
  t.same(cfg.telemetry, { periodS: 30 })
  // the agent's user only: Node-RED's user shares the cairn group
  t.same(write('/var/lib/cairn/etc/broker-password'), { kind: 'write', path: '/var/lib/cairn/etc/broker-password', content: 'hunter2-broker', mode: 0o400, owner: { uid: 990, gid: 0 } })
  t.same(cfg.localApi, { socket: '/var/lib/cairn/api.sock', tokenFile: '/var/lib/cairn/api.token' }, 'local API where Node-RED (cairn group) reaches it, not in the 0700 state dir')
  t.same(
    cfg.system,
    { rebootCommand: ['touch', '/var/lib/cairn/agent/reboot-requested'], reprovisionCommand: ['touch', '/var/lib/cairn/agent/reprovision.request'] },
    'reboot and re-provisioning through root path units',
  )
  t.match(
    steps.find(s => s.kind === 'mkdir' && s.path === '/var/lib/cairn'),
    { mode: 0o1775, owner: { uid: 0, gid: 990 } },
    'the data top: root:cairn, sticky (local API socket and token)',
  )
  t.equal(write('/var/lib/cairn/os/hostname')!.content, 'garage-pi\n')
  t.same(
    steps.find(s => s.kind === 'symlink'),
    { kind: 'symlink', path: '/var/lib/cairn/os/localtime', target: '/usr/share/zoneinfo/Europe/Berlin' },
  )
  const wpa = write('/var/lib/cairn/os/wpa_supplicant-wlan0.conf')!
  t.equal(wpa.mode, 0o600)
  t.match(wpa.content, /country=DE\n/)
  t.notMatch(wpa.content, /correct horse/, 'the Wi-Fi passphrase is stored hashed')
  t.match(wpa.content, `psk=${wpaPskHex('Home Net', 'correct horse battery')}`)
  t.match(write('/var/lib/cairn/os/ssh/authorized_keys')!.content, /^ssh-ed25519 /)
})

t.test('the WPA key matches wpa_passphrase (IEEE 802.11i test vector)', async t => {
  t.equal(wpaPskHex('IEEE', 'password'), 'f42c6fc52df0ebef9ebb4b90b38a5f902e83fe1b135a70e23aed762e9710a12e')
})

t.test('the plan refuses what the device cannot honour', async t => {
  const spec = parseProvisioning(GOOD.replace('Europe/Berlin', 'Mars/Olympus'))
  t.match(
    planProblems(() => planProvision(spec, facts())),
    [/timezone: "Mars\/Olympus" is not a known time zone/],
  )
  const kept = parseProvisioning(GOOD.replace('"hunter2-broker"', `"${KEPT_SECRET}"`))
  t.match(
    planProblems(() => planProvision(kept, facts())),
    [/broker\.password: .* this device has none/],
  )
  t.ok(
    planProvision(kept, facts({ stored: { brokerPassword: true } })).every(s => s.path !== '/var/lib/cairn/etc/broker-password' || s.kind !== 'write'),
    'a kept password is not rewritten',
  )
})

/** A device root in a temp dir: the CAIRN drive, the data partition, zoneinfo, machine id. */
function deviceRoot(): { root: string; env: ProvisionEnv; drive: string; lines: string[] } {
  const root = tmp('cairn-root-')
  for (const d of ['boot/cairn', 'var/lib/cairn', 'usr/share/zoneinfo/Europe', 'etc']) mkdirSync(join(root, d), { recursive: true })
  writeFileSync(join(root, 'usr/share/zoneinfo/UTC'), 'TZif')
  writeFileSync(join(root, 'usr/share/zoneinfo/Europe/Berlin'), 'TZif')
  writeFileSync(join(root, 'etc/machine-id'), '0123456789abcdef0123456789abcdef\n')
  const lines: string[] = []
  const env: ProvisionEnv = { root, layout: DEVICE_LAYOUT, cairn: { uid: 990, gid: 990 }, now: () => new Date('2026-01-02T03:04:05Z'), log: l => lines.push(l), privileged: false, driveMounted: true }
  return { root, env, drive: join(root, 'boot/cairn'), lines }
}

t.test('first boot: applies cairn.yaml, removes the secrets from the drive, reports the device id', async t => {
  const { root, env, drive } = deviceRoot()
  writeFileSync(join(drive, 'cairn.yaml'), GOOD)
  const report = provision(env)
  t.equal(report.outcome?.status, 'ok')
  t.match(report.deviceId, /^[a-z2-7]{52}$/)
  t.equal(report.hostname, 'garage-pi')
  t.notOk(existsSync(join(drive, 'cairn.yaml')), 'cairn.yaml is gone')
  const applied = readFileSync(join(drive, 'cairn-applied.yaml'), 'utf8')
  t.notMatch(applied, /hunter2|correct horse/, 'no secret left on the drive')
  t.match(applied, `password: "${KEPT_SECRET}"`)
  t.match(applied, '# the passphrase', 'comments survive')
  const result = readFileSync(join(drive, 'cairn-result.txt'), 'utf8')
  t.match(result, /^status: ok\n/)
  t.match(result, `device id: ${report.deviceId}\n`)
  t.match(result, 'hostname: garage-pi (on the local network: garage-pi.local)')
  t.match(result, 'node-red: on, editor on the device only (ssh -L 1880:127.0.0.1:1880', 'Node-RED reported')
  t.match(result, 'agent updates: off (this image was built without a release channel)', 'no release channel: says so')
  t.equal(statSync(join(root, 'var/lib/cairn')).mode & 0o7777, 0o1775, 'data top: sticky 1775')
  t.match(readFileSync(join(root, 'var/lib/cairn/etc/node-red/settings.js'), 'utf8'), /uiHost: "127\.0\.0\.1"/)
  t.equal(readFileSync(join(root, 'var/lib/cairn/os/machine-id'), 'utf8'), '0123456789abcdef0123456789abcdef\n', 'machine id kept on the data partition')
  t.ok(existsSync(join(root, 'var/lib/cairn/agent/device.key')))
  t.equal(statSync(join(root, 'var/lib/cairn/agent')).mode & 0o777, 0o700)
  t.equal(readlinkSync(join(root, 'var/lib/cairn/os/localtime')), '/usr/share/zoneinfo/Europe/Berlin')
  t.match(readFileSync(join(root, 'var/lib/cairn/os/avahi/cairn.service'), 'utf8'), `<txt-record>id=${report.deviceId}</txt-record>`)

  // the agent accepts what was written (paths rebased into the temp root)
  const cfgText = readFileSync(join(root, 'var/lib/cairn/etc/cairn.yaml'), 'utf8').replaceAll('/var/lib/cairn/', join(root, 'var/lib/cairn') + '/')
  writeFileSync(join(root, 'agent.yaml'), cfgText)
  const loaded = loadConfig({ configFile: join(root, 'agent.yaml'), env: {}, flags: { name: 'flags', values: {} } })
  t.equal(loaded.config.fleet, 'solar-north')
  t.equal(readFileSync(loaded.config.broker.passwordFile!, 'utf8'), 'hunter2-broker')

  // second boot: nothing on the drive, same identity, result file untouched
  const second = provision(env)
  t.equal(second.deviceId, report.deviceId)
  t.equal(second.outcome, undefined)
  t.equal(readFileSync(join(drive, 'cairn-result.txt'), 'utf8'), result)
})

t.test('re-provisioning from cairn-applied.yaml keeps the stored secrets', async t => {
  const { root, env, drive } = deviceRoot()
  writeFileSync(join(drive, 'cairn.yaml'), GOOD)
  provision(env)
  const applied = readFileSync(join(drive, 'cairn-applied.yaml'), 'utf8')
  writeFileSync(join(drive, 'cairn.yaml'), applied.replace('hostname: garage-pi', 'hostname: shed-pi'))
  const again = provision(env)
  t.equal(again.outcome?.status, 'ok')
  t.equal(again.hostname, 'shed-pi')
  t.equal(readFileSync(join(root, 'var/lib/cairn/etc/broker-password'), 'utf8'), 'hunter2-broker')
  t.same(parseWpaConfig(readFileSync(join(root, 'var/lib/cairn/os/wpa_supplicant-wlan0.conf'), 'utf8')), { ssid: 'Home Net', pskHex: wpaPskHex('Home Net', 'correct horse battery') })
})

t.test('a bad file changes nothing, stays on the drive, and the result says why', async t => {
  const { root, env, drive } = deviceRoot()
  writeFileSync(join(drive, 'cairn.yaml'), 'fleet: f\nbroker: {url: mqtt://h}\nwifi: {ssid: x, psk: short, country: DE}\n')
  const report = provision(env)
  t.equal(report.outcome?.status, 'error')
  t.ok(existsSync(join(drive, 'cairn.yaml')), 'left for the owner to fix')
  t.notOk(existsSync(join(root, 'var/lib/cairn/etc/cairn.yaml')), 'no agent config written')
  const result = readFileSync(join(drive, 'cairn-result.txt'), 'utf8')
  t.match(result, /^status: error\ndevice id: [a-z2-7]{52}\nerror: cairn\.yaml: wifi\.psk: a WPA passphrase is 8 to 63/)
  t.match(result, 'Nothing was changed and cairn.yaml was left on this drive')
  t.equal(report.hostname, `cairn-${report.deviceId.slice(0, 8)}`, 'a default host name all the same')
  const marker = join(root, 'var/lib/cairn/agent/provision-error')
  t.match(readFileSync(marker, 'utf8'), /wifi\.psk: a WPA passphrase/, "the agent's status LED shows the provisioning-error pattern (the marker in its state dir)")
  t.equal(statSync(marker).mode & 0o777, 0o600)

  // a link the agent's user planted there is replaced, never followed
  const victim = join(root, 'etc-victim')
  writeFileSync(victim, 'root data\n')
  rmSync(marker)
  symlinkSync(victim, marker)
  provision(env)
  t.equal(readFileSync(victim, 'utf8'), 'root data\n', 'the link target is untouched')
  t.notOk(lstatSync(marker).isSymbolicLink(), 'the marker is a file of its own')

  writeFileSync(join(drive, 'cairn.yaml'), GOOD)
  t.equal(provision(env).outcome?.status, 'ok')
  t.notOk(existsSync(marker), 'a cairn.yaml that applies clears it')

  // the agent's user owns its state dir, so it can rename it and leave a link to a
  // directory of root's in its place: the next boot's provisioning must not follow it
  const agentDir = join(root, 'var/lib/cairn/agent')
  const rootsDir = join(root, 'etc-of-root')
  mkdirSync(rootsDir, { mode: 0o755 })
  const { renameSync } = await import('node:fs')
  renameSync(agentDir, `${agentDir}.moved`)
  symlinkSync(rootsDir, agentDir)
  provision(env)
  t.notOk(lstatSync(agentDir).isSymbolicLink(), 'the link is replaced by a real state dir')
  t.equal(statSync(rootsDir).mode & 0o777, 0o755, "root's directory kept its mode (not chmod 0700 through the link)")
  t.notOk(existsSync(join(rootsDir, 'device.key')), 'and no key written into it')
})

t.test('no file and never provisioned: the result file says what to do', async t => {
  const { env, drive } = deviceRoot()
  const report = provision(env)
  t.equal(report.outcome?.status, 'waiting')
  t.match(readFileSync(join(drive, 'cairn-result.txt'), 'utf8'), /^status: waiting\ndevice id: [a-z2-7]{52}\nhostname: cairn-[a-z2-7]{8}\nNo cairn\.yaml on this drive yet/)
})

t.test('a file Notepad saved as cairn.yaml.txt is read too, and errors name it', async t => {
  const { env, drive } = deviceRoot()
  writeFileSync(join(drive, 'CAIRN.YAML.TXT'), 'fleet: f\nbroker: {url: ftp://h}\n')
  const report = provision(env)
  t.equal(report.outcome?.status, 'error')
  t.match(readFileSync(join(drive, 'cairn-result.txt'), 'utf8'), 'error: CAIRN.YAML.TXT: broker.url: "ftp://h" is not a broker URL')
  writeFileSync(join(drive, 'CAIRN.YAML.TXT'), GOOD)
  t.equal(provision(env).outcome?.status, 'ok')
  t.notOk(existsSync(join(drive, 'CAIRN.YAML.TXT')), 'removed after applying')
})

t.test('the CAIRN partition not mounted: nothing read or written there, settings kept', async t => {
  const { env, drive } = deviceRoot()
  writeFileSync(join(drive, 'cairn.yaml'), GOOD)
  const report = provision({ ...env, driveMounted: false })
  t.equal(report.outcome, undefined)
  t.ok(existsSync(join(drive, 'cairn.yaml')), 'untouched')
  t.notOk(existsSync(join(drive, 'cairn-result.txt')))
  t.match(report.hostname, /^cairn-[a-z2-7]{8}$/)
})

t.test('redact and wipe', async t => {
  const out = redact('# mine\nbroker:\n  url: mqtt://h\n  password: p # secret\nwifi: {ssid: s, psk: "12345678", country: DE}\n', new Date(0))
  t.notMatch(out, /password: p\b|12345678/)
  t.match(out, '# mine')
  const f = join(tmp(), 'x.yaml')
  writeFileSync(f, 'secret')
  wipeAndRemove(f)
  t.notOk(existsSync(f))
  t.throws(() => lstatSync(f))
})

// A real bcrypt hash (bcryptjs, what Node-RED itself uses without the native addon).
const ADMIN_PASSWORD = 's3cret-admin'
const ADMIN_HASH = '$2b$08$BgKiMW5QTgnGs4xXEsV1r.9vtz2n4APJaYtx7zmUy4vPV.uu38Bla'

/** Loads a settings.js text the way Node-RED does (require of a CommonJS module). */
interface NodeRedSettings {
  uiHost?: string
  uiPort?: number
  adminAuth?: { type: string; users: Array<{ username: string; password: string; permissions: string }> }
  httpNodeAuth?: unknown
  telemetry?: unknown
}

function loadSettings(text: string): NodeRedSettings {
  const f = join(tmp('cairn-nr-settings-'), 'settings.js')
  writeFileSync(f, text)
  return createRequire(import.meta.url)(f) as NodeRedSettings
}

t.test('nodeRed: on by default, editor on 127.0.0.1 only, no admin password needed there', async t => {
  const spec = parseProvisioning(GOOD)
  t.same(spec.nodeRed, { enabled: true, lan: false })
  const steps = planProvision(spec, facts())
  const w = steps.find(s => s.kind === 'write' && s.path === '/var/lib/cairn/etc/node-red/settings.js') as { content: string; mode: number; owner: unknown } | undefined
  t.ok(w, 'settings.js written')
  t.same([w!.mode, w!.owner], [0o640, { uid: 0, gid: 990 }], 'root:cairn 0640: readable by Node-RED (cairn group), not writable')
  const s = loadSettings(w!.content)
  t.equal(s.uiHost, '127.0.0.1')
  t.equal(s.uiPort, 1880)
  t.equal(s.adminAuth, undefined)
  t.same(s.telemetry, { enabled: false }, 'no update checks calling out')
})

t.test('nodeRed: LAN access only with a bcrypt admin password hash, which guards editor and HTTP nodes', async t => {
  const lan = parseProvisioning(GOOD + `nodeRed:\n  lan: true\n  adminPasswordHash: '${ADMIN_HASH}'\n`)
  t.same(lan.nodeRed, { enabled: true, lan: true, adminPasswordHash: ADMIN_HASH })
  const w = planProvision(lan, facts()).find(s => s.kind === 'write' && s.path === '/var/lib/cairn/etc/node-red/settings.js') as { content: string }
  const s = loadSettings(w.content)
  t.equal(s.uiHost, '0.0.0.0')
  t.same(s.adminAuth, { type: 'credentials', users: [{ username: 'admin', password: ADMIN_HASH, permissions: '*' }] })
  t.same(s.httpNodeAuth, { user: 'admin', pass: ADMIN_HASH })
  const bcrypt = createRequire(import.meta.url)('bcryptjs') as { compareSync(p: string, h: string): boolean }
  t.ok(bcrypt.compareSync(ADMIN_PASSWORD, s.adminAuth!.users[0]!.password), "the hash in settings.js checks the owner's password")
  t.notMatch(w.content, ADMIN_PASSWORD)

  t.match(problems(GOOD + 'nodeRed:\n  lan: true\n'), [/nodeRed\.lan: LAN access to the Node-RED editor needs nodeRed\.adminPasswordHash/])
  t.match(problems(GOOD + 'nodeRed:\n  lan: true\n  adminPasswordHash: s3cret-admin\n'), [/nodeRed\.adminPasswordHash: expected a bcrypt hash .*never a plain password/], 'a plain password is refused')
  t.match(problems(GOOD + `nodeRed:\n  adminPasswordHash: '${ADMIN_HASH.slice(0, -1)}'\n`), [/nodeRed\.adminPasswordHash: expected a bcrypt hash/], 'a truncated hash is refused')
  t.match(problems(GOOD + `nodeRed:\n  adminPasswordHash: '$2b$99$${ADMIN_HASH.slice(7)}'\n`), [/nodeRed\.adminPasswordHash/], 'an impossible cost is refused')
  t.match(problems(GOOD + 'nodeRed:\n  lan: yes please\n  enabeld: true\n'), [/nodeRed\.enabeld: unknown setting \(did you mean nodeRed\.enabled\?\)/, /nodeRed\.lan: expected true or false/])
  t.match(problems(GOOD + 'nodeRed: on\n'), [/nodeRed: expected a mapping/])
  // local-only with a hash: the editor asks for it too
  const local = loadSettings(
    (planProvision(parseProvisioning(GOOD + `nodeRed:\n  adminPasswordHash: '${ADMIN_HASH}'\n`), facts()).find(s => s.kind === 'write' && s.path.endsWith('settings.js')) as { content: string })
      .content,
  )
  t.equal(local.uiHost, '127.0.0.1')
  t.equal(local.adminAuth!.users[0]!.password, ADMIN_HASH)
  t.equal(local.httpNodeAuth, undefined, 'HTTP nodes stay open on loopback')
})

t.test('nodeRed: disabled removes its settings, so its unit does not start', async t => {
  const steps = planProvision(parseProvisioning(GOOD + 'nodeRed:\n  enabled: false\n  lan: true\n'), facts())
  t.ok(steps.some(s => s.kind === 'remove' && s.path === '/var/lib/cairn/etc/node-red/settings.js'))
  t.notOk(steps.some(s => s.kind === 'write' && s.path.endsWith('settings.js')))
})
