// The executor of the OTA state machine (ota/update-plan.ts): asks the planner for the next
// step, performs it, and records that it did (with the event that announces it, in
// one transaction). Waiting (poll period, backoff, the health-check window) is the
// planner's `wait` step; hints, commands and health changes wake it early.

import { mkdirSync, readdirSync, rmSync, statSync } from 'node:fs'
import { join } from 'node:path'
import type { Clock } from '../protocol/clock.js'
import { errorBody } from '../protocol/errors.js'
import { sha256File } from '../protocol/hash.js'
import type { Logger } from '../protocol/log.js'
import { plan, refusalOf, RESTING, type Facts, type OtaRecord, type SelfTestState, type Step } from './update-plan.js'
import type { OtaStore } from './ota-store.js'
import type { SelfTestResult } from '../agent/core/self-test.js'
import { isSemver } from '../protocol/semver.js'
import { StageError, type SlotBackend, type SlotName } from './slots.js'
import type { DeviceFacts, DownloadProgress, ReleaseCandidate, ReleaseChannel, ReleaseInfo } from './release-types.js'

interface UpdaterSettings {
  pollS: number
  healthDeadlineS: number
  maxAttempts: number
  /** Least time between two checks triggered by release hints. */
  hintMinS: number
}

export interface UpdaterOptions {
  /** What it installs (default 'agent'); 'os' drives the tryboot backend. */
  kind?: ReleaseInfo['kind']
  /** Why a switch must wait now, if it must (the other updater's switch or trial). */
  holdSwitch?: () => string | undefined
  store: OtaStore
  slots: SlotBackend
  channel: ReleaseChannel
  clock: Clock
  log: Logger
  running: { version: string; slot: SlotName | null }
  device: Omit<DeviceFacts, 'runningVersion' | 'badVersions' | 'pinnedVersion'>
  settings: UpdaterSettings
  /** Where downloads are kept (a partial file survives restarts and is resumed). */
  downloadDir: string
  health: { connected(): boolean; statusPublished(): boolean }
  selfTest(): Promise<SelfTestResult>
  /** Events not tied to a record change (download progress, check failures). */
  emit(kind: string, data: Record<string, unknown>): void
  /** Stops the agent and exits with EXIT_SWITCH, so the launcher starts what slots.json says. */
  restart(): void
  /** Called before a step and after it was performed but before it is recorded. */
  onStep?: (step: Step, when: 'before' | 'performed') => void
  random?: () => number
  /** First retry delay after a failed download (doubles per failure; default 15 s). */
  retryBaseMs?: number
}

export interface OtaStatus {
  phase: OtaRecord['phase']
  version?: string
  reason?: string
  paused: boolean
  pinned: string | null
  running: { version: string; slot: SlotName | null }
  /** The OS updater's state, on a device that updates its OS (OtaControl replies). */
  os?: OtaStatus
}

/** Failures of one step (download, verify, stage I/O) before the release is dropped. */
const MAX_FAILURES = 6
const backoffMs = (base: number, failures: number) => Math.min(3_600_000, base * 2 ** Math.max(0, failures - 1))

export class Updater {
  private rec: OtaRecord
  private stopped = false
  private running = false
  private checkRequested = false
  private nextCheckAt: number
  private lastHintCheck = 0
  private lastCheckError: string | undefined
  private selfTest: SelfTestState = 'not-run'
  private selfTestFailures: string[] = []
  private waker: (() => void) | undefined
  private timer: NodeJS.Timeout | undefined
  private loop: Promise<void> | undefined

  readonly kind: ReleaseInfo['kind']

  constructor(private readonly o: UpdaterOptions) {
    this.kind = o.kind ?? 'agent'
    this.rec = o.store.load()
    const rnd = o.random ?? Math.random
    // The first check comes soon after start, spread over up to 10 s across a fleet.
    this.nextCheckAt = o.clock.now() + Math.floor(rnd() * Math.min(10_000, o.settings.pollS * 1000))
  }

  start(): void {
    this.loop ??= this.run().catch(err => this.o.log.error({ err }, 'updater stopped on an unexpected error'))
  }

  /** Stops the loop; a step in flight finishes but is not recorded (it is redone). */
  async stop(): Promise<void> {
    this.stopped = true
    this.wake()
  }

