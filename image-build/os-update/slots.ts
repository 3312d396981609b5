// The OS backend of the OTA slot interface (ota/slots.ts SlotBackend, kind 'tryboot'),
// as the unprivileged agent sees it: the slots are the image's two boot+root partition
// pairs, and every change is asked of the root helper (helper.ts) through a request file
// in the agent's state dir. What the device is doing is read back from root's files:
// the update record and the helper's last result (/var/lib/cairn/os).
//
// Mapping onto the agent's slot model: `active` is the slot that booted, a trial is an
// armed update whose target booted, `bad` the version whose trial fell back. A reboot
// replaces the launcher's restart: arming ends with `reboot '0 tryboot'`.

import { closeSync, fsyncSync, mkdirSync, openSync, readFileSync, renameSync, writeSync } from 'node:fs'
import { join } from 'node:path'
import type { SlotBackend, SlotName, SlotsState, StageOptions } from '../../ota/slots.js'
import type { Slot } from './autoboot.js'
import { readRecord } from './execute.js'
import { REQUEST_FILE, type HelperResult, type Request } from './helper.js'

export interface TrybootSlotsOptions {
  /** the agent's request dir (<stateDir>/os-update), watched by cairn-os-update.path */
  readonly requestDir: string
  /** root's update record and the helper's result (/var/lib/cairn/os/…) */
  readonly recordFile: string
  readonly resultFile: string
  /** the slot whose root is running (root=LABEL=cairn-root<slot> in /proc/cmdline) */
  readonly booted: () => Slot
  /** waits between looks at the helper's result (injected: tests step it) */
  readonly sleep: (ms: number) => Promise<void>
  /** how long a slot write may take before stage() gives up (default 30 min) */
  readonly writeTimeoutMs?: number
}

const lower = (s: Slot): SlotName => (s === 'A' ? 'a' : 'b')

export class TrybootSlots implements SlotBackend {
  readonly kind = 'tryboot' as const
  constructor(private readonly o: TrybootSlotsOptions) {}

  current(): SlotsState {
    const r = readRecord(this.o.recordFile)
    const booted = this.o.booted()
    const onTrial = r?.phase === 'trial' && r.target === booted
    return {
      active: lower(booted),
      previous: r && r.phase !== 'writing' && r.phase !== 'written' ? lower(booted === 'A' ? 'B' : 'A') : null,
      trial: onTrial ? { slot: lower(booted), version: r.version, since: 0, attempts: 1, maxAttempts: 1, deadlineS: 900 } : null,
      bad: r?.phase === 'failed' ? [r.version] : [],
    }
  }

  /** Asks the helper to write the release image into the inactive pair and waits for it. */
  async stage(file: string, opts: StageOptions): Promise<SlotName> {
    const since = this.lastResultAt()
    this.request({ op: 'write', version: opts.version, image: file })
    const deadline = (this.o.writeTimeoutMs ?? 30 * 60_000) / 1000
    for (let waited = 0; waited <= deadline; waited++) {
      const res = this.result()
      if (res && res.at !== since && res.op === 'write' && res.version === opts.version) {
        if (!res.ok) throw new Error(`OS slot write failed: ${res.error}`)
        const r = readRecord(this.o.recordFile)
        if (r?.phase !== 'written' || r.version !== opts.version) throw new Error(`OS slot write: the record says ${r?.phase ?? 'nothing'}`)
        return lower(r.target)
      }
      await this.o.sleep(1000)
    }
    throw new Error(`the OS update helper did not answer within ${deadline} s (is cairn-os-update.path running?)`)
  }

  /** Arms the trial; the helper reboots into it (`reboot '0 tryboot'`). */
  activateForTrial(_slot: SlotName, version: string, _opts?: { maxAttempts: number; deadlineS: number; now: number }): void {
    this.request({ op: 'arm', version })
  }

  commit(version: string): void {
    this.request({ op: 'commit', version })
  }

  rollback(version: string, reason: string): void {
    this.request({ op: 'reject', version, reason: reason.slice(0, 300) })
  }

  /** A failed trial is recorded by the helper itself (the firmware fell back). */
  markBad(): void {}

  private request(r: Request): void {
    mkdirSync(this.o.requestDir, { recursive: true, mode: 0o700 })
    const file = join(this.o.requestDir, REQUEST_FILE)
    const tmp = `${file}.${process.pid}.tmp`
    const fd = openSync(tmp, 'w', 0o600)
    try {
      writeSync(fd, JSON.stringify(r) + '\n')
      fsyncSync(fd)
    } finally {
      closeSync(fd)
    }
    renameSync(tmp, file)
  }

  result(): HelperResult | undefined {
    try {
      return JSON.parse(readFileSync(this.o.resultFile, 'utf8')) as HelperResult
    } catch {
      return undefined
    }
  }

  private lastResultAt(): string | undefined {
    return this.result()?.at
  }
}

/** The booted slot from the kernel command line. */
export function bootedFromCmdline(cmdline: string): Slot {
  const m = /(?:^|\s)root=LABEL=cairn-root([AB])(?:\s|$)/.exec(cmdline)
  if (!m) throw new Error('not booted from a Cairn root slot (no root=LABEL=cairn-rootA|B on the kernel command line)')
  return m[1] as Slot
}
