// A Cairn OS device in a temp dir, for OS update tests without qemu: the CAIRN partition
// (a directory with autoboot.txt), boot and root partitions as FAT and ext4 image files
// (mkfs.vfat, mke2fs: the tools the helper runs on the real partitions), the data
// partition's root-owned os/ dir and the agent's state dir, a stand-in for the Pi
// firmware, and the root helper run in-process with its real slot writer and TUF check.

import { execFileSync, spawnSync } from 'node:child_process'
import { copyFileSync, mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { SLOT_PARTITION, type Slot } from '../../image-build/os-update/autoboot.js'
import { CAPABILITY_FILE, runHelper, type HelperPorts, type HelperResult } from '../../image-build/os-update/helper.js'
import { packOsRelease, type Packed } from '../../image-build/os-update/release-format.js'
import { TrybootSlots } from '../../image-build/os-update/tryboot-slots.js'
import { verifyOsTarget } from '../../image-build/os-update/verify-release.js'
import { writeOsSlot } from '../../image-build/os-update/write-slot.js'
import { FirmwareStandIn } from '../image-build/firmware-stand-in.js'
import { tmp } from './agent.js'

const OS_TOOLS = ['mke2fs', 'e2fsck', 'resize2fs', 'e2label', 'debugfs', 'mkfs.vfat', 'mcopy', 'mdir', 'mtype', 'zstd']
export const missingOsTools = (): string[] => OS_TOOLS.filter(c => spawnSync('sh', ['-c', `command -v ${c} || test -x /usr/sbin/${c} || test -x /sbin/${c}`]).status !== 0)

const mtools = { env: { ...process.env, MTOOLS_SKIP_CHECK: '1' }, encoding: 'utf8' as const }
const SHIPPED_AUTOBOOT = new URL('../../image-build/files/autoboot.txt', import.meta.url).pathname
const ROOT_PARTITION: Readonly<Record<Slot, number>> = { A: 5, B: 6 }
const ROOT_MIB = 24
const BOOT_MIB = 16
const cmdlineFor = (label: string) => `console=ttyS1,115200 root=LABEL=${label} rootfstype=ext4 rootwait rw panic=10\n`

/** A release's boot files and root image, as the build makes them (small). */
function releaseParts(dir: string, version: string, opts: { cmdline?: string } = {}): { boot: string; root: string } {
  const boot = join(dir, `boot-${version}`)
  const tree = join(dir, `tree-${version}`)
  mkdirSync(join(boot, 'overlays'), { recursive: true })
  mkdirSync(join(tree, 'etc'), { recursive: true })
  writeFileSync(join(boot, 'config.txt'), `# Cairn OS ${version}\n[all]\narm_64bit=1\nkernel=vmlinuz\n`)
  writeFileSync(join(boot, 'cmdline.txt'), opts.cmdline ?? cmdlineFor('cairn-rootA'))
  writeFileSync(join(boot, 'vmlinuz'), Buffer.alloc(200_000, version.length))
  writeFileSync(join(boot, 'cairn-slot.txt'), `slot=A\nversion=${version}\n`)
  writeFileSync(join(tree, 'etc', 'cairn-release'), `CAIRN_VERSION=${version}\n`)
  const root = join(dir, `root-${version}.img`)
  execFileSync('mke2fs', ['-q', '-F', '-t', 'ext4', '-L', 'cairn-root', '-d', tree, root, '8M'])
  return { boot, root }
}

export async function packRelease(dir: string, version: string, opts: { cmdline?: string } = {}): Promise<{ file: string } & Packed> {
  const { boot, root } = releaseParts(dir, version, opts)
  const file = join(dir, `cairn-os-${version}-rpi-arm64.tar.zst`)
  return { file, ...(await packOsRelease({ version, bootDir: boot, rootImage: root, out: file, level: 3 })) }
}

export interface OsDevice {
  readonly dir: string
  /** the agent's state dir (/var/lib/cairn/agent) */
  readonly stateDir: string
  readonly osDir: string
  readonly pi: FirmwareStandIn
  /** what the helper did that a real device would do outside it (reboots) */
  readonly events: string[]
  running(): { slot: Slot; bootId: string; trial: boolean }
  /** the device restarts: the firmware picks a slot, the helper's boot-time run comes first */
  restart(): Promise<Slot>
  helper(mode?: 'request' | 'boot' | 'deadline'): Promise<HelperResult>
  /** the agent's side for the current boot */
  slots(): TrybootSlots
  osVersion(slot?: Slot): string | undefined
  partition(n: number): string
}

/** `trust`: the release channel the image shipped (its URL and root.json). */
export function osDevice(trust: { releaseUrl: string; trustedRoot: string } | undefined, opts: { tryboot?: boolean } = {}): OsDevice {
  const dir = tmp('cairn-os-device-')
  const p = (n: number) => join(dir, `p${n}.img`)
  const config = join(dir, 'p1')
  const osDir = join(dir, 'data', 'os')
  const stateDir = join(dir, 'data', 'agent')
  for (const d of [config, osDir, stateDir]) mkdirSync(d, { recursive: true })
  copyFileSync(SHIPPED_AUTOBOOT, join(config, 'autoboot.txt'))
  for (const n of [2, 3]) execFileSync('mkfs.vfat', ['-C', p(n), String(BOOT_MIB * 1024), '-n', n === 2 ? 'CAIRN-BOOTA' : 'CAIRN-BOOTB'], { stdio: 'ignore' })
  for (const n of [5, 6]) execFileSync('truncate', ['-s', `${ROOT_MIB}M`, p(n)])
  // slot A as flashed: OS 1.0.0
  const a = releaseParts(join(dir, 'flashed'), '1.0.0')
  writeFileSync(join(a.boot, 'cmdline.txt'), cmdlineFor('cairn-rootA'))
  execFileSync('mcopy', ['-s', '-i', p(2), join(a.boot, 'cmdline.txt'), join(a.boot, 'config.txt'), '::/'], mtools)
  execFileSync('dd', [`if=${a.root}`, `of=${p(5)}`, 'conv=notrunc', 'status=none'])
  execFileSync('e2label', [p(5), 'cairn-rootA'])
  const cmdlineOf = (s: Slot) => {
    const r = spawnSync('mtype', ['-i', p(SLOT_PARTITION[s]), '::/cmdline.txt'], mtools)
    return r.status === 0 ? r.stdout : undefined
  }
  const pi = new FirmwareStandIn(config, cmdlineOf)
  let running = pi.boot()
  const events: string[] = []
  const osVersion = (s: Slot = running.slot) => {
    const r = spawnSync('debugfs', ['-R', 'cat /etc/cairn-release', p(ROOT_PARTITION[s])], { encoding: 'utf8' })
    return /^CAIRN_VERSION=(.*)$/m.exec(r.stdout)?.[1]
  }
  const ports: HelperPorts = {
    autobootFile: join(config, 'autoboot.txt'),
    recordFile: join(osDir, 'os-update.json'),
    resultFile: join(osDir, 'os-update-result.json'),
    capabilityFile: join(osDir, CAPABILITY_FILE),
    requestDir: join(stateDir, 'os-update'),
    imageRoot: stateDir,
    booted: () => running.slot,
    bootId: () => running.bootId,
    runningVersion: () => osVersion() ?? 'unknown',
    probeTryboot: async () => (opts.tryboot === false ? { method: null, detail: 'module cairn_tryboot: No such device' } : { method: 'stand-in', detail: 'the test firmware stand-in' }),
    rebootTryboot: async method => {
      pi.setTryboot()
      events.push(`reboot tryboot (${method})`)
    },
    reboot: async () => void events.push('reboot'),
    verifyRelease: trust ? req => verifyOsTarget({ ...trust, metadataDir: join(osDir, 'tuf') }, req, { runningVersion: osVersion() ?? 'unknown', arch: process.arch, board: 'generic' }) : undefined,
    now: () => new Date(),
    log: line => events.push(`log: ${line}`),
  }
  const helper = (mode: 'request' | 'boot' | 'deadline' = 'request') =>
    runHelper(ports, mode, async (image, target, version, verified) => {
      const root = p(ROOT_PARTITION[target])
      const boot = p(SLOT_PARTITION[target])
      await writeOsSlot(image, version, verified, {
        rootDevice: root,
        rootBytes: ROOT_MIB << 20,
        rootLabel: `cairn-root${target}`,
        bootDevice: boot,
        bootBytes: BOOT_MIB << 20,
        bootLabel: `CAIRN-BOOT${target}`,
        staging: join(osDir, 'staging'),
      })
      events.push(`wrote ${version} to ${target}`)
    })
  // cairn-os-update.path: the helper runs while the agent waits for its answer
  const slots = () => {
    const booted = running.slot
    const bootId = running.bootId
    return new TrybootSlots({
      requestDir: ports.requestDir,
      recordFile: ports.recordFile,
      resultFile: ports.resultFile,
      capabilityFile: ports.capabilityFile,
      booted: () => booted,
      bootId: () => bootId,
      uptimeS: () => 20,
      now: () => Date.now(),
      sleep: async () => void (await helper()),
    })
  }
  return {
    dir,
    stateDir,
    osDir,
    pi,
    events,
    running: () => running,
    restart: async () => {
      running = pi.boot()
      await helper('boot')
      return running.slot
    },
    helper,
    slots,
    osVersion,
    partition: p,
  }
}
