// The device-side update as an explicit state machine. `plan` is pure: from the
// persisted record (state.db, table ota_state) and what the device observes now
// (slots.json, the running version and slot, the health check) it returns the ONE next
// step. The executor (ota/updater.ts) performs it and records that it did. Because
// every decision is re-derived from durable facts, a kill -9 anywhere resumes or rolls
// back, and the device always ends on the old or the new version.
//
//   idle ─check→ (checking) ─candidate→ downloading ─→ verifying ─→ staging ─→ switching
//     ─switch: slots.json trial set, exit 75→ [launcher starts the new slot]
//     ─→ trial ─health ok→ committed
//              └self-test failed / deadline passed→ rolling-back ─→ rolled-back
//   [launcher: too many starts (crash-loop) or no commit by deadline + grace
//    (health-timeout)] ─→ the old version records rolled-back with that reason.
//   downloading/verifying/staging can end in failed (not retried while it would fail
//   the same way: a release that does not unpack or start is marked bad).

import { Type, type Static } from '@sinclair/typebox'
import { compareSemver, isSemver } from '../protocol/semver.js'
import type { BackendState, SlotName } from './slots.js'
import type { ReleaseCandidate, ReleaseInfo } from './release-types.js'

const PHASES = ['idle', 'downloading', 'verifying', 'staging', 'switching', 'trial', 'committed', 'rolling-back', 'rolled-back', 'failed'] as const
export type Phase = (typeof PHASES)[number]
/** Phases in which nothing is in progress: a new check may start. */
export const RESTING: ReadonlySet<Phase> = new Set(['idle', 'committed', 'rolled-back', 'failed'])

const Slot = Type.Union([Type.Literal('a'), Type.Literal('b')])
const Ms = Type.Integer({ minimum: 0 })

const CandidateSchema = Type.Object({
  version: Type.String(),
  channel: Type.String(),
  minVersion: Type.Optional(Type.String()),
  arch: Type.Optional(Type.Array(Type.String())),
  boards: Type.Optional(Type.Array(Type.String())),
  rollout: Type.Number(),
  kind: Type.Union([Type.Literal('agent'), Type.Literal('os')]),
  targetPath: Type.String(),
  length: Type.Integer({ minimum: 0 }),
  sha256: Type.String({ pattern: '^[0-9a-f]{64}$' }),
})

export const OtaRecordSchema = Type.Object({
  phase: Type.Union(PHASES.map(p => Type.Literal(p))),
  candidate: Type.Optional(CandidateSchema),
  /** What ran when the update started. */
  from: Type.Optional(Type.Object({ version: Type.String(), slot: Type.Union([Slot, Type.Null()]) })),
  /** The slot the release was staged into. */
  slot: Type.Optional(Slot),
  /** Why it failed or rolled back: a short stable code (health-timeout, crash-loop, …). */
  reason: Type.Optional(Type.String()),
  /** Human detail for the reason (which self-test part failed, the error message). */
  detail: Type.Optional(Type.String()),
  /** Consecutive failures of the current step; backoff until retryAt. */
  failures: Type.Integer({ minimum: 0 }),
  retryAt: Type.Optional(Ms),
  /** When each step completed, for the timings reported with ota.committed. */
  times: Type.Object({
    available: Type.Optional(Ms),
    downloaded: Type.Optional(Ms),
    staged: Type.Optional(Ms),
    switched: Type.Optional(Ms),
    trial: Type.Optional(Ms),
    done: Type.Optional(Ms),
  }),
  /** Fleet controls (signed commands), kept across restarts. */
  paused: Type.Boolean(),
  pinned: Type.Union([Type.String(), Type.Null()]),
})
export type OtaRecord = Static<typeof OtaRecordSchema>

export const INITIAL_RECORD: OtaRecord = { phase: 'idle', failures: 0, times: {}, paused: false, pinned: null }

export type SelfTestState = 'not-run' | 'ok' | 'failed'

/** How long a switch that arms a reboot (tryboot) waits for that reboot before asking again. */
const REBOOT_WAIT_MS = 10 * 60_000

export interface Facts {
  /** What this updater installs: agent bundles (directory slots) or the OS (tryboot). */
  kind?: ReleaseInfo['kind']
  now: number
  running: { version: string; slot: SlotName | null }
  slots: BackendState
  /** Why a switch must wait now (the other updater has one in progress), if it must. */
  hold?: string | undefined
  /** A poll, a hint or the update command asks for a check. */
  checkDue: boolean
  /** When the next poll is due (for the idle wait). */
  nextCheckAt: number
  health: { connected: boolean; statusPublished: boolean; selfTest: SelfTestState }
}

export type Step =
  | { kind: 'wait'; why: string; until?: number }
  | { kind: 'check' }
  | { kind: 'download' }
  | { kind: 'verify' }
  | { kind: 'stage' }
  | { kind: 'switch' }
  | { kind: 'restart'; why: string }
  | { kind: 'begin-trial' }
  | { kind: 'self-test' }
  | { kind: 'commit' }
  | { kind: 'decide-rollback'; reason: string }
  | { kind: 'rollback'; reason: string }
  | { kind: 'abandon'; reason: string }

