// Agent-level A/B slots: two directories under <stateDir>/ota/slots/{a,b}, each a whole
// bundle tree (cairn.mjs, node_modules/better-sqlite3, VERSION), and slots.json, which
// says which one the launcher (ota/launcher.mjs) starts and whether it is on trial.
//
// slots.json is written atomically (temp file, fsync, rename, fsync of the directory)
// and validated on every read. A file that does not parse or validate falls back to
// slots.good.json, the last state written without a trial (a committed state), and
// failing that to "no slot" (the launcher then runs the bundle it was installed with).
// The launcher reads and writes the same file with its own copy of these rules (it
// may import nothing): test/ota/slots.test.ts holds the two to the same table.
//
// SlotBackend is the interface the updater drives; DirectorySlots is its backend for
// agent bundles. The OS-level backend (Raspberry Pi tryboot partitions, TrybootSlots)
// lives with the OS image (image-build/os-update/tryboot-slots.ts).

import { execFile } from 'node:child_process'
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync } from 'node:fs'
import { join } from 'node:path'
import { Type, type Static } from '@sinclair/typebox'
import { Value } from '@sinclair/typebox/value'
import { fsyncDirSync, writeFileAtomic } from '../protocol/durable-files.js'
import { readTar, TarError, writeEntries } from '../protocol/tar.js'

export type SlotName = 'a' | 'b'
export const SLOTS_FILE = 'slots.json'
export const GOOD_FILE = 'slots.good.json'
export const BUNDLE_FILE = 'cairn.mjs'
export const VERSION_FILE = 'VERSION'
/** The agent exits with this code to have the launcher read slots.json and start again
 * at once (a switch or a rollback); any other code ends the launcher too. */
export const EXIT_SWITCH = 75

const Slot = Type.Union([Type.Literal('a'), Type.Literal('b')])
const VersionText = Type.String({ minLength: 1, maxLength: 64, pattern: '^[0-9A-Za-z.+-]+$' })

const TrialSchema = Type.Object({
  slot: Slot,
  version: VersionText,
  /** When the switch was made, ms since the Unix epoch. */
  since: Type.Integer({ minimum: 0 }),
  /** Starts of the trial slot so far; the launcher counts each one before it starts it. */
  attempts: Type.Integer({ minimum: 0 }),
  maxAttempts: Type.Integer({ minimum: 1 }),
  /** The health check must pass within this many seconds of `since`. */
  deadlineS: Type.Integer({ minimum: 1 }),
})
export type Trial = Static<typeof TrialSchema>

const RollbackNoteSchema = Type.Object({
  version: VersionText,
  /** The slot the failed version ran from. */
  slot: Type.Optional(Slot),
  reason: Type.String({ maxLength: 200 }),
  at: Type.Integer({ minimum: 0 }),
})

const SlotsStateSchema = Type.Object({
  /** The slot the launcher starts; null: the bundle the launcher was installed beside. */
  active: Type.Union([Slot, Type.Null()]),
  /** What a rollback returns to (null: that installed bundle). */
  previous: Type.Union([Slot, Type.Null()]),
  /** Set from the switch until commit or rollback; its slot is always `active`. */
  trial: Type.Union([TrialSchema, Type.Null()]),
  /** Versions that failed on this device: never installed again. */
  bad: Type.Array(VersionText, { maxItems: 1000 }),
  /** The last rollback, so the version started after it can report why. */
  rollback: Type.Optional(RollbackNoteSchema),
})
export type SlotsState = Static<typeof SlotsStateSchema>

const EMPTY_SLOTS: SlotsState = Object.freeze({ active: null, previous: null, trial: null, bad: [] }) as SlotsState

/** Parses and validates slots.json text; null when it is not a valid state. */
export function parseSlots(text: string): SlotsState | null {
  let v: unknown
  try {
    v = JSON.parse(text)
  } catch {
    return null
  }
  if (!Value.Check(SlotsStateSchema, v)) return null
  if (v.trial && v.trial.slot !== v.active) return null
  return v
}

export type SlotsSource = 'slots' | 'good' | 'default'

/** Reads the state: slots.json, else the last good state, else no slot. */
export function readSlots(dir: string): { state: SlotsState; source: SlotsSource; damaged: boolean } {
  let damaged = false
  for (const [file, source] of [
    [SLOTS_FILE, 'slots'],
    [GOOD_FILE, 'good'],
  ] as const) {
    let text: string
    try {
      text = readFileSync(join(dir, file), 'utf8')
    } catch {
      continue
    }
    const state = parseSlots(text)
    if (state) return { state: source === 'good' ? { ...state, trial: null } : state, source, damaged }
    damaged = true
  }
  return { state: structuredClone(EMPTY_SLOTS), source: 'default', damaged }
}

