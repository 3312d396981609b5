// OS updates through the whole agent: a real agent (real broker, state.db, TUF client)
// on a Cairn OS device simulated below it (test/helpers/os-device.ts: partition image
// files, the root helper in-process with its real TUF check and slot writer, a stand-in
// for the Pi firmware). An OS release published with the repository tools is found,
// downloaded, verified again by the helper, written into slot B, tried with tryboot and
// committed; a release whose trial fails its self-test falls back to the committed slot;
// a device that cannot pass the tryboot flag never downloads one. The update runs once
// per MQTT version (the agent, the event consumer and `cairn fleet rollout status`).

import t from 'tap'
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { parseAutoboot } from '../../image-build/os-update/autoboot.js'
import { readRecord } from '../../image-build/os-update/execute.js'
import { detectCairnOs } from '../../image-build/os-update/agent-os.js'
import { Consumer, startTestAgent, until, type TestAgent } from '../helpers/agent.js'
import { startBroker, type TestBroker } from '../helpers/broker.js'
import { MQTT_VERSIONS } from '../helpers/mqtt-versions.js'
import { missingOsTools, osDevice, packRelease, type OsDevice } from '../helpers/os-device.js'
import { makeRepo, serveRepo, tmp } from '../helpers/release.js'
import { schemaErrors } from '../helpers/schemas.js'
import { otaExtension, type OtaHooks } from '../../ota/ota-service.js'
import { rolloutStatus } from '../../fleet/rollout-cli.js'

// The OS update, once per MQTT version.
t.setTimeout(360_000)
const missing = missingOsTools()
if (missing.length) t.comment(`skipping: ${missing.join(', ')} not installed (apt-get install e2fsprogs dosfstools mtools zstd; .ci/run does)`)

let broker: TestBroker
t.before(async () => {
  broker = await startBroker()
})
t.teardown(() => broker?.close())

type Ev = { id: string; kind: string; data: Record<string, unknown> }

/** The agent as it starts in the device's current boot, finding Cairn OS the way it does
 * on the device (detectCairnOs) in a fixture of the files it reads there. */
async function boot(dev: OsDevice, trust: { url: string; root: string }, fleet: string, mqttVersion: 4 | 5, hooks?: OtaHooks): Promise<TestAgent> {
  const root = join(dev.dir, 'fixture-root')
  mkdirSync(join(root, 'etc'), { recursive: true })
  mkdirSync(join(root, 'proc', 'sys', 'kernel', 'random'), { recursive: true })
  writeFileSync(join(root, 'etc', 'cairn-release'), `CAIRN_VERSION=${dev.osVersion()}\n`)
  writeFileSync(join(root, 'proc', 'cmdline'), `console=ttyS1,115200 root=LABEL=cairn-root${dev.running().slot} rootfstype=ext4 rootwait rw panic=10\n`)
  writeFileSync(join(root, 'proc', 'uptime'), '20.00 30.00\n')
  writeFileSync(join(root, 'proc', 'sys', 'kernel', 'random', 'boot_id'), dev.running().bootId + '\n')
  // cairn-os-update.path: the helper runs while the agent waits for its answer
  const cairnOs = detectCairnOs({ stateDir: dev.stateDir, osDir: dev.osDir, root, enabled: true, now: () => Date.now(), sleep: async () => void (await dev.helper()) })
  return startTestAgent({
    url: broker.url,
    mqttVersion,
    stateDir: dev.stateDir,
    fleet,
    values: { ota: { releaseUrl: trust.url, releaseRoot: trust.root, pollS: 1, hintMinS: 0, healthDeadlineS: 60 }, proof: { enabled: false }, telemetry: { periodS: 3600 } },
    deps: {
      extensions: [otaExtension({ launcher: { slot: null, otaDir: join(dev.stateDir, 'ota') }, os: () => cairnOs, hooks })],
    },
  })
}

