// Entry of dist/image/os-update.mjs (/opt/cairn/os-update.mjs on the device), run as root
// by cairn-os-update.service (at boot and on each agent request) and cairn-os-trial.service
// (`--deadline`). The device ports of helper.ts: partitions found from the disk that holds
// the data partition, slot writes with tar, dd, mkfs.vfat and e2label, reboots by systemctl.

import { execFileSync } from 'node:child_process'
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync, copyFileSync, realpathSync } from 'node:fs'
import { basename, join } from 'node:path'
import { SLOT_PARTITION, type Slot } from './autoboot.js'
import { runHelper } from './helper.js'
import { bootedFromCmdline } from './slots.js'

const ROOT_PARTITION: Readonly<Record<Slot, number>> = { A: 5, B: 6 }
const sh = (cmd: string, args: string[]) => execFileSync(cmd, args, { stdio: ['ignore', 'pipe', 'inherit'] }).toString()

/** /dev/mmcblk0p<n> or /dev/sda<n>, on the disk that holds the data partition. */
function partitionDevice(n: number): string {
  const data = realpathSync(sh('findmnt', ['-no', 'SOURCE', '/var/lib/cairn']).trim())
  const disk = basename(realpathSync(`/sys/class/block/${basename(data)}/..`))
  return `/dev/${disk}${/\d$/.test(disk) ? 'p' : ''}${n}`
}

/** An OS release (kind 'os'): a tar of VERSION, boot/ (the slot's FAT files) and
 * root.img (the root ext4 image). The root streams straight onto the partition. */
async function writeSlot(image: string, target: Slot, version: string): Promise<void> {
  const work = mkdtempSync('/run/cairn-os-update-')
  try {
    sh('tar', ['-xf', image, '-C', work, 'VERSION', 'boot'])
    const got = readFileSync(join(work, 'VERSION'), 'utf8').trim()
    if (got !== version) throw new Error(`release image says version ${JSON.stringify(got)}, expected ${version}`)
    const root = partitionDevice(ROOT_PARTITION[target])
    execFileSync('sh', ['-c', 'tar -xOf "$1" root.img | dd of="$2" bs=4M conv=fsync status=none', 'sh', image, root], { stdio: 'inherit' })
    sh('e2fsck', ['-fp', root])
    sh('e2label', [root, `cairn-root${target}`])
    const boot = partitionDevice(SLOT_PARTITION[target])
    sh('mkfs.vfat', ['-n', `CAIRN-BOOT${target}`, boot])
    const mnt = join(work, 'mnt')
    mkdirSync(mnt)
    sh('mount', ['-t', 'vfat', boot, mnt])
    try {
      for (const f of readdirSync(join(work, 'boot'))) if (f !== 'cmdline.txt') copyFileSync(join(work, 'boot', f), join(mnt, f))
      // the slot boots its own root, whatever slot the release was built for
      const cmdline = readFileSync(join(work, 'boot', 'cmdline.txt'), 'utf8').replace(/root=LABEL=cairn-root[AB]/, `root=LABEL=cairn-root${target}`)
      writeFileSync(join(mnt, 'cmdline.txt'), cmdline)
      sh('sync', [])
    } finally {
      sh('umount', [mnt])
    }
  } finally {
    rmSync(work, { recursive: true, force: true })
  }
}

const release = (() => {
  try {
    return /^CAIRN_VERSION=(.*)$/m.exec(readFileSync('/etc/cairn-release', 'utf8'))?.[1] ?? 'unknown'
  } catch {
    return 'unknown'
  }
})()

const result = await runHelper(
  {
    autobootFile: '/boot/cairn/autoboot.txt',
    recordFile: '/var/lib/cairn/os/os-update.json',
    resultFile: '/var/lib/cairn/os/os-update-result.json',
    requestDir: '/var/lib/cairn/agent/os-update',
    imageRoot: '/var/lib/cairn/agent',
    booted: () => bootedFromCmdline(readFileSync('/proc/cmdline', 'utf8')),
    bootId: () => readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim(),
    runningVersion: () => release,
    rebootTryboot: async () => void sh('systemctl', ['reboot', '0 tryboot']),
    reboot: async () => void sh('systemctl', ['reboot']),
    // the Raspberry Pi kernel's reboot notifier that sends the flag to the firmware
    trybootSupported: () => /\srpi_firmware_notify_reboot\b/.test(readFileSync('/proc/kallsyms', 'utf8')),
    now: () => new Date(),
    log: line => process.stdout.write(`cairn-os-update: ${line}\n`),
  },
  process.argv.includes('--deadline') ? 'deadline' : 'request',
  writeSlot,
)
if (!result.ok) process.exitCode = 1
