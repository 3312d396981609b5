// The A/B OS update (image-build/os-update) against a stand-in for the Raspberry Pi
// bootloader, over real files: the autoboot.txt the image ships, slot directories with
// cmdline.txt as the build writes them, and the update record. qemu has no Pi firmware,
// so this is where commit and fallback are tested, including a power cut at every step.

import t from 'tap'
import { copyFileSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { formatAutoboot, parseAutoboot, SLOT_PARTITION, slotOfPartition, type Slot } from '../../image-build/os-update/autoboot.js'
import { planUpdate, type Observed } from '../../image-build/os-update/tryboot-plan.js'
import { readRecord, runUpdate, type UpdatePorts } from '../../image-build/os-update/execute.js'
import { tmp } from '../helpers/agent.js'
import { FirmwareStandIn } from './firmware-stand-in.js'

const SHIPPED_AUTOBOOT = new URL('../../image-build/files/autoboot.txt', import.meta.url).pathname

/** A device: CAIRN partition, two boot slots, two roots (a VERSION file each), data. */
function device(opts: { health?: () => { ok: true } | { ok: false; reason: string }; crashAt?: string | undefined } = {}) {
  const dir = tmp('cairn-tryboot-')
  const config = join(dir, 'p1')
  const boot = { A: join(dir, 'p2'), B: join(dir, 'p3') }
  const roots = { A: join(dir, 'p5'), B: join(dir, 'p6') }
  const data = join(dir, 'p7')
  for (const d of [config, boot.A, boot.B, roots.A, roots.B, data]) mkdirSync(d)
  copyFileSync(SHIPPED_AUTOBOOT, join(config, 'autoboot.txt'))
  // slot A as the build writes it; slot B empty
  writeFileSync(join(boot.A, 'cmdline.txt'), 'console=ttyS1,115200 console=tty0 root=LABEL=cairn-rootA rootfstype=ext4 rootwait rw fsck.repair=yes net.ifnames=0\n')
  writeFileSync(join(roots.A, 'VERSION'), '1.0.0\n')
  const pi = new FirmwareStandIn(config, boot)
  let running = pi.boot()
  const events: string[] = []
  const crash = (at: string) => {
    if (opts.crashAt === at) throw new Error(`power cut at ${at}`)
  }
  const ports: UpdatePorts = {
    autobootFile: join(config, 'autoboot.txt'),
    recordFile: join(data, 'os-update.json'),
    booted: () => running.slot,
    bootId: () => running.bootId,
    runningVersion: () => readFileSync(join(roots[running.slot], 'VERSION'), 'utf8').trim(),
    writeSlot: async (target, version) => {
      rmSync(join(boot[target], 'cmdline.txt'), { force: true })
      writeFileSync(join(roots[target], 'VERSION'), version + '\n')
      crash('write-slot')
      writeFileSync(join(boot[target], 'cmdline.txt'), `console=ttyS1,115200 console=tty0 root=LABEL=cairn-root${target} rootfstype=ext4 rootwait rw fsck.repair=yes net.ifnames=0\n`)
      events.push(`wrote ${version} to ${target}`)
    },
    rebootTryboot: async () => {
      pi.setTryboot()
      events.push('reboot tryboot')
    },
    reboot: async () => {
      events.push('reboot')
    },
    healthCheck: async () => opts.health?.() ?? { ok: true },
  }
  return {
    ports,
    pi,
    events,
    autoboot: () => parseAutoboot(readFileSync(join(config, 'autoboot.txt'), 'utf8')),
    record: () => readRecord(ports.recordFile),
    /** the device restarts (after a reboot step, a crash or a power cut) */
    restart: () => {
      running = pi.boot()
      return running
    },
    running: () => running,
    breakSlot: (s: Slot) => writeFileSync(join(boot[s], 'cmdline.txt'), 'garbage\n'),
    setCrash: (at: string | undefined) => (opts.crashAt = at),
  }
}

t.test('the shipped autoboot.txt: normal boot from slot A, trial from slot B', async t => {
  t.same(parseAutoboot(readFileSync(SHIPPED_AUTOBOOT, 'utf8')), { committed: 'A', trial: 'B' })
  t.equal(formatAutoboot({ committed: 'A', trial: 'B' }), readFileSync(SHIPPED_AUTOBOOT, 'utf8'), 'the updater writes the same format')
  t.same([SLOT_PARTITION.A, SLOT_PARTITION.B, slotOfPartition(3)], [2, 3, 'B'])
  t.throws(() => parseAutoboot('[all]\nboot_partition=2\n'), /lacks tryboot_a_b=1/)
  t.throws(() => parseAutoboot('[all]\ntryboot_a_b=1\nboot_partition=5\n[tryboot]\nboot_partition=3\n'), /partition 5 is not a Cairn boot slot/)
})

t.test('an update commits after a healthy trial boot, and the next one goes back to A', async t => {
  const d = device()
  let run = await runUpdate(d.ports, { version: '2.0.0' })
  t.same(
    run.steps.map(s => s.kind),
    ['write-slot', 'arm', 'reboot-tryboot'],
  )
  t.same(d.autoboot(), { committed: 'A', trial: 'B' }, 'nothing committed before the trial')
  t.equal(d.restart().slot, 'B', 'the trial boots B')
  run = await runUpdate(d.ports)
  t.same(
    run.steps.map(s => s.kind),
    ['health-check', 'commit', 'idle'],
  )
  t.same(d.autoboot(), { committed: 'B', trial: 'A' })
  t.equal(d.record()?.phase, 'committed')
  t.equal(d.restart().slot, 'B', 'a plain reboot now boots B')
  t.same(
    (await runUpdate(d.ports)).steps.map(s => s.kind),
    ['idle'],
  )

  // the next release goes to A; arming points [tryboot] at partition 2
  run = await runUpdate(d.ports, { version: '3.0.0' })
  t.same(run.steps, [{ kind: 'write-slot', target: 'A', version: '3.0.0' }, { kind: 'arm', target: 'A' }, { kind: 'reboot-tryboot' }])
  t.same(d.autoboot(), { committed: 'B', trial: 'A' })
  t.equal(d.restart().slot, 'A')
  await runUpdate(d.ports)
  t.same(d.autoboot(), { committed: 'A', trial: 'B' })
  t.equal(d.ports.runningVersion(), '3.0.0')
})

t.test('a trial boot that crashes falls back to the old slot by itself', async t => {
  const d = device()
  await runUpdate(d.ports, { version: '2.0.0' })
  t.equal(d.restart().slot, 'B')
  // the new slot hangs or crashes before committing: the watchdog or the owner resets it
  t.equal(d.restart().slot, 'A', 'the firmware boots A again')
  const run = await runUpdate(d.ports, { version: '2.0.0' })
  t.same(
    run.steps.map(s => s.kind),
    ['mark-failed', 'idle'],
    'recorded, and the same release is not retried',
  )
  t.match(d.record(), { phase: 'failed', version: '2.0.0', reason: /did not commit; slot A booted again/ })
  t.same(d.autoboot(), { committed: 'A', trial: 'B' })
  t.same((await runUpdate(d.ports, { version: '2.0.1' })).steps[0], { kind: 'write-slot', target: 'B', version: '2.0.1' }, 'a newer release is tried')
})

t.test('a failed health check reboots into the old slot', async t => {
  const d = device({ health: () => ({ ok: false, reason: 'broker not reached in 120 s' }) })
  await runUpdate(d.ports, { version: '2.0.0' })
  d.restart()
  const run = await runUpdate(d.ports)
  t.same(
    run.steps.map(s => s.kind),
    ['health-check', 'reboot'],
  )
  t.equal(d.restart().slot, 'A')
  await runUpdate(d.ports)
  t.match(d.record(), { phase: 'failed', reason: 'health check failed in the trial boot: broker not reached in 120 s' })
  t.same(d.autoboot(), { committed: 'A', trial: 'B' })
})

t.test('a slot the firmware cannot boot falls back to the committed one', async t => {
  const d = device()
  await runUpdate(d.ports, { version: '2.0.0' })
  d.breakSlot('B')
  t.equal(d.restart().slot, 'A')
  await runUpdate(d.ports)
  t.equal(d.record()?.phase, 'failed')
})

t.test('a power cut while writing the slot: the write starts again', async t => {
  const d = device({ crashAt: 'write-slot' })
  await t.rejects(runUpdate(d.ports, { version: '2.0.0' }), /power cut at write-slot/)
  t.equal(d.record()?.phase, 'writing')
  t.equal(d.restart().slot, 'A')
  d.setCrash(undefined)
  const run = await runUpdate(d.ports)
  t.same(
    run.steps.map(s => s.kind),
    ['write-slot', 'arm', 'reboot-tryboot'],
  )
  t.equal(d.restart().slot, 'B')
})

t.test('a power cut after the commit wrote autoboot.txt but before the record: commit again', async t => {
  const d = device()
  await runUpdate(d.ports, { version: '2.0.0' })
  d.restart()
  // what the commit does, cut short after its first write
  writeFileSync(d.ports.autobootFile, formatAutoboot({ committed: 'B', trial: 'A' }))
  t.equal(d.record()?.phase, 'trial')
  t.equal(d.restart().slot, 'B', 'autoboot.txt already says B')
  const run = await runUpdate(d.ports)
  t.same(
    run.steps.map(s => s.kind),
    ['commit', 'idle'],
  )
  t.equal(d.record()?.phase, 'committed')
})

t.test('armed but not yet rebooted: the planner reboots rather than calling it failed', async t => {
  const observed: Observed = {
    record: { phase: 'trial', target: 'B', version: '2.0.0', armedBootId: 'boot-1' },
    autoboot: { committed: 'A', trial: 'B' },
    booted: 'A',
    bootId: 'boot-1',
    runningVersion: '1.0.0',
  }
  t.same(planUpdate(observed), { kind: 'reboot-tryboot' })
  t.same(planUpdate({ ...observed, bootId: 'boot-2' }).kind, 'mark-failed')
})
