// The CAIRN drive (the FAT partition a PC shows): the provisioning file going in, the
// result file and the applied copy (secrets removed) coming out.

import { closeSync, fsyncSync, openSync, fstatSync, unlinkSync, writeSync } from 'node:fs'
import { parseDocument } from 'yaml'
import { KEPT_SECRET, SECRET_FIELDS } from './spec.js'

export const PROVISION_FILE = 'cairn.yaml'
/** Names also accepted: Windows hides ".txt" that Notepad adds, and ".yml" is common. */
const ALSO_ACCEPTED = ['cairn.yml', 'cairn.yaml.txt', 'cairn.yml.txt']

/** The provisioning file's name on the drive, if there is one (FAT ignores case). */
export function findProvisionFile(names: readonly string[]): string | undefined {
  const lower = new Map(names.map(n => [n.toLowerCase(), n]))
  for (const want of [PROVISION_FILE, ...ALSO_ACCEPTED]) {
    const hit = lower.get(want)
    if (hit) return hit
  }
  return undefined
}
export const APPLIED_FILE = 'cairn-applied.yaml'
export const RESULT_FILE = 'cairn-result.txt'

/** cairn.yaml with every secret replaced by KEPT_SECRET; comments and order kept, so the
 * owner can copy it back to cairn.yaml to change a setting without re-typing secrets. */
export function redact(text: string, appliedAt: Date): string {
  const doc = parseDocument(text)
  for (const path of SECRET_FIELDS) if (doc.hasIn(path) && doc.getIn(path) != null) doc.setIn(path, KEPT_SECRET)
  const head = [
    `# Applied ${appliedAt.toISOString()}. Secrets were removed from this drive and are kept on the device`,
    `# ("${KEPT_SECRET}"). To change settings, edit this file, save it as ${PROVISION_FILE} and reboot.`,
  ].join('\n')
  return `${head}\n${doc.toString()}`
}

/** Overwrites a file's bytes in place before unlinking it: on FAT the clusters are
 * reused as they are, so the old text (a Wi-Fi passphrase) is not left in free space. */
export function wipeAndRemove(file: string): void {
  const fd = openSync(file, 'r+')
  try {
    const size = fstatSync(fd).size
    const zeros = Buffer.alloc(Math.min(size, 1 << 16))
    for (let pos = 0; pos < size; pos += zeros.length) writeSync(fd, zeros, 0, Math.min(zeros.length, size - pos), pos)
    fsyncSync(fd)
  } finally {
    closeSync(fd)
  }
  unlinkSync(file)
}

export type Outcome =
  | {
      readonly status: 'ok'
      readonly deviceId: string
      readonly hostname: string
      readonly fleet: string
      readonly broker: string
      readonly wifi?: string | undefined
      readonly ssh: boolean
      readonly nodeRed?: string | undefined
      readonly updates?: string | undefined
    }
  | { readonly status: 'error'; readonly deviceId?: string | undefined; readonly problems: readonly string[]; readonly kept: boolean }
  | { readonly status: 'waiting'; readonly deviceId: string; readonly hostname: string }

/** The result file: "key: value" lines a person reads and a script can grep. */
export function resultText(o: Outcome, at: Date, version: string): string {
  const lines: string[] = []
  if (o.status === 'ok') {
    lines.push('status: ok', `device id: ${o.deviceId}`, `hostname: ${o.hostname} (on the local network: ${o.hostname}.local)`, `fleet: ${o.fleet}`, `broker: ${o.broker}`)
    lines.push(`wifi: ${o.wifi ?? 'not configured (wired Ethernet with DHCP)'}`, `ssh: ${o.ssh ? `on, key login only (ssh root@${o.hostname}.local)` : 'off (no key in cairn.yaml)'}`)
    if (o.nodeRed !== undefined) lines.push(`node-red: ${o.nodeRed}`)
    if (o.updates !== undefined) lines.push(`agent updates: ${o.updates}`)
    lines.push(`The settings were applied and secrets removed from this drive; ${APPLIED_FILE} shows what was applied.`)
  } else if (o.status === 'error') {
    lines.push('status: error')
    if (o.deviceId) lines.push(`device id: ${o.deviceId}`)
    lines.push(...o.problems.map(p => `error: ${p}`))
    lines.push(o.kept ? `Nothing was changed and ${PROVISION_FILE} was left on this drive: fix it and power the device on again.` : 'The device kept its previous settings.')
  } else {
    lines.push('status: waiting', `device id: ${o.deviceId}`, `hostname: ${o.hostname}`, `No ${PROVISION_FILE} on this drive yet: write one (docs/image.md) and power the device on again.`)
  }
  lines.push(`time: ${at.toISOString()} (device clock; it may be wrong until network time is reached)`, `cairn: ${version}`)
  return lines.join('\n') + '\n'
}

/** Writes a small file on the FAT drive and syncs it: the owner may pull the card soon. */
export function writeDriveFile(file: string, text: string): void {
  const fd = openSync(file, 'w')
  try {
    writeSync(fd, text)
    fsyncSync(fd)
  } finally {
    closeSync(fd)
  }
}