/** Why this device must not install `c` now, or null when it may. Anti-rollback:
 * never a version at or below the running one, whatever the metadata says. */
export function refusalOf(c: ReleaseCandidate, running: string, bad: readonly string[], pinned: string | null, kind: ReleaseInfo['kind'] = 'agent'): string | null {
  if (c.kind !== kind) return `not an ${kind === 'os' ? 'OS' : 'agent'} release (${c.kind})`
  if (!isSemver(c.version)) return `not a semantic version: ${JSON.stringify(c.version)}`
  if (!isSemver(running)) return `the running version ${JSON.stringify(running)} is not a semantic version (a development build)`
  if (compareSemver(c.version, running) <= 0) return `not newer than the running ${running}`
  if (c.minVersion !== undefined && isSemver(c.minVersion) && compareSemver(running, c.minVersion) < 0) return `needs ${c.minVersion} or later to update from`
  if (bad.includes(c.version)) return 'marked bad on this device'
  if (pinned !== null && isSemver(pinned) && compareSemver(c.version, pinned) > 0) return `pinned at ${pinned}`
  return null
}

export function plan(r: OtaRecord, f: Facts): Step {
  // A process that is not what the launcher would start now hands over to it: after a
  // switch, after a rollback, whatever interrupted the record of it.
  if (f.slots.active !== f.running.slot) return { kind: 'restart', why: `the launcher now starts ${f.slots.active ?? 'the installed bundle'}` }
  const c = r.candidate
  const wait = (why: string, until?: number): Step => (until === undefined ? { kind: 'wait', why } : { kind: 'wait', why, until })

  if (RESTING.has(r.phase)) {
    if (r.paused) return wait('paused')
    return f.checkDue ? { kind: 'check' } : wait('idle', f.nextCheckAt)
  }
  if (!c) return { kind: 'abandon', reason: `no release recorded in phase ${r.phase}` }

  if (r.phase === 'rolling-back') return { kind: 'rollback', reason: r.reason ?? 'unknown' }

  const trial = f.slots.trial
  if (r.phase === 'trial' || (r.phase === 'switching' && trial?.version === c.version)) {
    if (trial && trial.version === c.version) {
      // The consistency rule above makes the trial slot the running one.
      if (f.running.version !== c.version) return { kind: 'decide-rollback', reason: `slot ${trial.slot} runs ${f.running.version}, not ${c.version}` }
      if (r.phase === 'switching') return { kind: 'begin-trial' }
      if (f.health.selfTest === 'failed') return { kind: 'decide-rollback', reason: 'self-test-failed' }
      const deadline = trial.since + trial.deadlineS * 1000
      if (f.now >= deadline) return { kind: 'decide-rollback', reason: 'health-timeout' }
      if (f.health.selfTest === 'not-run') return { kind: 'self-test' }
      if (f.health.connected && f.health.statusPublished) return { kind: 'commit' }
      // Health is re-read every second (and on every connection event) until the deadline.
      return wait(!f.health.connected ? 'health: waiting for the broker' : 'health: waiting for the status to be acknowledged', Math.min(deadline, f.now + 1000))
    }
    // The trial is over, but this record never heard how: the facts tell.
    if (r.phase === 'trial' && f.running.version === c.version && !f.slots.bad.includes(c.version)) return { kind: 'commit' }
    return { kind: 'rollback', reason: f.slots.rollback?.version === c.version ? f.slots.rollback.reason : 'interrupted' }
  }

  // downloading, verifying, staging, switching (not yet switched)
  if (r.phase === 'switching' && f.slots.bad.includes(c.version) && f.slots.rollback?.version === c.version) {
    // The launcher (or the firmware, for the OS) rolled it back before the new version
    // could record its trial.
    return { kind: 'rollback', reason: f.slots.rollback.reason }
  }
  // Switched by arming a reboot (tryboot): nothing to do until the device restarts, but
  // a reboot that never came (10 min) is asked for again.
  if (r.phase === 'switching' && f.slots.rebootPending) {
    const since = r.times.switched ?? f.now
    if (f.now - since < REBOOT_WAIT_MS) return wait(`rebooting into ${f.slots.rebootPending}`, Math.min(since + REBOOT_WAIT_MS, f.now + 60_000))
    return { kind: 'switch' }
  }
  const refusal = refusalOf(c, f.running.version, f.slots.bad, r.pinned, f.kind)
  if (refusal) return { kind: 'abandon', reason: refusal }
  if (r.paused) return wait('paused')
  if (r.retryAt !== undefined && r.retryAt > f.now) return wait(`retrying after ${r.failures} failure(s)`, r.retryAt)
  switch (r.phase) {
    case 'downloading':
      return { kind: 'download' }
    case 'verifying':
      return { kind: 'verify' }
    case 'staging':
      return { kind: 'stage' }
    case 'switching':
      // Agent and OS updates never overlap: one switches only while the other has no
      // switch or trial in progress.
      return f.hold ? wait(f.hold, f.now + 10_000) : { kind: 'switch' }
  }
  return { kind: 'abandon', reason: `unexpected phase ${r.phase}` }
}
