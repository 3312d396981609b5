// Entry of dist/image/os-update.mjs (/opt/cairn/os-update.mjs on the device), run as root
// by cairn-os-boot.service (`--boot`, before the agent), cairn-os-update.service (on each
// agent request) and cairn-os-trial.service (`--deadline`), one at a time (flock). The device ports of helper.ts: partitions found from the disk that holds
// the data partition, the TUF check against the image's own trusted root, slot writes
// (write-slot.ts), the tryboot flag, reboots by systemctl.

import { execFileSync, spawnSync } from 'node:child_process'
import { readFileSync, statSync, writeFileSync } from 'node:fs'
import { classifyModel } from '../../hw/board.js'
import { SLOT_PARTITION, type Slot } from './autoboot.js'
import { writeAtomic } from './execute.js'
import { CAPABILITY_FILE, runHelper, type TrybootMethod } from './helper.js'
import { bootedFromCmdline } from './tryboot-slots.js'
import { readOtaEnv } from './verify-error.js'
import { partitionBytes, siblingPartition } from './partitions.js'
import { writeOsSlot } from './write-slot.js'

const OS_DIR = '/var/lib/cairn/os'
const AGENT_DIR = '/var/lib/cairn/agent'
const CONFIG_MOUNT = '/boot/cairn'
const ROOT_PARTITION: Readonly<Record<Slot, number>> = { A: 5, B: 6 }
/** The boot test's stand-in for the Pi firmware reads this from the CAIRN partition. */
const STAND_IN_FLAG = `${CONFIG_MOUNT}/tryboot.flag`
const MODULE_PARAM = '/sys/module/cairn_tryboot/parameters/armed'
const sh = (cmd: string, args: string[]) => execFileSync(cmd, args, { stdio: ['ignore', 'pipe', 'inherit'] }).toString()

/** Partition n of the disk that holds the data partition. */
const partitionDevice = (n: number) => siblingPartition(sh('findmnt', ['-no', 'SOURCE', '/var/lib/cairn']).trim(), n)

const cmdline = readFileSync('/proc/cmdline', 'utf8')

/** The ways the tryboot flag can reach the firmware (docs/image.md). The module first:
 * it works on Debian's kernel (the image's) and on the Raspberry Pi kernel alike, and
 * loading it is quick, where reading /proc/kallsyms takes seconds on a Pi at boot. */
async function probeTryboot(): Promise<{ method: TrybootMethod | null; detail: string }> {
  const mod = spawnSync('modprobe', ['cairn_tryboot'], { encoding: 'utf8' })
  const modDetail = mod.status === 0 ? 'module cairn_tryboot loaded' : `module cairn_tryboot: ${(mod.stderr || mod.error?.message || `exit ${mod.status}`).trim().replace(/^modprobe: /, '')}`
  if (mod.status === 0) return { method: 'module', detail: modDetail }
  // qemu has no Pi firmware: the boot test plays it, reading a flag file (never on a Pi:
  // only a kernel command line that asks for it, which only root can change).
  if (/(^|\s)cairn\.firmware=stand-in(\s|$)/.test(cmdline)) return { method: 'stand-in', detail: `the boot test's firmware stand-in (${modDetail})` }
  // a Raspberry Pi kernel without the module built for it passes reboot '0 tryboot' itself
  if (/\srpi_firmware_notify_reboot\b/.test(readFileSync('/proc/kallsyms', 'utf8')))
    return { method: 'kernel', detail: `the kernel's Raspberry Pi firmware driver passes reboot '0 tryboot' (${modDetail})` }
  return { method: null, detail: modDetail }
}

async function rebootTryboot(method: TrybootMethod): Promise<void> {
  if (method === 'kernel') return void sh('systemctl', ['reboot', '0 tryboot'])
  if (method === 'module') writeFileSync(MODULE_PARAM, '1')
  else writeAtomic(STAND_IN_FLAG, 'tryboot\n')
  sh('systemctl', ['reboot'])
}

const release = (() => {
  try {
    return /^CAIRN_VERSION=(.*)$/m.exec(readFileSync('/etc/cairn-release', 'utf8'))?.[1] ?? 'unknown'
  } catch {
    return 'unknown'
  }
})()

const board = (() => {
  try {
    return classifyModel(readFileSync('/proc/device-tree/model', 'utf8').replace(/\0+$/, ''))
  } catch {
    return 'generic'
  }
})()

const channel = readOtaEnv('/opt/cairn/ota.env')

const result = await runHelper(
  {
    autobootFile: `${CONFIG_MOUNT}/autoboot.txt`,
    recordFile: `${OS_DIR}/os-update.json`,
    resultFile: `${OS_DIR}/os-update-result.json`,
    capabilityFile: `${OS_DIR}/${CAPABILITY_FILE}`,
    requestDir: `${AGENT_DIR}/os-update`,
    imageRoot: AGENT_DIR,
    booted: () => bootedFromCmdline(cmdline),
    bootId: () => readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim(),
    runningVersion: () => release,
    probeTryboot,
    rebootTryboot,
    reboot: async () => void sh('systemctl', ['reboot']),
    verifyRelease: channel
      ? async req =>
          (await import('./verify-release.js')).verifyOsTarget({ releaseUrl: channel.releaseUrl, trustedRoot: channel.releaseRoot, metadataDir: `${OS_DIR}/tuf` }, req, {
            runningVersion: release,
            arch: process.arch,
            board,
          })
      : undefined,
    now: () => new Date(),
    log: line => process.stdout.write(`cairn-os-update: ${line}\n`),
  },
  process.argv.includes('--deadline') ? 'deadline' : process.argv.includes('--boot') ? 'boot' : 'request',
  async (image, target, version, verified) => {
    const rootDevice = partitionDevice(ROOT_PARTITION[target])
    const bootDevice = partitionDevice(SLOT_PARTITION[target])
    const r = await writeOsSlot(image, version, verified, {
      rootDevice,
      rootBytes: partitionBytes(rootDevice),
      rootLabel: `cairn-root${target}`,
      bootDevice,
      bootBytes: partitionBytes(bootDevice),
      bootLabel: `CAIRN-BOOT${target}`,
      staging: `${OS_DIR}/staging`,
      // the release must be the agent's own file, whatever its path resolved to
      imageOwner: statSync(AGENT_DIR).uid,
    })
    process.stdout.write(`cairn-os-update: wrote ${version} into slot ${target} (${rootDevice}: ${r.rootBytes} bytes, ${bootDevice}: ${r.bootFiles} boot files) in ${r.seconds} s\n`)
  },
)
if (!result.ok) process.exitCode = 1