for (const { mqttVersion, label } of MQTT_VERSIONS)
  t.test(`${label}: an OS release: found, verified twice, written to slot B, tried, committed; a failing one falls back`, { skip: missing.length > 0 && `needs ${missing.join(', ')}` }, async t => {
    const { repo } = makeRepo()
    const server = await serveRepo(repo)
    t.teardown(() => server.close())
    const root = join(repo.paths.metadata, '1.root.json')
    const dev = osDevice({ releaseUrl: server.url, trustedRoot: root })
    await dev.helper('boot') // cairn-os-boot.service, before the agent
    const fleet = `osupd${mqttVersion}`
    const sub = await Consumer.connect(broker.url, [`cairn/v1/${fleet}/+/event`, `cairn/v1/${fleet}/+/status`], { protocolVersion: mqttVersion })
    t.teardown(() => sub.close())
    const events = (): Ev[] => [...new Map(sub.on('/event').map(m => [m.json!.id as string, m.json as unknown as Ev])).values()]
    const osEvents = (kind: string, version: string) => events().filter(e => e.kind === kind && e.data.version === version && e.data.target === 'os')

    const rel = tmp('cairn-os-rel-')
    const v2 = await packRelease(rel, '2.0.0')
    repo.addRelease([v2.file], { version: '2.0.0', channel: 'stable', rollout: 100, kind: 'os', arch: [process.arch] })

    let agent = await boot(dev, { url: server.url, root }, fleet, mqttVersion)
    const online = await sub.waitFor(() => sub.on('/status').find(m => m.json?.state === 'online'), 20_000, 'online')
    t.same(online.json?.os, { version: '1.0.0', slot: 'a', updates: true, detail: 'tryboot: stand-in' }, 'the status says which OS runs and that it updates')
    t.equal(schemaErrors('status', online.json), null, 'status.json schema')
    await until(() => dev.events.includes('reboot tryboot (stand-in)'), 60_000, 'the helper arms the trial and reboots')
    t.ok(dev.events.indexOf('wrote 2.0.0 to B') >= 0 && dev.events.indexOf('wrote 2.0.0 to B') < dev.events.indexOf('reboot tryboot (stand-in)'), 'written into slot B, then armed')
    t.equal(readRecord(join(dev.osDir, 'os-update.json'))?.phase, 'trial')
    await until(() => osEvents('ota.switching', '2.0.0').length > 0, 10_000, 'ota.switching')
    t.same(
      events()
        .filter(e => e.data.target === 'os' && e.kind !== 'ota.download')
        .map(e => e.kind),
      ['ota.available', 'ota.staged', 'ota.switching'],
      'each step reported, tagged target: os',
    )
    for (const e of events()) t.equal(schemaErrors('event', e), null, `event.json schema: ${e.kind}`)
    t.equal(dev.osVersion('B'), '2.0.0', "slot B's root holds the release")
    await agent.stop()

    // the reboot: the firmware tries B once; the helper's boot run waits for the agent
    t.equal(await dev.restart(), 'B', 'the trial boots slot B')
    agent = await boot(dev, { url: server.url, root }, fleet, mqttVersion)
    await until(() => osEvents('ota.committed', '2.0.0').length > 0, 60_000, 'ota.committed for OS 2.0.0')
    t.same(parseAutoboot(readFileSync(join(dev.dir, 'p1', 'autoboot.txt'), 'utf8')), { committed: 'B', trial: 'A' }, 'autoboot.txt now boots B')
    t.match(readRecord(join(dev.osDir, 'os-update.json')), { phase: 'committed', version: '2.0.0', target: 'B' })
    const status = (
      await sub.waitFor(() => sub.on('/status').filter(m => m.json?.state === 'online' && (m.json?.os as { version?: string } | undefined)?.version === '2.0.0')[0], 10_000, 'status from OS 2.0.0')
    ).json
    t.match(status, { os: { version: '2.0.0', slot: 'b', updates: true } })
    const osReport = await rolloutStatus({ url: broker.url, mqttVersion, fleet, seconds: 1, os: true, version: '2.0.0' })
    t.match(osReport, { devices: 1, versions: { '2.0.0': { devices: 1, online: 1 } }, release: { version: '2.0.0', running: 1 } }, '`cairn fleet rollout status --os` counts OS releases')
    t.match((await rolloutStatus({ url: broker.url, mqttVersion, fleet, seconds: 1 })).versions, { '0.0.0-test': { devices: 1 } }, 'and without --os the agent releases')
    await agent.stop()
    t.equal(await dev.restart(), 'B', 'and a plain reboot stays there')

    // 3.0.0: its trial fails the self-test; the helper reboots, the firmware falls back to B
    const v3 = await packRelease(rel, '3.0.0')
    repo.addRelease([v3.file], { version: '3.0.0', channel: 'stable', rollout: 100, kind: 'os', arch: [process.arch] })
    agent = await boot(dev, { url: server.url, root }, fleet, mqttVersion)
    await until(() => dev.events.filter(e => e === 'reboot tryboot (stand-in)').length === 2, 60_000, 'the 3.0.0 trial armed')
    await agent.stop()
    t.equal(await dev.restart(), 'A', 'the trial boots slot A')
    agent = await boot(dev, { url: server.url, root }, fleet, mqttVersion, { selfTest: async () => ({ ok: false, failures: ['telemetry sample failed (test)'] }) })
    await until(() => dev.events.includes('reboot'), 60_000, 'the trial rejected: the helper reboots')
    await until(() => osEvents('ota.rolled-back', '3.0.0').length > 0, 10_000, 'ota.rolled-back for OS 3.0.0')
    t.match(osEvents('ota.rolled-back', '3.0.0')[0]!.data, { reason: 'self-test-failed', detail: /telemetry sample failed/ })
    await agent.stop()
    t.equal(await dev.restart(), 'B', 'the reset boots the committed slot B again')
    t.match(readRecord(join(dev.osDir, 'os-update.json')), { phase: 'failed', version: '3.0.0', reason: /self-test failed|self-test-failed/ })
    const seen = sub.on('/status').length
    agent = await boot(dev, { url: server.url, root }, fleet, mqttVersion)
    const s = await sub.waitFor(
      () =>
        sub
          .on('/status')
          .slice(seen)
          .find(m => m.json?.state === 'online'),
      10_000,
      'online',
    )
    t.match(s.json, { os: { version: '2.0.0', slot: 'b' } }, 'back on 2.0.0')
    await agent.stop()

    // 3.1.0 fails its trial too. With both in the channel, neither is tried again (the
    // helper's record remembers only the latest: the agent keeps its own list)
    const v31 = await packRelease(rel, '3.1.0')
    repo.addRelease([v31.file], { version: '3.1.0', channel: 'stable', rollout: 100, kind: 'os', arch: [process.arch] })
    agent = await boot(dev, { url: server.url, root }, fleet, mqttVersion)
    await until(() => dev.events.filter(e => e === 'reboot tryboot (stand-in)').length === 3, 60_000, 'the 3.1.0 trial armed')
    await agent.stop()
    t.equal(await dev.restart(), 'A')
    agent = await boot(dev, { url: server.url, root }, fleet, mqttVersion, { selfTest: async () => ({ ok: false, failures: ['telemetry sample failed (test)'] }) })
    await until(() => osEvents('ota.rolled-back', '3.1.0').length > 0, 60_000, 'ota.rolled-back for OS 3.1.0')
    await agent.stop()
    t.equal(await dev.restart(), 'B')
    agent = await boot(dev, { url: server.url, root }, fleet, mqttVersion)
    await until(() => server.requests.filter(r => r.includes('timestamp.json')).length >= 3, 20_000, 'a few more release checks')
    await new Promise(r => setTimeout(r, 2500))
    t.same(
      dev.events.filter(e => e.startsWith('wrote')),
      ['wrote 2.0.0 to B', 'wrote 3.0.0 to A', 'wrote 3.1.0 to A'],
      'neither failed version is written again',
    )
    t.match(dev.slots().current().bad.sort(), ['3.0.0', '3.1.0'])
    await agent.stop()
  })