/** Writes slots.json atomically and durably; a state without a trial is also the new
 * last good state. Unknown fields of `state` are kept (a newer agent may add some). */
export function writeSlots(dir: string, state: SlotsState): void {
  if (!Value.Check(SlotsStateSchema, state) || (state.trial && state.trial.slot !== state.active)) {
    throw new Error(`refusing to write an invalid slots state: ${JSON.stringify(state)}`)
  }
  mkdirSync(dir, { recursive: true, mode: 0o755 })
  const text = JSON.stringify(state, null, 2) + '\n'
  writeFileAtomic(join(dir, SLOTS_FILE), text)
  if (!state.trial) writeFileAtomic(join(dir, GOOD_FILE), text)
}

function otherSlot(s: SlotName): SlotName {
  return s === 'a' ? 'b' : 'a'
}

/** The state after a rollback of the trial (or of `version`): back to `previous`,
 * the version marked bad, the reason noted. Pure; the launcher has the same rule. */
export function rolledBack(state: SlotsState, version: string, reason: string, now: number): SlotsState {
  const onTrial = state.trial?.version === version
  return {
    ...state,
    active: onTrial ? state.previous : state.active,
    previous: onTrial ? null : state.previous,
    trial: onTrial ? null : state.trial,
    bad: state.bad.includes(version) ? state.bad : [...state.bad, version],
    rollback: { version, ...(onTrial && state.trial ? { slot: state.trial.slot } : {}), reason: reason.slice(0, 200), at: now },
  }
}

/** The state with `version` marked bad and nothing else changed (a release refused
 * before it ever ran). */
function markedBad(state: SlotsState, version: string): SlotsState {
  return state.bad.includes(version) ? state : { ...state, bad: [...state.bad, version] }
}

export interface StageOptions {
  /** The version the archive must hold (its VERSION file). */
  version: string
  /** The slot that is running now, which is never overwritten. */
  running: SlotName | null
  /** The release's TUF target name (the OS helper verifies the file against it). */
  targetPath?: string
}

/** What a backend reports: the slots state, and for backends that switch by rebooting
 * (tryboot), that a switch was made and the reboot into it is under way. */
export type BackendState = SlotsState & { readonly rebootPending?: string }

/** What the updater needs from a slot mechanism: agent directories here, OS partitions
 * (tryboot) on Cairn OS. Every method is idempotent, so a step interrupted by a crash
 * can simply be performed again. */
export interface SlotBackend {
  readonly kind: 'directory' | 'tryboot'
  current(): BackendState
  /** Unpacks a verified release into the inactive slot and checks it; returns the slot. */
  stage(file: string, opts: StageOptions): Promise<SlotName>
  /** Makes `slot` the one started next, on trial. A StageError says it never can be. */
  activateForTrial(slot: SlotName, version: string, opts: { maxAttempts: number; deadlineS: number; now: number }): void | Promise<void>
  /** Ends the trial of `version` in its favour; nothing if already committed. */
  commit(version: string): void | Promise<void>
  /** Ends the trial of `version` against it (or marks it bad after the fact). */
  rollback(version: string, reason: string, now: number): void | Promise<void>
  /** Never install `version` (it failed before it ever ran). */
  markBad(version: string): void
}

/** A staged tree that cannot be used: a permanent failure of this release. */
export class StageError extends Error {
  override readonly name = 'StageError'
}

export interface DirectorySlotsOptions {
  /** Node binary used to smoke-test a staged bundle (`cairn.mjs --version`). */
  nodePath?: string
  /** Largest unpacked size accepted (default 512 MiB). */
  maxBytes?: number
}

export class DirectorySlots implements SlotBackend {
  readonly kind = 'directory' as const
  constructor(
    readonly dir: string,
    private readonly opts: DirectorySlotsOptions = {},
  ) {}

  current(): SlotsState {
    return readSlots(this.dir).state
  }

  slotDir(slot: SlotName): string {
    return join(this.dir, 'slots', slot)
  }

  /** The VERSION of a slot's tree, if it holds one. */
  versionOf(slot: SlotName): string | undefined {
    try {
      return readFileSync(join(this.slotDir(slot), VERSION_FILE), 'utf8').trim()
    } catch {
      return undefined
    }
  }

  /** The slot a release goes into: never the running one, never the active one. */
  inactiveSlot(running: SlotName | null): SlotName {
    if (running) return otherSlot(running)
    const active = this.current().active
    return active ? otherSlot(active) : 'a'
  }

