// The "done when", with the real bundles: an agent running v1 from slot a under
// the launcher (and a supervisor standing in for systemd) updates itself to v2
// published with `cairn release` and served by `cairn release serve`, reports
// ota.committed; a deliberately broken v3 (its agent exits 1 at start) is rolled back
// by the launcher after maxAttempts starts, and v2 reports why on `event`. Then the
// fleet controls: `cairn fleet rollout status`, and `rollout halt` (a signed broadcast
// on the release topic) keeps a newer release from being installed. All of it once per
// MQTT version, each in a file of its own (e2e-mqtt5.test.ts, e2e-mqtt311.test.ts) so
// each has its own time budget and the two can run side by side: the device, the hints,
// `cairn fleet cmd` and `cairn fleet rollout` all speak 5, or all 3.1.1 (replies then
// come on the device's reply topic).

import t from 'tap'
import { execFile } from 'node:child_process'
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { promisify } from 'node:util'
import mqtt from 'mqtt'
import { Consumer, operatorKey, sleep, startTestAgent, tmp, until } from '../helpers/agent.js'
import { sendCommand, signCommand } from '../../fleet/command-client.js'
import { startBroker, type TestBroker } from '../helpers/broker.js'
import { versionName, type MqttVersion } from '../helpers/mqtt-versions.js'
import { buildBundle, DIST_BUNDLE, packTarget, startDevice, startRepo, unpackedTree, type TestDevice } from '../helpers/ota.js'
import { schemaErrors } from '../helpers/schemas.js'

const run = promisify(execFile)
const cairn = (args: string[]) => run(process.execPath, [DIST_BUNDLE, ...args], { timeout: 60_000 })

let broker: TestBroker
let bundles: { b1: string; b2: string; b3: string; b4: string }