  wake(): void {
    const w = this.waker
    this.waker = undefined
    if (this.timer) clearTimeout(this.timer)
    w?.()
  }

  /** An untrusted release hint: a check, at most one per hintMinS. */
  hint(): boolean {
    const now = this.o.clock.now()
    if (now - this.lastHintCheck < this.o.settings.hintMinS * 1000) return false
    this.lastHintCheck = now
    this.checkRequested = true
    this.wake()
    return true
  }

  checkNow(): OtaStatus {
    this.checkRequested = true
    this.wake()
    return this.status()
  }

  setPaused(paused: boolean): OtaStatus {
    if (this.rec.paused !== paused) this.store({ ...this.rec, paused }, { kind: 'ota.paused', data: { paused } })
    this.wake()
    return this.status()
  }

  pin(version: string | null): OtaStatus {
    if (version !== null && !isSemver(version)) throw new TypeError(`not a semantic version: ${JSON.stringify(version)}`)
    if (this.rec.pinned !== version) this.store({ ...this.rec, pinned: version }, { kind: 'ota.pinned', data: { version } })
    this.wake()
    return this.status()
  }

  status(): OtaStatus {
    const r = this.rec
    return {
      phase: r.phase,
      ...(r.candidate ? { version: r.candidate.version } : {}),
      ...(r.reason !== undefined ? { reason: r.reason } : {}),
      paused: r.paused,
      pinned: r.pinned,
      running: this.o.running,
    }
  }

  private facts(): Facts {
    const now = this.o.clock.now()
    return {
      kind: this.kind,
      hold: this.o.holdSwitch?.(),
      now,
      running: this.o.running,
      slots: this.o.slots.current(),
      checkDue: this.checkRequested || now >= this.nextCheckAt,
      nextCheckAt: this.nextCheckAt,
      health: { connected: this.o.health.connected(), statusPublished: this.o.health.statusPublished(), selfTest: this.selfTest },
    }
  }

  private async run(): Promise<void> {
    if (this.running) return
    this.running = true
    let errors = 0
    while (!this.stopped) {
      const step = plan(this.rec, this.facts())
      if (step.kind === 'wait') {
        await this.sleep(step.until)
        continue
      }
      if (step.kind === 'restart') {
        this.o.onStep?.(step, 'before')
        this.o.log.info({ why: step.why }, 'handing over to the launcher')
        this.stopped = true
        this.o.restart()
        return
      }
      this.o.log.debug({ step: step.kind, phase: this.rec.phase }, 'ota step')
      this.o.onStep?.(step, 'before')
      try {
        await this.execute(step)
        errors = 0
      } catch (err) {
        // Unexpected (slots.json not writable, disk full): keep the phase, try again later.
        errors++
        this.o.log.error({ err, step: step.kind }, 'ota step failed; will retry')
        await this.sleep(this.o.clock.now() + Math.min(300_000, 5000 * 2 ** Math.min(errors, 6)))
      }
    }
  }

  private sleep(until: number | undefined): Promise<void> {
    if (this.stopped) return Promise.resolve()
    const ms = until === undefined ? 60_000 : Math.max(0, Math.min(until - this.o.clock.now(), 60_000))
    return new Promise(resolve => {
      this.waker = resolve
      this.timer = setTimeout(() => {
        this.waker = undefined
        resolve()
      }, ms)
    })
  }

  /** Saves a step's record. The operator controls (paused, pinned) always come from the
   * current record, never from the copy a step took before awaiting: a signed pause or
   * pin that arrives while a release stages must not be undone when the step ends. */
  private save(rec: OtaRecord, event?: { kind: string; data: Record<string, unknown> }): void {
    this.store({ ...rec, paused: this.rec.paused, pinned: this.rec.pinned }, event)
  }

  private store(rec: OtaRecord, event?: { kind: string; data: Record<string, unknown> }): void {
    this.o.store.save(rec, event)
    this.rec = rec
  }

  /** Records the result of a performed step, unless the updater was stopped meanwhile
   * (the agent is shutting down: the step will be planned and performed again). */
  private record(step: Step, rec: OtaRecord, event?: { kind: string; data: Record<string, unknown> }): void {
    if (this.stopped) return
    this.o.onStep?.(step, 'performed')
    this.save(rec, event)
  }

