// OS updates through the OTA slot interface: the agent's TrybootSlots backend (unprivileged)
// asks the root helper through a request file; the helper drives the tryboot planner over
// real files (autoboot.txt, the update record, slot directories) and a stand-in for the Pi
// bootloader. Also: what the helper refuses from a hostile or confused agent.

import t from 'tap'
import { copyFileSync, mkdirSync, readFileSync, readdirSync, symlinkSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { parseAutoboot, type Slot } from '../../image-build/os-update/autoboot.js'
import { readRecord } from '../../image-build/os-update/execute.js'
import { CAPABILITY_FILE, REQUEST_FILE, runHelper, type Capability, type HelperPorts, type HelperResult, type TrybootMethod } from '../../image-build/os-update/helper.js'
import { VerifyError } from '../../image-build/os-update/verify-release.js'
import { ReleaseFormatError } from '../../image-build/os-update/release-format.js'
import { partitionBytes, siblingPartition } from '../../image-build/os-update/partitions.js'
import { bootedFromCmdline, TrybootSlots } from '../../image-build/os-update/tryboot-slots.js'
import { tmp } from '../helpers/agent.js'
import { FirmwareStandIn } from './firmware-stand-in.js'

const SHIPPED_AUTOBOOT = new URL('../../image-build/files/autoboot.txt', import.meta.url).pathname
const cmdline = (s: Slot) => `console=ttyS1,115200 root=LABEL=cairn-root${s} rootfstype=ext4 rootwait rw\n`

function device(opts: { tryboot?: boolean; channel?: boolean; verify?: (req: { targetPath: string; version: string }) => void } = {}) {
  const dir = tmp('cairn-os-helper-')
  const p = (n: string) => join(dir, n)
  const boot = { A: p('p2'), B: p('p3') }
  const roots = { A: p('p5'), B: p('p6') }
  const agentDir = p('data/agent')
  for (const d of [p('p1'), boot.A, boot.B, roots.A, roots.B, p('data/os'), agentDir]) mkdirSync(d, { recursive: true })
  copyFileSync(SHIPPED_AUTOBOOT, p('p1/autoboot.txt'))
  writeFileSync(join(boot.A, 'cmdline.txt'), cmdline('A'))
  writeFileSync(join(roots.A, 'VERSION'), '1.0.0\n')
  const pi = new FirmwareStandIn(p('p1'), boot)
  let running = pi.boot()
  const events: string[] = []
  const ports: HelperPorts = {
    autobootFile: p('p1/autoboot.txt'),
    recordFile: p('data/os/os-update.json'),
    resultFile: p('data/os/os-update-result.json'),
    requestDir: join(agentDir, 'os-update'),
    imageRoot: agentDir,
    booted: () => running.slot,
    bootId: () => running.bootId,
    runningVersion: () => readFileSync(join(roots[running.slot], 'VERSION'), 'utf8').trim(),
    capabilityFile: p(`data/os/${CAPABILITY_FILE}`),
    probeTryboot: async () => ((opts.tryboot ?? true) ? { method: 'stand-in', detail: 'the test firmware stand-in' } : { method: null, detail: 'module cairn_tryboot: No such device' }),
    rebootTryboot: async (method: TrybootMethod) => {
      pi.setTryboot()
      events.push(`reboot tryboot (${method})`)
    },
    reboot: async () => void events.push('reboot'),
    // the TUF check is test/image-build/os-release.test.ts's; here it says what it was asked
    verifyRelease:
      opts.channel === false
        ? undefined
        : async req => {
            opts.verify?.(req)
            events.push(`verified ${req.targetPath}`)
            return { length: 0, sha256: '' }
          },
    now: () => new Date(),
    log: () => {},
  }
  // the release image: a file in the agent's state dir (its download dir on the device)
  const writeSlot = async (image: string, target: Slot, version: string) => {
    const payload = JSON.parse(readFileSync(image, 'utf8')) as { version: string; broken?: boolean }
    if (payload.version !== version) throw new Error(`release image says ${payload.version}, expected ${version}`)
    if (payload.broken) throw new ReleaseFormatError('not a Cairn OS release: no root.img')
    writeFileSync(join(roots[target], 'VERSION'), version + '\n')
    writeFileSync(join(boot[target], 'cmdline.txt'), cmdline(target))
    events.push(`wrote ${version} to ${target}`)
  }
  const helper = (mode: 'request' | 'boot' | 'deadline' = 'request') => runHelper(ports, mode, writeSlot)
  // cairn-os-update.path: the helper runs while the agent waits
  const slots = new TrybootSlots({
    requestDir: ports.requestDir,
    recordFile: ports.recordFile,
    resultFile: ports.resultFile,
    capabilityFile: ports.capabilityFile,
    booted: () => running.slot,
    bootId: () => running.bootId,
    uptimeS: () => 30,
    now: () => Date.now(),
    sleep: async () => void (await helper()),
  })
  const image = (version: string, opts: { broken?: boolean } = {}) => {
    const f = join(agentDir, `os-${version}.img`)
    writeFileSync(f, JSON.stringify({ version, ...opts }))
    return f
  }
  const request = (body: unknown) => {
    mkdirSync(ports.requestDir, { recursive: true })
    writeFileSync(join(ports.requestDir, REQUEST_FILE), typeof body === 'string' ? body : JSON.stringify(body))
  }
  return {
    ports,
    pi,
    events,
    slots,
    helper,
    image,
    request,
    agentDir,
    autoboot: () => parseAutoboot(readFileSync(ports.autobootFile, 'utf8')),
    record: () => readRecord(ports.recordFile),
    result: () => JSON.parse(readFileSync(ports.resultFile, 'utf8')) as HelperResult,
    capability: () => JSON.parse(readFileSync(ports.capabilityFile, 'utf8')) as Capability,
    /** the device restarts; the helper's boot-time run comes first, as its unit does */
    restart: async () => {
      running = pi.boot()
      await helper('boot')
      return running.slot
    },
  }
}

t.test('an OS release through the slot interface: stage, trial boot, commit', async t => {
  const d = device()
  t.same(d.slots.current(), { active: 'a', previous: null, trial: null, bad: [] })
  t.equal(await d.slots.stage(d.image('2.0.0'), { version: '2.0.0', running: 'a', targetPath: 'cairn-os/2.0.0/cairn-os.tar.zst' }), 'b', 'written into the inactive pair')
  t.same(d.events, [`verified ${'cairn-os/2.0.0/cairn-os.tar.zst'}`, 'wrote 2.0.0 to B'], 'the helper checked the TUF target itself before it wrote')
  t.equal(d.record()?.phase, 'written')
  t.match(d.capability(), { tryboot: 'stand-in', channel: true }, 'the capability file says how a trial boot is started')
  await d.slots.stage(d.image('2.0.0'), { version: '2.0.0', running: 'a', targetPath: 'cairn-os/2.0.0/cairn-os.tar.zst' })
  t.equal(d.events.length, 2, 'asked again (an agent restart): done already, no second check or write')
  t.same(d.autoboot(), { committed: 'A', trial: 'B' })

  await d.slots.activateForTrial('b', '2.0.0')
  t.same(d.events.slice(-1), ['reboot tryboot (stand-in)'], 'the helper armed the trial and rebooted with the tryboot flag')
  t.match(d.slots.current(), { active: 'a', trial: null, rebootPending: 'slot b with 2.0.0' }, 'until the reboot, the agent sees it coming')
  const beforeBoot = Date.now()
  t.equal(await d.restart(), 'B', 'the trial boots B')
  const afterBoot = Date.now()
  const trial = d.slots.current()
  t.match(trial, { active: 'b', trial: { slot: 'b', version: '2.0.0', deadlineS: 600 } }, 'on trial until the agent says it is healthy')
  // the stand-in's uptime is 30 s whenever the helper asks: the window starts 30 s before
  // the helper's run, which lies between the two clock readings around the restart
  t.ok(trial.trial!.since >= beforeBoot - 30_000 - 1000 && trial.trial!.since <= afterBoot - 30_000 + 1000, "the trial's window is measured from this boot")
  t.notOk('rebootPending' in trial)
  t.same(d.result().steps, ['health-check'], 'the boot-time run waits for the agent')

  await d.slots.commit('2.0.0')
  t.same(d.autoboot(), { committed: 'B', trial: 'A' }, 'committed by rewriting autoboot.txt')
  t.match(d.slots.current(), { active: 'b', previous: 'a', trial: null, bad: [] })
  t.equal(await d.restart(), 'B', 'a plain reboot stays on B')
  await d.slots.commit('2.0.0')
  t.equal(d.result().ok, true, 'asking to commit again is harmless')
})

t.test('the agent rejects its trial: reboot, the firmware falls back, the version is bad', async t => {
  const d = device()
  await d.slots.stage(d.image('2.0.0'), { version: '2.0.0', running: 'a', targetPath: 'cairn-os/2.0.0/cairn-os.tar.zst' })
  await d.slots.activateForTrial('b', '2.0.0')
  await d.restart()
  await d.slots.rollback('2.0.0', 'self-test failed: disk')
  t.same(d.events.slice(-1), ['reboot'])
  t.equal(await d.restart(), 'A', 'the old slot boots: the tryboot flag is gone')
  t.match(d.record(), { phase: 'failed', version: '2.0.0', reason: /health check failed in the trial boot: self-test failed: disk/ })
  t.same(d.slots.current().bad, ['2.0.0'])
  t.same(d.autoboot(), { committed: 'A', trial: 'B' })
})

t.test('a trial boot nobody commits ends at the deadline; one that hangs falls back by itself', async t => {
  const d = device()
  await d.slots.stage(d.image('2.0.0'), { version: '2.0.0', running: 'a', targetPath: 'cairn-os/2.0.0/cairn-os.tar.zst' })
  await d.slots.activateForTrial('b', '2.0.0')
  await d.restart()
  const r = await d.helper('deadline')
  t.same(r.steps, ['health-check', 'reboot'], 'cairn-os-trial.timer: no commit in time, reboot')
  t.equal(await d.restart(), 'A')
  t.match(d.record(), { phase: 'failed', reason: /no commit within the trial deadline/ })

  // the next release; this trial hangs and the watchdog resets the board
  await d.slots.stage(d.image('2.0.1'), { version: '2.0.1', running: 'a', targetPath: 'cairn-os/2.0.1/cairn-os.tar.zst' })
  await d.slots.activateForTrial('b', '2.0.1')
  d.pi.boot() // the trial boot, which never gets as far as the helper
  t.equal(await d.restart(), 'A', 'the reset boots the committed slot')
  t.match(d.record(), { phase: 'failed', version: '2.0.1', reason: /did not commit; slot A booted again/ })
  t.equal((await d.helper('deadline')).steps.length, 1, 'a deadline outside a trial does nothing')
  t.equal(d.events.filter(e => e === 'reboot').length, 1)
})

t.test('a device that cannot pass the tryboot flag: writes and trials are refused for good', async t => {
  const d = device({ tryboot: false })
  d.request({ op: 'write', version: '2.0.0', image: d.image('2.0.0'), target: 'cairn-os/2.0.0/cairn-os.tar.zst' })
  const w = await d.helper()
  t.match(w, { ok: false, permanent: true, error: /cannot pass the tryboot flag to the firmware, so an OS update could never be tried: module cairn_tryboot: No such device/ })
  t.same(d.events, [], 'nothing verified, written or rebooted')
  t.match(d.capability(), { tryboot: null, detail: /No such device/ }, 'and the agent can read why')
  d.request({ op: 'arm', version: '2.0.0' })
  t.match(await d.helper(), { ok: false, permanent: true })
  await t.rejects(
    d.slots.stage(d.image('2.0.0'), { version: '2.0.0', running: 'a', targetPath: 'cairn-os/2.0.0/cairn-os.tar.zst' }),
    { name: 'StageError', message: /OS slot write refused/ },
    'the agent gives the version up (StageError)',
  )
  t.notOk(
    d.events.some(e => e.startsWith('reboot')),
    'no reboot into a trial that could not happen',
  )
})

t.test('the helper verifies before it writes: no channel, a refused target', async t => {
  const none = device({ channel: false })
  none.request({ op: 'write', version: '2.0.0', image: none.image('2.0.0'), target: 'cairn-os/2.0.0/cairn-os.tar.zst' })
  t.match(await none.helper(), { ok: false, permanent: true, error: /no release channel .* cannot verify an OS release/ })
  t.same(none.events, [])
  t.match(none.capability(), { channel: false })

  const d = device({
    verify: req => {
      throw new VerifyError(`${req.targetPath} is a release of kind agent, not an OS release`)
    },
  })
  await t.rejects(d.slots.stage(d.image('2.0.0'), { version: '2.0.0', running: 'a', targetPath: 'cairn/2.0.0/linux-arm64/cairn-agent.tar' }), {
    name: 'StageError',
    message: /kind agent, not an OS release/,
  })
  t.same(d.events, [], 'nothing written')
  t.equal(d.record(), undefined, 'no update recorded')
  await t.rejects(d.slots.stage(d.image('2.0.0'), { version: '2.0.0', running: 'a' }), /by its TUF target name/)

  const flaky = device({
    verify: () => {
      throw new Error('release metadata: cannot reach the release server (ECONNREFUSED)')
    },
  })
  const err = await flaky.slots.stage(flaky.image('2.0.0'), { version: '2.0.0', running: 'a', targetPath: 'cairn-os/2.0.0/cairn-os.tar.zst' }).catch(e => e as Error)
  t.match(err, { message: /OS slot write failed: .*ECONNREFUSED/ })
  t.not((err as Error).name, 'StageError', 'a network failure is retried, not a reason to give the version up')
})

t.test('what the helper refuses from the agent (untrusted: another user)', async t => {
  const d = device()
  const refused = async (body: unknown, re: RegExp, what: string) => {
    d.request(body)
    const r = await d.helper()
    t.equal(r.ok, false, what)
    t.match(r.error, re, what)
    t.same(readdirSync(d.ports.requestDir), [], `${what}: the request is gone, nothing written there`)
  }
  const target = 'cairn-os/2.0.0/cairn-os.tar.zst'
  await refused({ op: 'write', version: '2.0.0', image: '/etc/passwd', target }, /request\.image: must be inside/, 'an image outside the state dir')
  symlinkSync('/etc/hostname', join(d.agentDir, 'link.img'))
  await refused({ op: 'write', version: '2.0.0', image: join(d.agentDir, 'link.img'), target }, /request\.image: (must be inside|no such file)/, 'a link out of the state dir')
  await refused({ op: 'write', version: '2.0.0', image: d.image('2.0.0') }, /request\.target: a TUF target path/, 'a write without its target')
  await refused({ op: 'write', version: '2.0.0', image: d.image('2.0.0'), target: 'cairn-os/../../etc/x' }, /request\.target/, 'a target path with ..')
  await refused({ op: 'format', version: '2.0.0' }, /request\.op: one of write, arm, commit, reject/, 'an unknown op')
  await refused({ op: 'commit', version: '../../x' }, /request\.version: not a version/, 'a bad version')
  await refused('{"op":', /not JSON/, 'not JSON')
  await refused(JSON.stringify({ op: 'reject', version: '1.0.0', reason: 'x'.repeat(20_000) }), /request is \d+ bytes/, 'an oversized request')
  await refused({ op: 'commit', version: '2.0.0' }, /nothing to commit: the update record is empty/, 'a commit with no update')
  mkdirSync(d.ports.requestDir, { recursive: true })
  symlinkSync(d.ports.autobootFile, join(d.ports.requestDir, REQUEST_FILE))
  const r = await d.helper()
  t.match(r, { ok: false, error: /request unreadable \(ELOOP\)/ }, 'a request that is a link is not followed')
  t.same(readdirSync(d.ports.requestDir), [], 'and removed')
  t.same(d.autoboot(), { committed: 'A', trial: 'B' }, 'autoboot.txt untouched throughout')
  t.same(d.events, [])
})

t.test('a slot written but never armed is replaced by the next release; one that cannot be written is failed, not left half written', async t => {
  const d = device()
  const target = (v: string) => `cairn/${v}/cairn-os-${v}-rpi-arm64.tar.zst`
  await d.slots.stage(d.image('2.0.0'), { version: '2.0.0', running: 'a', targetPath: target('2.0.0') })
  t.equal(d.record()?.phase, 'written')
  t.equal(await d.slots.stage(d.image('2.0.1'), { version: '2.0.1', running: 'a', targetPath: target('2.0.1') }), 'b', 'a newer release while 2.0.0 waits unarmed')
  t.match(d.record(), { phase: 'written', version: '2.0.1', target: 'B' })
  t.same(
    d.events.filter(e => e.startsWith('wrote')),
    ['wrote 2.0.0 to B', 'wrote 2.0.1 to B'],
  )

  await t.rejects(
    d.slots.stage(d.image('2.0.2', { broken: true }), { version: '2.0.2', running: 'a', targetPath: target('2.0.2') }),
    { name: 'StageError', message: /no root\.img/ },
    'a release that cannot be written: given up',
  )
  t.match(d.record(), { phase: 'failed', version: '2.0.2', reason: /the slot write failed: not a Cairn OS release/ }, 'recorded failed, not left "writing" for the next boot')
  t.ok(d.slots.current().bad.includes('2.0.2'))
  await d.slots.stage(d.image('2.0.3'), { version: '2.0.3', running: 'a', targetPath: target('2.0.3') })
  t.match(d.record(), { phase: 'written', version: '2.0.3' }, 'and the next release goes through')
  await d.slots.activateForTrial('b', '2.0.3')
  t.equal(await d.restart(), 'B')
  t.same(d.slots.current().bad.sort(), ['2.0.2'], 'failed versions stay bad on the agent side')
})

t.test('arm, commit and reject for another version than the update in progress change nothing', async t => {
  const d = device()
  await d.slots.stage(d.image('2.0.0'), { version: '2.0.0', running: 'a', targetPath: 'cairn/2.0.0/x.tar.zst' })
  for (const op of ['arm', 'commit', 'reject'] as const) {
    d.request({ op, version: '9.9.9', ...(op === 'reject' ? { reason: 'x' } : {}) })
    t.match(await d.helper(), { ok: false, permanent: true, error: 'the update in progress is 2.0.0, not 9.9.9' }, op)
  }
  t.notOk(
    d.events.some(e => e.startsWith('reboot')),
    'nothing armed, nothing rebooted',
  )
  t.same(d.autoboot(), { committed: 'A', trial: 'B' })
  t.equal(d.record()?.phase, 'written')
})

t.test('the boot-time run drops requests left from before the reboot', async t => {
  const d = device()
  await d.slots.stage(d.image('2.0.0'), { version: '2.0.0', running: 'a', targetPath: 'cairn/2.0.0/x.tar.zst' })
  d.request({ op: 'arm', version: '2.0.0' }) // the power went before the helper saw it
  const r = await d.helper('boot')
  t.match(r, { op: 'boot', ok: true })
  t.notOk(
    d.events.some(e => e.startsWith('reboot')),
    'no surprise reboot at boot',
  )
  t.same(readdirSync(d.ports.requestDir), [], 'the request is gone: the agent asks again if it still wants it')
  t.equal(d.record()?.phase, 'written', 'the written slot still waits')
  t.match(d.capability(), { bootId: /^[0-9a-f-]{36}$/ }, 'the capability names the boot it was found in')
})

t.test("the slot's partitions from sysfs: the disk of the data partition", async t => {
  const sys = tmp('cairn-sysfs-')
  const dev = tmp('cairn-dev-')
  for (const [disk, parts] of [
    ['vda', ['vda6', 'vda7']],
    ['mmcblk0', ['mmcblk0p6', 'mmcblk0p7']],
  ] as const) {
    mkdirSync(join(sys, 'devices', 'platform', 'x', 'block', disk), { recursive: true })
    for (const p of parts) {
      mkdirSync(join(sys, 'devices', 'platform', 'x', 'block', disk, p), { recursive: true })
      writeFileSync(join(sys, 'devices', 'platform', 'x', 'block', disk, p, 'size'), '3145728\n')
    }
  }
  mkdirSync(join(sys, 'class', 'block'), { recursive: true })
  for (const [link, target] of [
    ['vda', 'vda'],
    ['vda6', 'vda/vda6'],
    ['vda7', 'vda/vda7'],
    ['mmcblk0', 'mmcblk0'],
    ['mmcblk0p6', 'mmcblk0/mmcblk0p6'],
    ['mmcblk0p7', 'mmcblk0/mmcblk0p7'],
  ]) {
    symlinkSync(`../../devices/platform/x/block/${target}`, join(sys, 'class', 'block', link!))
    writeFileSync(join(dev, link!), '')
  }
  t.equal(siblingPartition(join(dev, 'vda7'), 6, sys), '/dev/vda6', 'qemu: /dev/vda7 -> /dev/vda6')
  t.equal(siblingPartition(join(dev, 'mmcblk0p7'), 3, sys), '/dev/mmcblk0p3', 'SD card: mmcblk0 takes a p')
  t.equal(partitionBytes('/dev/vda6', sys), 1536 * 1024 * 1024)
})

t.test('the booted slot from the kernel command line', async t => {
  t.equal(bootedFromCmdline('console=ttyAMA0 root=LABEL=cairn-rootB rootfstype=ext4'), 'B')
  t.throws(() => bootedFromCmdline('root=/dev/vda5'), /not booted from a Cairn root slot/)
})
