// The OS backend of the OTA slot interface (ota/slots.ts SlotBackend, kind 'tryboot'),
// as the unprivileged agent sees it: the slots are the image's two boot+root partition
// pairs, and every change is asked of the root helper (helper.ts) through a request file
// in the agent's state dir. What the device is doing is read back from root's files:
// the update record, the helper's last result and what it can do (/var/lib/cairn/os).
//
// Mapping onto the agent's slot model: `active` is the slot that booted, a trial is an
// armed update whose target booted, `bad` the versions whose trial fell back or that the
// helper refused. A reboot replaces the launcher's restart: arming ends with the helper
// rebooting into the trial, and until it does the state says `rebootPending`.

import { existsSync, mkdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { StageError, type BackendState, type SlotBackend, type SlotName, type StageOptions } from '../../ota/slots.js'
import type { Slot } from './autoboot.js'
import { readRecord, writeAtomic } from './execute.js'
import { REQUEST_FILE, type Capability, type HelperResult, type Request } from './helper.js'

export interface TrybootSlotsOptions {
  /** the agent's request dir (<stateDir>/os-update), watched by cairn-os-update.path */
  readonly requestDir: string
  /** root's update record, the helper's result and capability (/var/lib/cairn/os/…) */
  readonly recordFile: string
  readonly resultFile: string
  readonly capabilityFile: string
  /** the slot whose root is running (root=LABEL=cairn-root<slot> in /proc/cmdline) */
  readonly booted: () => Slot
  /** the kernel's boot id (a reboot changes it) */
  readonly bootId: () => string
  /** seconds since this boot (/proc/uptime): a trial's window starts at its boot */
  readonly uptimeS: () => number
  readonly now: () => number
  /** how long after its boot a trial must commit (default 600 s; the helper's timer
   * ends it at 15 min whatever happens to the agent) */
  readonly trialDeadlineS?: number
  /** waits between looks at the helper's result (injected: tests step it) */
  readonly sleep: (ms: number) => Promise<void>
  /** how long a slot write may take before stage() gives up (default 30 min) */
  readonly writeTimeoutMs?: number
  /** how long other requests may take (default 2 min) */
  readonly requestTimeoutMs?: number
}

/** The agent's own list of OS versions never to try again (the helper's record keeps
 * only the latest update). */
const BAD_FILE = 'bad.json'
const lower = (s: Slot): SlotName => (s === 'A' ? 'a' : 'b')

export class TrybootSlots implements SlotBackend {
  readonly kind = 'tryboot' as const
  constructor(private readonly o: TrybootSlotsOptions) {}

  /** Whether OS updates can work on this device, as the helper found at its last start. */
  capability(): Capability | undefined {
    try {
      return JSON.parse(readFileSync(this.o.capabilityFile, 'utf8')) as Capability
    } catch {
      return undefined
    }
  }

  current(): BackendState {
    const r = readRecord(this.o.recordFile)
    const booted = this.o.booted()
    const onTrial = r?.phase === 'trial' && r.target === booted
    // the helper's record keeps only the latest update: a failed one joins the agent's own
    // list for good, or two broken releases would take turns for ever
    if (r?.phase === 'failed') this.markBad(r.version)
    const bad = new Set(this.ownBad())
    return {
      active: lower(booted),
      previous: r && r.phase !== 'writing' && r.phase !== 'written' ? lower(booted === 'A' ? 'B' : 'A') : null,
      // measured from this boot, so a clock that NTP sets late cannot shorten it
      trial: onTrial
        ? { slot: lower(booted), version: r.version, since: Math.max(0, Math.round(this.o.now() - this.o.uptimeS() * 1000)), attempts: 1, maxAttempts: 1, deadlineS: this.o.trialDeadlineS ?? 600 }
        : null,
      bad: [...bad],
      ...(r?.phase === 'failed' ? { rollback: { version: r.version, slot: lower(r.target), reason: (r.reason ?? 'the trial boot did not commit').slice(0, 200), at: 0 } } : {}),
      // armed in this boot: the helper is rebooting into the trial
      ...(r?.phase === 'trial' && r.target !== booted && r.armedBootId === this.o.bootId() ? { rebootPending: `slot ${lower(r.target)} with ${r.version}` } : {}),
    }
  }

  /** Asks the helper to check the release and write it into the inactive pair; waits. */
  async stage(file: string, opts: StageOptions): Promise<SlotName> {
    if (!opts.targetPath) throw new StageError('an OS release is written by its TUF target name, and none was given')
    const res = await this.ask({ op: 'write', version: opts.version, image: file, target: opts.targetPath }, this.o.writeTimeoutMs ?? 30 * 60_000)
    if (!res.ok) throw res.permanent ? new StageError(`OS slot write refused: ${res.error}`) : new Error(`OS slot write failed: ${res.error}`)
    const r = readRecord(this.o.recordFile)
    if (r?.phase !== 'written' || r.version !== opts.version) throw new Error(`OS slot write: the record says ${r?.phase ?? 'nothing'}`)
    return lower(r.target)
  }

  /** Arms the trial; the helper then reboots into it (its answer comes first). */
  async activateForTrial(_slot: SlotName, version: string): Promise<void> {
    const res = await this.ask({ op: 'arm', version })
    if (!res.ok) throw res.permanent ? new StageError(`OS trial refused: ${res.error}`) : new Error(`arming the OS trial failed: ${res.error}`)
  }

  async commit(version: string): Promise<void> {
    const r = readRecord(this.o.recordFile)
    if (r?.phase === 'committed' && r.version === version) return
    const res = await this.ask({ op: 'commit', version })
    if (!res.ok) throw new Error(`committing OS ${version} failed: ${res.error}`)
  }

  /** Rejects the trial (the helper reboots, the firmware starts the committed slot); a
   * trial that already fell back needs nothing more. */
  async rollback(version: string, reason: string): Promise<void> {
    // bad first: the reject below reboots the device
    this.markBad(version)
    const r = readRecord(this.o.recordFile)
    if (r?.version === version && r.phase === 'trial') await this.ask({ op: 'reject', version, reason: reason.slice(0, 300) })
  }

  /** A version refused before it ever booted (it would fail the same way again). */
  markBad(version: string): void {
    const bad = this.ownBad()
    if (bad.includes(version)) return
    this.writeOwn(BAD_FILE, JSON.stringify([...bad, version].slice(-100)) + '\n')
  }

  result(): HelperResult | undefined {
    try {
      return JSON.parse(readFileSync(this.o.resultFile, 'utf8')) as HelperResult
    } catch {
      return undefined
    }
  }

  /** Leaves a request and waits for the helper's answer to it. */
  private async ask(r: Request, timeoutMs = this.o.requestTimeoutMs ?? 120_000): Promise<HelperResult> {
    const since = this.result()?.at
    this.writeOwn(REQUEST_FILE, JSON.stringify(r) + '\n')
    for (let waited = 0; waited <= timeoutMs; waited += 1000) {
      const res = this.result()
      if (res && res.at !== since && res.op === r.op && res.version === r.version) return res
      await this.o.sleep(1000)
    }
    throw new Error(`the OS update helper did not answer ${r.op} within ${Math.round(timeoutMs / 1000)} s (is cairn-os-update.path running?)`)
  }

  private ownBad(): string[] {
    const f = join(this.o.requestDir, BAD_FILE)
    if (!existsSync(f)) return []
    try {
      const v = JSON.parse(readFileSync(f, 'utf8')) as unknown
      return Array.isArray(v) ? v.filter((x): x is string => typeof x === 'string') : []
    } catch {
      return []
    }
  }

  private writeOwn(name: string, text: string): void {
    mkdirSync(this.o.requestDir, { recursive: true, mode: 0o700 })
    writeAtomic(join(this.o.requestDir, name), text, 0o600)
  }
}

/** The booted slot from the kernel command line. */
export function bootedFromCmdline(cmdline: string): Slot {
  const m = /(?:^|\s)root=LABEL=cairn-root([AB])(?:\s|$)/.exec(cmdline)
  if (!m) throw new Error('not booted from a Cairn root slot (no root=LABEL=cairn-rootA|B on the kernel command line)')
  return m[1] as Slot
}