  private downloadFile(c: ReleaseCandidate): string {
    return join(this.o.downloadDir, `${c.sha256}.part`)
  }

  private cleanDownloads(keep?: string): void {
    try {
      for (const f of readdirSync(this.o.downloadDir)) if (join(this.o.downloadDir, f) !== keep) rmSync(join(this.o.downloadDir, f), { force: true })
    } catch {
      // no download dir yet
    }
  }

  private base(c: ReleaseCandidate): Record<string, unknown> {
    return { version: c.version, from: this.rec.from?.version ?? this.o.running.version }
  }

  private async execute(step: Exclude<Step, { kind: 'wait' } | { kind: 'restart' }>): Promise<void> {
    const r = this.rec
    const now = () => this.o.clock.now()
    switch (step.kind) {
      case 'check':
        return this.check(step)
      case 'download':
        return this.download(step, r.candidate!)
      case 'verify':
        return this.verify(step, r.candidate!)
      case 'stage': {
        const c = r.candidate!
        let slot: SlotName
        try {
          slot = await this.o.slots.stage(this.downloadFile(c), { version: c.version, running: this.o.running.slot, targetPath: c.targetPath })
        } catch (err) {
          if (!(err instanceof StageError)) return this.transientFailure(step, err)
          // The release itself is unusable here: never try it again.
          this.o.slots.markBad(c.version)
          this.cleanDownloads()
          return this.record(
            step,
            { ...r, phase: 'failed', reason: 'stage-failed', detail: err.message, times: { ...r.times, done: now() } },
            { kind: 'ota.failed', data: { ...this.base(c), step: 'staging', reason: 'stage-failed', detail: err.message } },
          )
        }
        return this.record(step, { ...r, phase: 'switching', slot, failures: 0, times: { ...r.times, staged: now() } }, { kind: 'ota.staged', data: { ...this.base(c), slot } })
      }
      case 'switch': {
        const c = r.candidate!
        const slot = r.slot
        if (!slot) return this.save({ ...r, phase: 'staging' })
        const { healthDeadlineS, maxAttempts } = this.o.settings
        try {
          await this.o.slots.activateForTrial(slot, c.version, { maxAttempts, deadlineS: healthDeadlineS, now: now() })
        } catch (err) {
          // counted and given up after MAX_FAILURES like any other step, never retried for ever
          if (!(err instanceof StageError)) return this.transientFailure(step, err)
          // The slot mechanism says this can never switch (the OS helper refused the trial).
          this.o.slots.markBad(c.version)
          this.cleanDownloads()
          return this.record(
            step,
            { ...r, phase: 'failed', reason: 'switch-failed', detail: err.message, times: { ...r.times, done: now() } },
            { kind: 'ota.failed', data: { ...this.base(c), step: 'switching', reason: 'switch-failed', detail: err.message } },
          )
        }
        return this.record(step, { ...r, times: { ...r.times, switched: now() } }, { kind: 'ota.switching', data: { ...this.base(c), slot, healthDeadlineS, maxAttempts } })
      }
      case 'begin-trial': {
        const c = r.candidate!
        const late = r.times.switched === undefined
        const trial = this.o.slots.current().trial
        return this.record(
          step,
          { ...r, phase: 'trial', times: { ...r.times, ...(late ? { switched: trial?.since ?? now() } : {}), trial: now() } },
          late ? { kind: 'ota.switching', data: { ...this.base(c), slot: trial?.slot, late: true } } : undefined,
        )
      }
      case 'self-test': {
        const res = await this.o.selfTest()
        this.selfTest = res.ok ? 'ok' : 'failed'
        this.selfTestFailures = res.failures
        if (res.ok) this.o.log.info('ota self-test passed')
        else this.o.log.error({ failures: res.failures }, 'ota self-test failed')
        return
      }
      case 'commit': {
        const c = r.candidate!
        await this.o.slots.commit(c.version)
        const t = { ...r.times, done: now() }
        const secs = (a?: number, b?: number) => (a !== undefined && b !== undefined ? Math.round((b - a) / 100) / 10 : undefined)
        const timings = {
          downloadS: secs(r.times.available, t.downloaded),
          stageS: secs(t.downloaded, t.staged),
          switchS: secs(t.switched, t.trial),
          healthS: secs(t.trial, t.done),
          totalS: secs(t.available, t.done),
        }
        this.o.log.info({ version: c.version, from: this.base(c).from, ...timings }, 'update committed')
        this.record(
          step,
          { ...r, phase: 'committed', failures: 0, times: t },
          { kind: 'ota.committed', data: { ...this.base(c), slot: this.o.running.slot, ...Object.fromEntries(Object.entries(timings).filter(([, v]) => v !== undefined)) } },
        )
        this.cleanDownloads()
        return
      }
      case 'decide-rollback': {
        const detail = step.reason === 'self-test-failed' ? this.selfTestFailures.join('; ') : undefined
        return this.record(step, { ...r, phase: 'rolling-back', reason: step.reason, ...(detail ? { detail } : {}) })
      }
      case 'rollback': {
        const c = r.candidate!
        await this.o.slots.rollback(c.version, step.reason, now())
        this.o.log.warn({ version: c.version, reason: step.reason }, 'update rolled back')
        const detail = r.phase === 'rolling-back' ? r.detail : undefined
        this.record(
          step,
          { ...r, phase: 'rolled-back', reason: step.reason, ...(detail ? { detail } : {}), times: { ...r.times, done: now() } },
          { kind: 'ota.rolled-back', data: { ...this.base(c), reason: step.reason, ...(detail ? { detail } : {}), slot: r.slot } },
        )
        this.cleanDownloads()
        return
      }
      case 'abandon': {
        const c = r.candidate
        this.cleanDownloads()
        return this.record(
          step,
          { ...r, phase: 'failed', reason: 'abandoned', detail: step.reason, times: { ...r.times, done: now() } },
          { kind: 'ota.failed', data: { ...(c ? this.base(c) : {}), step: r.phase, reason: 'abandoned', detail: step.reason } },
        )
      }
    }
  }

