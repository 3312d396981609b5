// What the agent learns of Cairn OS at start: which OS release runs, from which slot,
// and whether OS updates can work here (the root helper's capability file). The
// composition room (cli/run-agent.ts) hands this to the OTA extension
// (ota/ota-service.ts), which builds its OS updater only when they can, and says why
// not otherwise.

import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import type { CairnOsFound } from '../../ota/ota-service.js'
import { CAPABILITY_FILE } from './helper.js'
import { bootedFromCmdline, TrybootSlots } from './tryboot-slots.js'

/** How long after its boot an OS trial must commit. */
const OS_TRIAL_DEADLINE_S = 600

export interface CairnOsInfo {
  readonly version: string
  readonly slot: 'a' | 'b'
  /** OS updates on; or off, and why */
  readonly updates: boolean
  readonly detail?: string
}

export interface CairnOsOptions {
  /** the agent's state dir (its os-update/ request dir lives there) */
  readonly stateDir: string
  /** root's OS dir on the data partition */
  readonly osDir: string
  /** where to read /etc/cairn-release, /proc/cmdline, /proc/uptime (tests: a fixture tree) */
  readonly root?: string
  readonly enabled: boolean
  readonly now: () => number
  readonly sleep: (ms: number) => Promise<void>
}

const read = (root: string, path: string): string | undefined => {
  try {
    return readFileSync(join(root, path), 'utf8')
  } catch {
    return undefined
  }
}

/** undefined: not Cairn OS (no /etc/cairn-release, or not booted from a root slot). */
export function detectCairnOs(o: CairnOsOptions): (CairnOsFound & { info: CairnOsInfo }) | undefined {
  const root = o.root ?? '/'
  const version = /^CAIRN_VERSION=(.+)$/m.exec(read(root, 'etc/cairn-release') ?? '')?.[1]?.trim()
  if (!version) return undefined
  let booted
  try {
    booted = bootedFromCmdline(read(root, 'proc/cmdline') ?? '')
  } catch {
    return undefined
  }
  const slot = booted === 'A' ? 'a' : 'b'
  const slots = new TrybootSlots({
    requestDir: join(o.stateDir, 'os-update'),
    recordFile: join(o.osDir, 'os-update.json'),
    resultFile: join(o.osDir, 'os-update-result.json'),
    capabilityFile: join(o.osDir, CAPABILITY_FILE),
    booted: () => booted,
    bootId: () => read(root, 'proc/sys/kernel/random/boot_id')?.trim() ?? '',
    uptimeS: () => Number(read(root, 'proc/uptime')?.split(' ')[0] ?? 0),
    now: o.now,
    sleep: o.sleep,
    // the OS trial's window (the agent's own healthDeadlineS is for agent slots)
    trialDeadlineS: OS_TRIAL_DEADLINE_S,
  })
  const off = (detail: string) => ({ info: { version, slot, updates: false, detail } as CairnOsInfo })
  if (!o.enabled) return off('ota.osUpdates is false')
  const cap = slots.capability()
  const bootId = read(root, 'proc/sys/kernel/random/boot_id')?.trim()
  if (!cap || (cap.bootId !== undefined && cap.bootId !== bootId)) return off('the OS update helper has not run in this boot (cairn-os-boot.service)')
  if (!cap.channel) return off('this image has no release channel (built without --release-root/--release-url)')
  if (!cap.tryboot) return off(`this device cannot pass the tryboot flag to the firmware: ${cap.detail}`)
  return { info: { version, slot, updates: true, detail: `tryboot: ${cap.tryboot}` }, deps: { slots, version, slot, trialDeadlineS: OS_TRIAL_DEADLINE_S } }
}
