// Where a slot's partitions are on this device: the disk that holds the data partition
// (mounted at /var/lib/cairn), partition n on it, and a partition's size, from sysfs.

import { readFileSync, realpathSync } from 'node:fs'
import { basename, dirname, join } from 'node:path'

/** /dev/mmcblk0p<n> or /dev/sda<n>: partition `n` of the disk that holds `partition`
 * (e.g. /dev/vda7). sysfs links each partition under its disk:
 * /sys/class/block/vda7 -> ../../devices/…/block/vda/vda7. */
export function siblingPartition(partition: string, n: number, sys = '/sys'): string {
  const part = basename(realpathSync(partition))
  // the link itself resolved first: a lexical ".." after it would leave /sys/class/block
  const disk = basename(dirname(realpathSync(join(sys, 'class', 'block', part))))
  if (!existsAsDisk(sys, disk)) throw new Error(`${partition}: no disk found for it in ${sys}/class/block (got ${disk})`)
  return `/dev/${disk}${/\d$/.test(disk) ? 'p' : ''}${n}`
}

function existsAsDisk(sys: string, disk: string): boolean {
  try {
    realpathSync(join(sys, 'class', 'block', disk))
    return true
  } catch {
    return false
  }
}

/** A block device's size in bytes (sysfs counts 512-byte sectors). */
export function partitionBytes(dev: string, sys = '/sys'): number {
  return Number(readFileSync(join(sys, 'class', 'block', basename(dev), 'size'), 'utf8').trim()) * 512
}
