// Entry of dist/image/provision.mjs (/opt/cairn/provision.mjs on the device), run by
// cairn-provision.service as root. Logs one line per action to the journal.

import { readFileSync } from 'node:fs'
import { DEVICE_LAYOUT } from './provision-plan.js'
import { lookupCairnUser, provision } from './main.js'

/** Whether a path is a mount point, from the kernel's mount table. */
function isMountPoint(path: string): boolean {
  return readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .some(l => l.split(' ')[4] === path)
}

try {
  const report = provision({
    root: '/',
    layout: DEVICE_LAYOUT,
    cairn: lookupCairnUser('/'),
    now: () => new Date(),
    log: line => process.stdout.write(`cairn-provision: ${line}\n`),
    privileged: true,
    driveMounted: isMountPoint(DEVICE_LAYOUT.configMount),
  })
  process.stdout.write(`cairn-provision: done (${report.outcome?.status ?? 'no change'})\n`)
} catch (err) {
  process.stderr.write(`cairn-provision: failed: ${(err as Error).stack ?? err}\n`)
  process.exitCode = 1
}