  async stage(file: string, o: StageOptions): Promise<SlotName> {
    const slot = this.inactiveSlot(o.running)
    let state = this.current()
    if (state.trial) throw new Error(`a trial of ${state.trial.version} is pending; cannot stage`)
    if (state.active === slot) throw new Error(`slot ${slot} is active; refusing to overwrite it`)
    if (state.previous === slot) {
      // About to overwrite the rollback target: say so first, so a crash mid-write
      // never leaves slots.json pointing at a half-written tree.
      state = { ...state, previous: null }
      writeSlots(this.dir, state)
    }
    let entries
    try {
      entries = readTar(readFileSync(file), this.opts.maxBytes !== undefined ? { maxBytes: this.opts.maxBytes } : {})
    } catch (err) {
      if (err instanceof TarError) throw new StageError(`release archive: ${err.message}`)
      throw err
    }
    const version = entries
      .find(e => e.path === VERSION_FILE)
      ?.data?.toString('utf8')
      .trim()
    if (!entries.some(e => e.path === BUNDLE_FILE && e.type === 'file')) throw new StageError(`release archive has no ${BUNDLE_FILE}`)
    if (version !== o.version) throw new StageError(`release archive says version ${JSON.stringify(version)}, the signed metadata ${o.version}`)
    const target = this.slotDir(slot)
    const tmp = `${target}.new`
    rmSync(tmp, { recursive: true, force: true })
    mkdirSync(tmp, { recursive: true, mode: 0o755 })
    writeEntries(entries, tmp)
    await this.smokeTest(tmp, o.version)
    rmSync(target, { recursive: true, force: true })
    renameSync(tmp, target)
    fsyncDirSync(join(this.dir, 'slots'))
    return slot
  }

  /** A bundle that cannot even print its version (wrong Node ABI, truncated file) is
   * refused before the switch rather than discovered by a crash loop after it. */
  private async smokeTest(dir: string, version: string): Promise<void> {
    const stdout = await this.run(dir, [join(dir, BUNDLE_FILE), '--version'], 'staged bundle does not start')
    if (stdout.trim() !== version) throw new StageError(`staged bundle reports version ${JSON.stringify(stdout.trim().slice(0, 64))}, expected ${version}`)
    // The native addon is loaded lazily by the agent: load it here, so a build for
    // another architecture or Node ABI fails now and not in a crash loop.
    if (existsSync(join(dir, 'node_modules', 'better-sqlite3'))) {
      await this.run(dir, ['-e', "const D = require('better-sqlite3'); new D(':memory:').prepare('select 1').get()"], 'staged native addon does not load')
    }
  }

  private run(cwd: string, args: string[], what: string): Promise<string> {
    return new Promise((resolve, reject) => {
      execFile(this.opts.nodePath ?? process.execPath, args, { timeout: 60_000, cwd, env: { PATH: process.env.PATH ?? '/usr/bin:/bin' } }, (err, stdout, stderr) => {
        if (err) reject(new StageError(`${what}: ${firstError(stderr || err.message)}`))
        else resolve(stdout)
      })
    })
  }

  activateForTrial(slot: SlotName, version: string, o: { maxAttempts: number; deadlineS: number; now: number }): void {
    const state = this.current()
    if (state.trial?.slot === slot && state.trial.version === version) return
    if (!existsSync(join(this.slotDir(slot), BUNDLE_FILE)) || this.versionOf(slot) !== version) throw new Error(`slot ${slot} does not hold ${version}`)
    writeSlots(this.dir, {
      ...state,
      previous: state.active === slot ? state.previous : state.active,
      active: slot,
      trial: { slot, version, since: o.now, attempts: 0, maxAttempts: o.maxAttempts, deadlineS: o.deadlineS },
    })
  }

  commit(version: string): void {
    const state = this.current()
    if (state.trial?.version !== version) return
    writeSlots(this.dir, { ...state, trial: null })
  }

  rollback(version: string, reason: string, now: number): void {
    const state = this.current()
    if (state.trial?.version !== version && state.bad.includes(version)) return
    writeSlots(this.dir, rolledBack(state, version, reason, now))
  }

  markBad(version: string): void {
    const state = this.current()
    if (!state.bad.includes(version)) writeSlots(this.dir, markedBad(state, version))
  }
}

/** The line of a Node error output that says what went wrong (not the stack). */
function firstError(text: string): string {
  const lines = text
    .split('\n')
    .map(l => l.trim())
    .filter(l => l !== '')
  return (lines.find(l => /^[A-Za-z]*Error\b|^Error \[/.test(l)) ?? lines[0] ?? 'failed').slice(0, 300)
}