t.test('a device that cannot pass the tryboot flag does not download OS releases', { skip: missing.length > 0 && `needs ${missing.join(', ')}` }, async t => {
  const { repo } = makeRepo()
  const server = await serveRepo(repo)
  t.teardown(() => server.close())
  const root = join(repo.paths.metadata, '1.root.json')
  const dev = osDevice({ releaseUrl: server.url, trustedRoot: root }, { tryboot: false })
  await dev.helper('boot')
  const rel = tmp('cairn-os-rel-')
  const v2 = await packRelease(rel, '2.0.0')
  repo.addRelease([v2.file], { version: '2.0.0', channel: 'stable', rollout: 100, kind: 'os', arch: [process.arch] })
  const fleet = 'osno'
  const sub = await Consumer.connect(broker.url, [`cairn/v1/${fleet}/+/event`, `cairn/v1/${fleet}/+/status`])
  t.teardown(() => sub.close())
  const agent = await boot(dev, { url: server.url, root }, fleet, 5)
  const online = await sub.waitFor(() => sub.on('/status').find(m => m.json?.state === 'online'), 20_000, 'online')
  t.match(online.json?.os, { version: '1.0.0', slot: 'a', updates: false, detail: /No such device/ })
  await new Promise(r => setTimeout(r, 3000))
  t.notOk(
    server.requests.some(r => r.includes('cairn-os-2.0.0')),
    'the release is never downloaded',
  )
  t.notOk(dev.events.some(e => e.startsWith('wrote') || e.startsWith('reboot')))
  await agent.stop()
})