  private async check(step: Step): Promise<void> {
    const now = this.o.clock.now()
    this.checkRequested = false
    const jitter = 0.9 + 0.2 * (this.o.random ?? Math.random)()
    this.nextCheckAt = now + Math.round(this.o.settings.pollS * 1000 * jitter)
    const slots = this.o.slots.current()
    let c: ReleaseCandidate | null
    try {
      c = await this.o.channel.check({
        ...this.o.device,
        runningVersion: this.o.running.version,
        badVersions: new Set(slots.bad),
        ...(this.rec.pinned !== null ? { pinnedVersion: this.rec.pinned } : {}),
      })
    } catch (err) {
      const e = errorBody(err)
      const key = `${e.code}: ${e.message}`
      this.o.log.warn({ code: e.code, msg: e.message }, 'release check failed')
      // Reported once per distinct failure, not every poll.
      if (key !== this.lastCheckError) this.o.emit('ota.failed', { step: 'checking', reason: 'check-failed', code: e.code, detail: e.message.slice(0, 500) })
      this.lastCheckError = key
      return
    }
    this.lastCheckError = undefined
    if (this.stopped || !c) return
    const refusal = refusalOf(c, this.o.running.version, slots.bad, this.rec.pinned, this.kind)
    if (refusal) {
      this.o.log.info({ version: c.version, refusal }, 'release not taken')
      return
    }
    this.o.log.info({ version: c.version, from: this.o.running.version }, 'release available')
    this.cleanDownloads(this.downloadFile(c))
    this.record(
      step,
      {
        ...omit(this.rec, 'slot', 'reason', 'detail', 'retryAt'),
        phase: 'downloading',
        candidate: c,
        from: { ...this.o.running },
        failures: 0,
        times: { available: now },
      },
      { kind: 'ota.available', data: { version: c.version, from: this.o.running.version, channel: c.channel, targetPath: c.targetPath, length: c.length } },
    )
  }