/** The suite, on one MQTT version. */
export function otaE2e(mqttVersion: MqttVersion): void {
  const label = versionName(mqttVersion)
  // one full update, a rollback and the rollout controls
  t.setTimeout(480_000)
  t.before(async () => {
    broker = await startBroker()
    const [b1, b2, b3, b4] = await Promise.all(['1.0.0', '2.0.0', '3.0.0', '4.0.0'].map(v => buildBundle(v)))
    // v3: the real bundle with its agent deliberately broken (it still prints its version,
    // so it passes staging and fails only once started: a crash loop).
    const text = readFileSync(b3!, 'utf8')
    const nl = text.indexOf('\n')
    writeFileSync(b3!, text.slice(0, nl + 1) + "if (process.argv[2] === 'agent') { process.stderr.write('cairn 3.0.0: deliberately broken\\n'); process.exit(1) }\n" + text.slice(nl + 1))
    bundles = { b1: b1!, b2: b2!, b3: b3!, b4: b4! }
  })
  t.teardown(async () => {
    await broker?.close()
  })
  t.test(`${label}: v1 → v2 committed; broken v3 rolled back with the reason; rollout status and halt`, async t => {
    // A repository and a fleet of its own per version (the same release versions in each).
    const repo = await startRepo()
    t.teardown(() => repo.close())
    const { b1, b2, b3, b4 } = bundles
    const mv = ['--mqtt-version', String(mqttVersion)]
    const rel = tmp('cairn-rel-')
    const v1tree = await unpackedTree(packTarget(rel, b1, '1.0.0'), '1.0.0')
    const dir = tmp()
    const op = operatorKey(dir)
    const fleet = `e2e${mqttVersion}`
    const sub = await Consumer.connect(broker.url, [`cairn/v1/${fleet}/+/event`, `cairn/v1/${fleet}/+/status`], { protocolVersion: mqttVersion })
    t.teardown(() => sub.close())
    const dev: TestDevice = startDevice({ tree: v1tree, brokerUrl: broker.url, mqttVersion, fleet, repo, set: ['ota.hintMinS=1', `operatorKeys=${op.pub}`] })
    t.teardown(() => dev.stop())

    const status = () => sub.on('/status').map(m => m.json as { state: string; version: string; slot?: string; device: string; ts: number })
    const online = await sub.waitFor(() => status().find(s => s.state === 'online'), 20_000, 'v1 online')
    t.match(online, { version: '1.0.0', slot: 'a', mqtt: mqttVersion }, `v1 runs from slot a under the launcher, on ${label}`)
    const device = online.device
    const events = (): Ev[] => [...new Map(sub.on('/event').map(m => [m.json!.id as string, m.json as unknown as Ev])).values()]
    const ota = (kind: string, version?: string) => events().filter(e => e.kind === kind && (version === undefined || e.data.version === version))

    // ---- v2: published, announced by an (untrusted) hint on the release topic.
    // Packed with the CLI an operator uses.
    const v2target = join(rel, 'cairn-agent-2.0.0.tar')
    const packed = await cairn(['release', 'pack', '--bundle', b2, '--version', '2.0.0', '--out', v2target])
    t.match(packed.stdout, /wrote .*cairn-agent-2\.0\.0\.tar/)
    await repo.add('2.0.0', v2target)
    const hint = await mqtt.connectAsync(broker.url, { protocolVersion: mqttVersion })
    const tHint = Date.now()
    await hint.publishAsync(`cairn/v1/${fleet}/release`, '', { qos: 1 })
    await hint.endAsync()
    await sub.waitFor(() => ota('ota.committed', '2.0.0')[0], 60_000, 'ota.committed for 2.0.0')
    const tCommitted = Date.now()
    const v2online = await sub.waitFor(() => status().find(s => s.state === 'online' && s.version === '2.0.0'), 10_000, 'v2 online')
    t.equal(v2online.slot, 'b', 'v2 runs from slot b')
    t.same(
      events()
        .filter(e => e.kind.startsWith('ota.') && e.kind !== 'ota.download')
        .map(e => e.kind),
      ['ota.available', 'ota.staged', 'ota.switching', 'ota.committed'],
      'the update reported each step',
    )
    const dl = ota('ota.download', '2.0.0')
    t.match(dl.at(0)?.data, { state: 'started', bytes: 0 })
    t.match(dl.at(-1)?.data, { state: 'done', percent: 100 })
    const committed = ota('ota.committed', '2.0.0')[0]!
    t.match(committed.data, { version: '2.0.0', from: '1.0.0', slot: 'b' })
    for (const e of events()) t.equal(schemaErrors('event', e), null, `${e.kind} matches docs/schemas/event.json`)
    for (const m of sub.on('/status')) t.equal(schemaErrors('status', m.json), null, 'status matches docs/schemas/status.json')
    const length = readFileSync(v2target).length
    t.comment(
      `${label}: v1 → v2 timings (${(length / 1e6).toFixed(1)} MB target): download ${dl.at(-1)?.data.seconds} s; ` +
        `check→downloaded ${committed.data.downloadS} s, stage ${committed.data.stageS} s, switch (old exits → new on trial) ${committed.data.switchS} s, ` +
        `health check ${committed.data.healthS} s, available→committed ${committed.data.totalS} s; hint→committed seen by the fleet ${((tCommitted - tHint) / 1000).toFixed(1)} s`,
    )
    t.match(dev.slots(), { active: 'b', previous: 'a', trial: null, bad: [] })

    // ---- v3: broken. The signed `update` command asks for the check.
    await repo.add('3.0.0', packTarget(rel, b3, '3.0.0'))
    const tUpdate = Date.now()
    const reply = await cairn(['fleet', 'cmd', device, 'update', '--broker', broker.url, ...mv, '--fleet', fleet, '--key', op.file])
    t.match(JSON.parse(reply.stdout), { status: 'ok', data: { running: { version: '2.0.0', slot: 'b' } } }, 'update command answered')
    const rolled = await sub.waitFor(() => ota('ota.rolled-back', '3.0.0')[0], 90_000, 'ota.rolled-back for 3.0.0')
    t.match(rolled.data, { version: '3.0.0', from: '2.0.0', reason: 'crash-loop' }, 'the reason is on event')
    await sub.waitFor(() => status().filter(s => s.state === 'online' && s.version === '2.0.0').length >= 2, 20_000, 'v2 online again')
    t.match(dev.slots(), { active: 'b', trial: null, bad: ['3.0.0'], rollback: { version: '3.0.0', reason: 'crash-loop' } })
    t.ok(dev.sup.exits.filter(e => e.code === 1).length >= 3, `the launcher saw ${dev.sup.exits.length} failed start(s) of v3`)
    t.comment(
      `${label}: v3 crash loop: update command → rolled back and reported ${((rolled.ts - tUpdate) / 1000).toFixed(1)} s (supervisor restart delay 0.2 s; systemd's RestartSec=5 adds about 15 s)`,
    )
    t.equal(ota('ota.committed', '3.0.0').length, 0)

    // The bad version is never retried: another check changes nothing.
    const checksBefore = events().length
    await cairn(['fleet', 'cmd', device, 'update', '--broker', broker.url, ...mv, '--fleet', fleet, '--key', op.file])
    await sleep(1500)
    t.equal(ota('ota.available', '3.0.0').length, 1, '3.0.0 offered once, never again')
    t.ok(events().length >= checksBefore)

    // ---- pin: holds, never downgrades.
    // An operator on the other MQTT version is answered as well (3.1.1 has no response
    // topic: the reply comes on the device's reply topic, matched by the command's id).
    const other = ['--mqtt-version', mqttVersion === 5 ? '4' : '5']
    const pin = await cairn(['fleet', 'cmd', device, 'pin-version', '{"version":"1.0.0"}', '--broker', broker.url, ...other, '--fleet', fleet, '--key', op.file])
    t.match(JSON.parse(pin.stdout), { status: 'ok', data: { pinned: '1.0.0', running: { version: '2.0.0' }, note: /never a downgrade/ } })
    const unpin = await cairn(['fleet', 'cmd', device, 'pin-version', '{"version":null}', '--broker', broker.url, ...mv, '--fleet', fleet, '--key', op.file])
    t.match(JSON.parse(unpin.stdout), { status: 'ok', data: { pinned: null } })
    await sleep(500)
    t.same(
      status()
        .filter(s => s.state === 'online')
        .at(-1)?.version,
      '2.0.0',
      'still on 2.0.0',
    )

    // ---- fleet view
    const st = await cairn(['fleet', 'rollout', 'status', '--broker', broker.url, ...mv, '--fleet', fleet, '--version', '3.0.0', '--seconds', '1', '--json'])
    const report = JSON.parse(st.stdout)
    t.match(report, { devices: 1, online: 1, versions: { '2.0.0': { devices: 1, online: 1 } }, release: { version: '3.0.0', running: 0 } })
    const human = await cairn(['fleet', 'rollout', 'status', '--broker', broker.url, ...mv, '--fleet', fleet, '--seconds', '1'])
    t.match(human.stdout, /1 device\(s\), 1 online[\s\S]*2\.0\.0\s+1 device/)

    // ---- halt: a signed broadcast; a newer release is then not installed.
    const halt = await cairn(['fleet', 'rollout', 'halt', '--broker', broker.url, ...mv, '--fleet', fleet, '--key', op.file])
    t.match(JSON.parse(halt.stdout), { paused: true, topic: `cairn/v1/${fleet}/release` })
    t.match(halt.stderr, /set-rollout .*--pct 0/, 'halt reminds the operator of the metadata side')
    await sub.waitFor(() => events().find(e => e.kind === 'ota.paused' && e.data.paused === true), 10_000, 'ota.paused')
    await repo.add('4.0.0', packTarget(rel, b4, '4.0.0'))
    const hint2 = await mqtt.connectAsync(broker.url, { protocolVersion: mqttVersion })
    await hint2.publishAsync(`cairn/v1/${fleet}/release`, 'new release!', { qos: 1 })
    await hint2.endAsync()
    await cairn(['fleet', 'cmd', device, 'update', '--broker', broker.url, ...mv, '--fleet', fleet, '--key', op.file])
    await sleep(2000)
    t.equal(ota('ota.available', '4.0.0').length, 0, 'paused: 4.0.0 not taken')
    // A forged halt (untrusted key) is only a hint; resume lets 4.0.0 in.
    const stranger = operatorKey(dir, 'stranger')
    await cairn(['fleet', 'rollout', 'resume', '--broker', broker.url, ...mv, '--fleet', fleet, '--key', stranger.file])
    await sleep(1500)
    t.equal(ota('ota.available', '4.0.0').length, 0, 'a resume signed by an unknown key changes nothing')
    await cairn(['fleet', 'rollout', 'resume', '--broker', broker.url, ...mv, '--fleet', fleet, '--key', op.file])
    await sub.waitFor(() => ota('ota.committed', '4.0.0')[0], 60_000, '4.0.0 after resume')
    t.pass('resumed: 4.0.0 committed')
  })

  t.test(`${label}: an agent not started by the launcher has updates off and says so`, async t => {
    const dir = tmp()
    const op = operatorKey(dir)
    // Updates on by configuration (a release URL), off for want of the launcher.
    const a = await startTestAgent({ url: broker.url, mqttVersion, operatorKeys: [op.pub], values: { ota: { releaseUrl: 'http://127.0.0.1:9/', releaseRoot: join(dir, 'root.json') } } })
    t.teardown(() => a.stop())
    await until(() => a.agent.link.connected, 10_000, 'connected')
    const env = signCommand({ fleet: 'test', device: a.agent.deviceId, name: 'update', body: {}, key: op, ttlMs: 60_000 })
    const reply = await sendCommand(env, { url: broker.url, mqttVersion, timeoutMs: 10_000 })
    t.match(reply, { status: 'error', error: { code: 'OTA_DISABLED' } })
    t.ok(
      a.logs.some(l => /not started by the launcher/.test(l)),
      'the log says why',
    )
  })
}

type Ev = { id: string; kind: string; ts: number; data: Record<string, unknown> }