t.test('detectCairnOs: what the agent finds on a Cairn OS root', async t => {
  const root = tmp('cairn-os-root-')
  const os = join(root, 'var-lib-cairn-os')
  const { mkdirSync, writeFileSync } = await import('node:fs')
  mkdirSync(join(root, 'etc'), { recursive: true })
  mkdirSync(join(root, 'proc', 'sys', 'kernel', 'random'), { recursive: true })
  mkdirSync(os, { recursive: true })
  const o = { stateDir: join(root, 'state'), osDir: os, root, enabled: true, now: () => Date.now(), sleep: async () => {} }
  t.equal(detectCairnOs(o), undefined, 'no /etc/cairn-release: not Cairn OS')
  writeFileSync(join(root, 'etc', 'cairn-release'), 'CAIRN_VERSION=1.2.0\nCAIRN_KERNEL=backports\n')
  writeFileSync(join(root, 'proc', 'cmdline'), 'console=ttyAMA0 root=/dev/vda2\n')
  t.equal(detectCairnOs(o), undefined, 'not booted from a Cairn root slot')
  writeFileSync(join(root, 'proc', 'cmdline'), 'console=ttyAMA0 root=LABEL=cairn-rootB rootfstype=ext4\n')
  t.same(detectCairnOs(o)?.info, { version: '1.2.0', slot: 'b', updates: false, detail: 'the OS update helper has not run in this boot (cairn-os-boot.service)' })
  writeFileSync(join(root, 'proc', 'sys', 'kernel', 'random', 'boot_id'), 'this-boot\n')
  writeFileSync(join(os, 'os-update-capability.json'), JSON.stringify({ tryboot: 'module', detail: 'module cairn_tryboot loaded', channel: true, bootId: 'an-earlier-boot', at: '' }))
  t.match(detectCairnOs(o)?.info, { updates: false, detail: /has not run in this boot/ }, 'a capability file from an earlier boot says nothing of this one')
  t.same(detectCairnOs({ ...o, enabled: false })?.info, { version: '1.2.0', slot: 'b', updates: false, detail: 'ota.osUpdates is false' })
  writeFileSync(join(os, 'os-update-capability.json'), JSON.stringify({ tryboot: null, detail: 'module cairn_tryboot: No such device', channel: true, bootId: 'this-boot', at: '' }))
  t.match(detectCairnOs(o)?.info, { updates: false, detail: /cannot pass the tryboot flag to the firmware: module cairn_tryboot: No such device/ })
  writeFileSync(join(os, 'os-update-capability.json'), JSON.stringify({ tryboot: 'module', detail: 'module cairn_tryboot loaded', channel: false, bootId: 'this-boot', at: '' }))
  t.match(detectCairnOs(o)?.info, { updates: false, detail: /no release channel/ })
  writeFileSync(join(os, 'os-update-capability.json'), JSON.stringify({ tryboot: 'module', detail: 'module cairn_tryboot loaded', channel: true, bootId: 'this-boot', at: '' }))
  const on = detectCairnOs(o)
  t.same(on?.info, { version: '1.2.0', slot: 'b', updates: true, detail: 'tryboot: module' })
  t.match(on?.deps, { version: '1.2.0', slot: 'b' })
  t.equal(on?.deps?.slots.kind, 'tryboot')
})