  private async download(step: Step, c: ReleaseCandidate): Promise<void> {
    mkdirSync(this.o.downloadDir, { recursive: true, mode: 0o700 })
    const file = this.downloadFile(c)
    const had = fileSize(file)
    const started = this.o.clock.now()
    const pct = (b: number) => (c.length > 0 ? Math.min(100, Math.floor((b / c.length) * 100)) : 100)
    this.o.emit('ota.download', { version: c.version, state: had > 0 ? 'resumed' : 'started', bytes: had, total: c.length, percent: pct(had) })
    let lastAt = started
    let lastPct = pct(had)
    let last: DownloadProgress = { bytes: had, total: c.length, refetched: 0 }
    const onProgress = (p: DownloadProgress) => {
      last = p
      const t = this.o.clock.now()
      const q = pct(p.bytes)
      // Throttled: a step of 10 % at most every 2 s, or any progress every 10 s.
      if (q < 100 && t - lastAt >= 2000 && (q - lastPct >= 10 || t - lastAt >= 10_000)) {
        lastAt = t
        lastPct = q
        this.o.emit('ota.download', { version: c.version, state: 'downloading', bytes: p.bytes, total: p.total, percent: q })
      }
    }
    try {
      await this.o.channel.download(c, file, onProgress)
    } catch (err) {
      if (errorBody(err).code === 'TARGET_MISMATCH') rmSync(file, { force: true })
      return this.transientFailure(step, err, { bytes: fileSize(file) })
    }
    const now = this.o.clock.now()
    this.record(
      step,
      { ...omit(this.rec, 'retryAt'), phase: 'verifying', failures: 0, times: { ...this.rec.times, downloaded: now } },
      {
        kind: 'ota.download',
        data: { version: c.version, state: 'done', bytes: c.length, total: c.length, percent: 100, resumedFrom: had, refetched: last.refetched, seconds: Math.round((now - started) / 100) / 10 },
      },
    )
  }

  private async verify(step: Step, c: ReleaseCandidate): Promise<void> {
    const file = this.downloadFile(c)
    const size = fileSize(file)
    const sha = size === c.length ? await sha256File(file) : ''
    if (size === c.length && sha === c.sha256) return this.record(step, { ...this.rec, phase: 'staging' })
    rmSync(file, { force: true })
    return this.transientFailure(step, new Error(`downloaded file does not match the signed length and SHA-256 (${size} bytes)`), {}, 'downloading')
  }

  /** A failure that may pass: back off and retry, up to MAX_FAILURES, then give up on
   * this release (a later check may offer it again). */
  private transientFailure(step: Step, err: unknown, extra: Record<string, unknown> = {}, phase?: OtaRecord['phase']): void {
    const r = this.rec
    const c = r.candidate!
    const e = errorBody(err)
    const failures = r.failures + 1
    this.o.log.warn({ step: step.kind, failures, code: e.code, msg: e.message }, 'ota step failed')
    if (failures >= MAX_FAILURES) {
      this.cleanDownloads()
      return this.record(
        step,
        { ...omit(r, 'retryAt'), phase: 'failed', reason: `${r.phase}-failed`, detail: e.message.slice(0, 500), failures, times: { ...r.times, done: this.o.clock.now() } },
        {
          kind: 'ota.failed',
          data: { ...this.base(c), step: r.phase, reason: `${r.phase}-failed`, code: e.code, detail: e.message.slice(0, 500), failures },
        },
      )
    }
    const retryAt = this.o.clock.now() + backoffMs(this.o.retryBaseMs ?? 15_000, failures)
    this.record(
      step,
      { ...r, ...(phase ? { phase } : {}), failures, retryAt },
      r.phase === 'downloading' || phase === 'downloading'
        ? {
            kind: 'ota.download',
            data: { version: c.version, state: 'interrupted', code: e.code, detail: e.message.slice(0, 300), failures, retryInS: Math.round((retryAt - this.o.clock.now()) / 1000), ...extra },
          }
        : undefined,
    )
  }

  /** For tests and status: is a check or step in progress or pending? */
  get phase(): OtaRecord['phase'] {
    return this.rec.phase
  }

  get resting(): boolean {
    return RESTING.has(this.rec.phase)
  }

  /** A switch was made and its trial (or rollback) is not over. */
  get switchInFlight(): boolean {
    const r = this.rec
    return r.phase === 'trial' || r.phase === 'rolling-back' || (r.phase === 'switching' && r.times.switched !== undefined)
  }

  /** Staged and about to switch, or switched and not over. */
  get switchPending(): boolean {
    return this.switchInFlight || this.rec.phase === 'switching'
  }
}

function omit<T extends object, K extends keyof T>(o: T, ...keys: K[]): Omit<T, K> {
  const out = { ...o }
  for (const k of keys) delete out[k]
  return out
}

function fileSize(file: string): number {
  try {
    return statSync(file).size
  } catch {
    return 0
  }
}
