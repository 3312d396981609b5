// Performs the steps planUpdate returns, one at a time, recording each before the next
// is planned. The device's side effects (writing a slot, rebooting, the health check)
// are ports; the record and autoboot.txt are real files written atomically.

import { readFileSync } from 'node:fs'
import { writeFileAtomic } from '../../protocol/durable-files.js'
import { formatAutoboot, otherSlot, parseAutoboot, type Slot } from './autoboot.js'
import { planUpdate, type Step, type UpdateRecord } from './tryboot-plan.js'

export interface UpdatePorts {
  /** autoboot.txt on the CAIRN partition */
  readonly autobootFile: string
  /** the update record on the data partition */
  readonly recordFile: string
  booted(): Slot
  bootId(): string
  runningVersion(): string
  /** writes the boot files and root of `version` into `target`'s partitions */
  writeSlot(target: Slot, version: string): Promise<void>
  /** `systemctl reboot '0 tryboot'` on the device */
  rebootTryboot(): Promise<void>
  reboot(): Promise<void>
  /** The trial boot's verdict; `pending` while nobody has said yet (the helper's run at
   * boot, before the agent has checked itself): the run stops and waits to be asked. */
  healthCheck(): Promise<HealthVerdict>
}

export type HealthVerdict = { ok: true } | { ok: false; reason: string } | { pending: true }

export interface RunOptions {
  /** Stop before performing a step of one of these kinds (the helper's `write` request
   * writes the slot, and arming waits for the agent's `arm`). */
  readonly stopBefore?: ReadonlyArray<Step['kind']>
}

export interface UpdateRun {
  readonly steps: Step[]
  readonly record: UpdateRecord | undefined
}

/** Runs steps until the update is idle or the device reboots. */
export async function runUpdate(ports: UpdatePorts, offer?: { version: string }, opts: RunOptions = {}): Promise<UpdateRun> {
  const steps: Step[] = []
  let health: 'ok' | 'failed' | undefined
  for (let guard = 0; guard < 20; guard++) {
    const record = readRecord(ports.recordFile)
    const step = planUpdate({
      record,
      autoboot: parseAutoboot(readFileSync(ports.autobootFile, 'utf8')),
      booted: ports.booted(),
      bootId: ports.bootId(),
      health,
      offer,
      runningVersion: ports.runningVersion(),
    })
    if (opts.stopBefore?.includes(step.kind)) return { steps, record }
    steps.push(step)
    switch (step.kind) {
      case 'idle':
        return { steps, record }
      case 'write-slot':
        writeAtomic(ports.recordFile, JSON.stringify({ phase: 'writing', target: step.target, version: step.version } satisfies UpdateRecord) + '\n')
        await ports.writeSlot(step.target, step.version)
        writeAtomic(ports.recordFile, JSON.stringify({ phase: 'written', target: step.target, version: step.version } satisfies UpdateRecord) + '\n')
        break
      case 'arm': {
        const ab = parseAutoboot(readFileSync(ports.autobootFile, 'utf8'))
        if (ab.trial !== step.target) writeAtomic(ports.autobootFile, formatAutoboot({ committed: ab.committed, trial: step.target }))
        writeAtomic(ports.recordFile, JSON.stringify({ ...record!, phase: 'trial', armedBootId: ports.bootId() } satisfies UpdateRecord) + '\n')
        break
      }
      case 'reboot-tryboot':
        await ports.rebootTryboot()
        return { steps, record }
      case 'health-check': {
        const h = await ports.healthCheck()
        if ('pending' in h) return { steps, record }
        health = h.ok ? 'ok' : 'failed'
        if (!h.ok) writeAtomic(ports.recordFile, JSON.stringify({ ...record!, reason: `health check failed in the trial boot: ${h.reason}` } satisfies UpdateRecord) + '\n')
        break
      }
      case 'commit':
        // The one write that switches the device to the new slot for good.
        writeAtomic(ports.autobootFile, formatAutoboot({ committed: step.target, trial: otherSlot(step.target) }))
        writeAtomic(ports.recordFile, JSON.stringify({ ...record!, phase: 'committed' } satisfies UpdateRecord) + '\n')
        break
      case 'reboot':
        await ports.reboot()
        return { steps, record }
      case 'mark-failed':
        writeAtomic(ports.recordFile, JSON.stringify({ ...record!, phase: 'failed', reason: step.reason } satisfies UpdateRecord) + '\n')
        break
    }
  }
  throw new Error('os update: no progress after 20 steps')
}

export function readRecord(file: string): UpdateRecord | undefined {
  let text: string
  try {
    text = readFileSync(file, 'utf8')
  } catch {
    return undefined
  }
  return JSON.parse(text) as UpdateRecord
}

/** The OS updater's files (autoboot.txt, the update record, requests and results): a power
 * cut leaves the old file or the new one. Here the directory sync must succeed, not just
 * be tried: a rename of autoboot.txt that is not durable could boot the wrong slot. */
export function writeAtomic(file: string, text: string, mode = 0o644): void {
  writeFileAtomic(file, text, { mode, requireDirSync: true })
}
