// The OTA state machine: the pure planner against a table of situations, then the
// executor in process (stub slot trees, a file-backed release channel, the real
// directory slots): v1 → v2 across a "restart", health-check failure and deadline,
// downgrade refused, bad versions never retried, interrupted and corrupt downloads,
// unusable releases, pause and pin, and the record in state.db going with its event.

import t from 'tap'
import { existsSync, mkdirSync, readdirSync } from 'node:fs'
import { join } from 'node:path'
import { systemClock } from '../../protocol/clock.js'
import { createLogger } from '../../protocol/log.js'
import { loadOrCreateIdentity } from '../../protocol/identity.js'
import { MsgClass, Outbox } from '../../agent/core/outbox.js'
import { openStateDb } from '../../agent/core/state-db.js'
import { MemoryOtaStore, SqlOtaStore, type OtaEvent } from '../../ota/ota-store.js'
import { INITIAL_RECORD, plan, type Facts, type OtaRecord } from '../../ota/update-plan.js'
import { DirectorySlots, readSlots, writeSlots, type SlotName, type SlotsState } from '../../ota/slots.js'
import type { ReleaseCandidate } from '../../ota/release-types.js'
import { Updater, type UpdaterOptions } from '../../ota/updater.js'
import { agentHold, osHold } from '../../ota/ota-service.js'
import { tmp, until } from '../helpers/agent.js'
import { DirReleaseChannel, stubTar } from '../helpers/ota.js'

// ---------------------------------------------------------------- planner table

const cand = (version: string): ReleaseCandidate => ({ version, channel: 'stable', rollout: 100, kind: 'agent', targetPath: `cairn/${version}/a.tar`, length: 10, sha256: 'a'.repeat(64) })
const NOW = 1_000_000
const committedA: SlotsState = { active: 'a', previous: null, trial: null, bad: [] }
const trialB = (version = '2.0.0', since = NOW - 1000): SlotsState => ({ active: 'b', previous: 'a', trial: { slot: 'b', version, since, attempts: 1, maxAttempts: 3, deadlineS: 120 }, bad: [] })
const facts = (f: Partial<Facts> & { version?: string; slot?: SlotName | null } = {}): Facts => ({
  ...(f.kind ? { kind: f.kind } : {}),
  ...(f.hold ? { hold: f.hold } : {}),
  now: NOW,
  running: { version: f.version ?? '1.0.0', slot: f.slot === undefined ? 'a' : f.slot },
  slots: f.slots ?? committedA,
  checkDue: f.checkDue ?? false,
  nextCheckAt: NOW + 3_600_000,
  health: f.health ?? { connected: true, statusPublished: true, selfTest: 'not-run' },
})
const rec = (r: Partial<OtaRecord> & { v?: string } = {}): OtaRecord => {
  const { v, ...rest } = r
  return { ...INITIAL_RECORD, ...(v ? { candidate: cand(v), from: { version: '1.0.0', slot: 'a' as const } } : {}), ...rest }
}

t.test('planner: one next step for every situation', async t => {
  const rows: Array<[string, OtaRecord, Facts, string | RegExp]> = [
    ['idle, nothing due', rec(), facts(), 'wait'],
    ['idle, check due', rec(), facts({ checkDue: true }), 'check'],
    ['idle but paused', rec({ paused: true }), facts({ checkDue: true }), 'wait'],
    ['committed rests like idle', rec({ phase: 'committed', v: '2.0.0' }), facts({ checkDue: true, version: '2.0.0' }), 'check'],
    ['downloading', rec({ phase: 'downloading', v: '2.0.0' }), facts(), 'download'],
    ['downloading, in backoff', rec({ phase: 'downloading', v: '2.0.0', retryAt: NOW + 5000, failures: 1 }), facts(), 'wait'],
    ['downloading, paused', rec({ phase: 'downloading', v: '2.0.0', paused: true }), facts(), 'wait'],
    ['downloading, pinned below it', rec({ phase: 'downloading', v: '2.0.0', pinned: '1.5.0' }), facts(), 'abandon'],
    ['downloading, now marked bad', rec({ phase: 'downloading', v: '2.0.0' }), facts({ slots: { ...committedA, bad: ['2.0.0'] } }), 'abandon'],
    ['downloading a version not newer (anti-rollback)', rec({ phase: 'downloading', v: '1.0.0' }), facts(), 'abandon'],
    ['downloading below its minVersion', rec({ phase: 'downloading', candidate: { ...cand('3.0.0'), minVersion: '2.0.0' } }), facts(), 'abandon'],
    ['verifying', rec({ phase: 'verifying', v: '2.0.0' }), facts(), 'verify'],
    ['staging', rec({ phase: 'staging', v: '2.0.0' }), facts(), 'stage'],
    ['switching, not yet switched', rec({ phase: 'switching', v: '2.0.0', slot: 'b' }), facts(), 'switch'],
    ['switching, paused before the switch', rec({ phase: 'switching', v: '2.0.0', slot: 'b', paused: true }), facts(), 'wait'],
    ['switched, still the old process', rec({ phase: 'switching', v: '2.0.0', slot: 'b' }), facts({ slots: trialB() }), 'restart'],
    ['switched, new process starts its trial', rec({ phase: 'switching', v: '2.0.0', slot: 'b' }), facts({ slots: trialB(), version: '2.0.0', slot: 'b' }), 'begin-trial'],
    ['switched and paused: the trial still runs', rec({ phase: 'switching', v: '2.0.0', slot: 'b', paused: true }), facts({ slots: trialB(), version: '2.0.0', slot: 'b' }), 'begin-trial'],
    ['trial: self-test first', rec({ phase: 'trial', v: '2.0.0', slot: 'b' }), facts({ slots: trialB(), version: '2.0.0', slot: 'b' }), 'self-test'],
    [
      'trial: all healthy',
      rec({ phase: 'trial', v: '2.0.0', slot: 'b' }),
      facts({ slots: trialB(), version: '2.0.0', slot: 'b', health: { connected: true, statusPublished: true, selfTest: 'ok' } }),
      'commit',
    ],
    [
      'trial: not connected yet',
      rec({ phase: 'trial', v: '2.0.0', slot: 'b' }),
      facts({ slots: trialB(), version: '2.0.0', slot: 'b', health: { connected: false, statusPublished: false, selfTest: 'ok' } }),
      'wait',
    ],
    [
      'trial: status not acknowledged yet',
      rec({ phase: 'trial', v: '2.0.0', slot: 'b' }),
      facts({ slots: trialB(), version: '2.0.0', slot: 'b', health: { connected: true, statusPublished: false, selfTest: 'ok' } }),
      'wait',
    ],
    [
      'trial: self-test failed',
      rec({ phase: 'trial', v: '2.0.0', slot: 'b' }),
      facts({ slots: trialB(), version: '2.0.0', slot: 'b', health: { connected: true, statusPublished: true, selfTest: 'failed' } }),
      /decide-rollback self-test-failed/,
    ],
    [
      'trial: deadline passed',
      rec({ phase: 'trial', v: '2.0.0', slot: 'b' }),
      facts({ slots: trialB('2.0.0', NOW - 121_000), version: '2.0.0', slot: 'b', health: { connected: false, statusPublished: false, selfTest: 'ok' } }),
      /decide-rollback health-timeout/,
    ],
    ['trial slot runs another version', rec({ phase: 'trial', v: '2.0.0', slot: 'b' }), facts({ slots: trialB(), version: '1.9.0', slot: 'b' }), /decide-rollback slot b runs 1.9.0/],
    [
      'trial: committed but not recorded (kill -9)',
      rec({ phase: 'trial', v: '2.0.0', slot: 'b' }),
      facts({ slots: { active: 'b', previous: 'a', trial: null, bad: [] }, version: '2.0.0', slot: 'b' }),
      'commit',
    ],
    [
      'trial: launcher rolled back (crash-loop)',
      rec({ phase: 'trial', v: '2.0.0', slot: 'b' }),
      facts({ slots: { ...committedA, bad: ['2.0.0'], rollback: { version: '2.0.0', slot: 'b', reason: 'crash-loop', at: NOW } } }),
      /rollback crash-loop/,
    ],
    [
      'switching: launcher rolled back before the trial began',
      rec({ phase: 'switching', v: '2.0.0', slot: 'b' }),
      facts({ slots: { ...committedA, bad: ['2.0.0'], rollback: { version: '2.0.0', slot: 'b', reason: 'crash-loop', at: NOW } } }),
      /rollback crash-loop/,
    ],
    ['trial: slots reset under it', rec({ phase: 'trial', v: '2.0.0', slot: 'b' }), facts(), /rollback interrupted/],
    ['rolling-back, new process', rec({ phase: 'rolling-back', v: '2.0.0', slot: 'b', reason: 'health-timeout' }), facts({ slots: trialB(), version: '2.0.0', slot: 'b' }), /rollback health-timeout/],
    ['rolled back in slots.json, new process still running', rec({ phase: 'rolled-back', v: '2.0.0' }), facts({ version: '2.0.0', slot: 'b' }), 'restart'],
    ['launcher starts the installed bundle now', rec(), facts({ slots: { active: null, previous: null, trial: null, bad: [] } }), 'restart'],
    ['first update from the installed bundle', rec({ phase: 'staging', v: '2.0.0' }), facts({ slot: null, slots: { active: null, previous: null, trial: null, bad: [] } }), 'stage'],
    ['a phase with no release recorded', rec({ phase: 'verifying' }), facts(), 'abandon'],
    // the OS updater (kind os, tryboot backend) and the two updaters' hold on each other
    ['switching while the other updater has a trial: hold', rec({ phase: 'switching', v: '2.0.0', slot: 'b' }), facts({ hold: 'an agent update is on trial' }), 'wait'],
    ['staging goes on while the other holds only switches', rec({ phase: 'staging', v: '2.0.0' }), facts({ hold: 'an OS update is trial' }), 'stage'],
    ['the agent updater refuses an OS release', rec({ phase: 'downloading', candidate: { ...cand('2.0.0'), kind: 'os' } }), facts(), /abandon not an agent release \(os\)/],
    ['the OS updater refuses an agent release', rec({ phase: 'downloading', v: '2.0.0' }), facts({ kind: 'os' }), /abandon not an OS release \(agent\)/],
    [
      'OS: armed, the reboot into the trial is under way',
      rec({ phase: 'switching', candidate: { ...cand('2.0.0'), kind: 'os' }, slot: 'b', times: { switched: NOW - 500 } }),
      facts({ kind: 'os', slots: { ...committedA, rebootPending: 'slot b with 2.0.0' } }),
      'wait',
    ],
    [
      'OS: armed 10 min ago and still no reboot: arm again',
      rec({ phase: 'switching', candidate: { ...cand('2.0.0'), kind: 'os' }, slot: 'b', times: { switched: NOW - 600_001 } }),
      facts({ kind: 'os', slots: { ...committedA, rebootPending: 'slot b with 2.0.0' } }),
      'switch',
    ],
    [
      'OS: the trial boot begins its trial',
      rec({ phase: 'switching', candidate: { ...cand('2.0.0'), kind: 'os' }, slot: 'b' }),
      facts({ kind: 'os', slots: trialB(), version: '2.0.0', slot: 'b' }),
      'begin-trial',
    ],
    [
      'OS: the firmware fell back before the trial began',
      rec({ phase: 'switching', candidate: { ...cand('2.0.0'), kind: 'os' }, slot: 'b' }),
      facts({ kind: 'os', slots: { ...committedA, bad: ['2.0.0'], rollback: { version: '2.0.0', slot: 'b', reason: 'the trial boot of slot B did not commit; slot A booted again', at: 0 } } }),
      /rollback the trial boot of slot B did not commit/,
    ],
  ]
  for (const [name, r, f, want] of rows) {
    const step = plan(r, f)
    const got = [step.kind, 'reason' in step ? step.reason : ''].join(' ').trim()
    if (typeof want === 'string') t.equal(step.kind, want, name)
    else t.match(got, want, name)
  }
})

t.test('agent and OS updaters: never switching together, never waiting for each other both', async t => {
  const st = (switchPending: boolean, switchInFlight: boolean) => ({ switchPending, switchInFlight })
  t.equal(agentHold(undefined), undefined, 'no OS updater: the agent never holds')
  t.equal(agentHold(st(true, false)), undefined, 'an OS release staged but not switched does not hold the agent')
  t.match(agentHold(st(true, true)), /OS update is on trial/, 'an OS switch made: the agent holds')
  t.match(osHold(st(true, false), false), /agent update/, 'an agent release staged: the OS holds (the agent goes first)')
  t.match(osHold(st(false, false), true), /agent update/, 'an agent trial in slots.json: the OS holds')
  t.equal(osHold(st(false, false), false), undefined)
  // both staged at once: the agent switches, the OS waits, nobody waits for ever
  const both = st(true, false)
  t.ok(agentHold(both) === undefined && osHold(both, false) !== undefined, 'both staged: exactly one may switch')
})

// ---------------------------------------------------------------- executor

interface Rig {
  dir: string
  ota: string
  slots: DirectorySlots
  channel: DirReleaseChannel
  store: MemoryOtaStore
  emitted: OtaEvent[]
  restarts: number
  health: { connected: boolean; statusPublished: boolean }
  selfTestOk: boolean
  start(version: string, slot: SlotName | null, extra?: Partial<UpdaterOptions>): Updater
  all(): OtaEvent[]
}

const quietLog = createLogger({ level: 'warn', out: { write: () => undefined } })

function rig(): Rig {
  const dir = tmp('cairn-upd-')
  const ota = join(dir, 'ota')
  const r: Rig = {
    dir,
    ota,
    slots: new DirectorySlots(ota),
    channel: new DirReleaseChannel(),
    store: new MemoryOtaStore(),
    emitted: [],
    restarts: 0,
    health: { connected: true, statusPublished: true },
    selfTestOk: true,
    start: (version, slot, extra = {}) => {
      const u = new Updater({
        store: r.store,
        slots: r.slots,
        channel: r.channel,
        clock: systemClock,
        log: quietLog,
        running: { version, slot },
        device: { deviceId: 'd'.repeat(52), arch: process.arch, board: 'generic', channel: 'stable' },
        settings: { pollS: 3600, healthDeadlineS: 30, maxAttempts: 3, hintMinS: 0 },
        downloadDir: join(ota, 'download'),
        health: { connected: () => r.health.connected, statusPublished: () => r.health.statusPublished },
        selfTest: async () => (r.selfTestOk ? { ok: true, failures: [] } : { ok: false, failures: ['state dir not writable (EROFS)'] }),
        emit: (kind, data) => r.emitted.push({ kind, data }),
        restart: () => {
          r.restarts++
        },
        random: () => 0,
        retryBaseMs: 50,
        ...extra,
      })
      u.start()
      return u
    },
    all: () => [...r.store.events, ...r.emitted],
  }
  return r
}

/** v1 installed in slot a, committed. */
async function installV1(r: Rig): Promise<void> {
  const slot = await r.slots.stage(stubTar(join(r.dir, 'rel'), '1.0.0', 'run'), { version: '1.0.0', running: null })
  writeSlots(r.ota, { active: slot, previous: null, trial: null, bad: [] })
}

const kinds = (evs: OtaEvent[]) => evs.map(e => e.kind)

t.test('executor: v1 → v2, across the restart the launcher does', async t => {
  const r = rig()
  await installV1(r)
  r.channel.add('2.0.0', stubTar(join(r.dir, 'rel'), '2.0.0', 'run'))
  const old = r.start('1.0.0', 'a')
  t.teardown(() => old.stop())
  old.checkNow()
  await until(() => r.restarts === 1, 10_000, 'the old version to hand over')
  t.same(kinds(r.store.events), ['ota.available', 'ota.download', 'ota.staged', 'ota.switching'], 'each step recorded with its event')
  t.match(r.emitted, [{ kind: 'ota.download', data: { state: 'started', bytes: 0 } }])
  t.match(readSlots(r.ota).state, { active: 'b', previous: 'a', trial: { slot: 'b', version: '2.0.0', attempts: 0, maxAttempts: 3, deadlineS: 30 } })
  t.equal(r.store.record.phase, 'switching')

  // The launcher would count the start and run slot b: the new version takes over.
  r.health = { connected: false, statusPublished: false }
  const neu = r.start('2.0.0', 'b')
  t.teardown(() => neu.stop())
  await until(() => r.store.record.phase === 'trial', 5000, 'trial')
  await new Promise(res => setTimeout(res, 300))
  t.equal(r.store.record.phase, 'trial', 'no commit before the broker is reached')
  r.health = { connected: true, statusPublished: true }
  neu.wake()
  await until(() => r.store.record.phase === 'committed', 5000, 'commit')
  const committed = r.store.events.at(-1)!
  t.equal(committed.kind, 'ota.committed')
  t.match(committed.data, { version: '2.0.0', from: '1.0.0', slot: 'b' })
  for (const k of ['downloadS', 'switchS', 'healthS', 'totalS']) t.type(committed.data[k], 'number', `timing ${k}`)
  t.same(readSlots(r.ota).state, { active: 'b', previous: 'a', trial: null, bad: [] })
  t.same(readdirSync(join(r.ota, 'download')), [], 'download removed after commit')
  t.equal(r.restarts, 1, 'the new version did not restart')
})

async function switchToV2(r: Rig, mode = 'run'): Promise<void> {
  await installV1(r)
  r.channel.add('2.0.0', stubTar(join(r.dir, 'rel'), '2.0.0', mode))
  const old = r.start('1.0.0', 'a')
  old.checkNow()
  await until(() => r.restarts === 1, 10_000, 'switch')
  await old.stop()
}

t.test('executor: a failed self-test rolls back; the version is never retried, a newer one is', async t => {
  const r = rig()
  await switchToV2(r)
  r.selfTestOk = false
  const neu = r.start('2.0.0', 'b')
  await until(() => r.restarts === 2, 5000, 'the new version hands back')
  await neu.stop()
  t.match(r.store.events.at(-1), { kind: 'ota.rolled-back', data: { version: '2.0.0', reason: 'self-test-failed', detail: 'state dir not writable (EROFS)' } })
  t.match(readSlots(r.ota).state, { active: 'a', previous: null, trial: null, bad: ['2.0.0'], rollback: { version: '2.0.0', reason: 'self-test-failed' } })

  // The old version comes back: nothing more to report, and 2.0.0 is not taken again.
  const before = r.store.events.length
  const back = r.start('1.0.0', 'a')
  t.teardown(() => back.stop())
  back.checkNow()
  await until(() => r.channel.checks >= 2, 5000, 'a check')
  await new Promise(res => setTimeout(res, 200))
  t.equal(r.store.events.length, before, 'no duplicate outcome, 2.0.0 not offered')
  r.channel.add('2.1.0', stubTar(join(r.dir, 'rel'), '2.1.0', 'run'))
  back.checkNow()
  await until(() => r.restarts === 3, 10_000, 'a newer release is taken')
  t.match(readSlots(r.ota).state.trial, { version: '2.1.0', slot: 'b' })
})

t.test('executor: no health within the deadline rolls back (health-timeout)', async t => {
  const r = rig()
  await switchToV2(r)
  r.health = { connected: false, statusPublished: false }
  // A short window: the trial was armed with 30 s, so shorten it in slots.json.
  const s = readSlots(r.ota).state
  writeSlots(r.ota, { ...s, trial: { ...s.trial!, deadlineS: 1 } })
  const neu = r.start('2.0.0', 'b')
  t.teardown(() => neu.stop())
  await until(() => r.restarts === 2, 5000, 'rollback after the deadline')
  t.match(r.store.events.at(-1), { kind: 'ota.rolled-back', data: { reason: 'health-timeout' } })
})

t.test('executor: the old version reports a rollback the launcher did (crash-loop), once', async t => {
  const r = rig()
  await switchToV2(r, 'crash')
  // What the launcher does after three failed starts:
  const s = readSlots(r.ota).state
  writeSlots(r.ota, { active: 'a', previous: null, trial: null, bad: ['2.0.0'], rollback: { version: '2.0.0', slot: 'b', reason: 'crash-loop', at: Date.now() } })
  t.equal(s.trial?.version, '2.0.0')
  const back = r.start('1.0.0', 'a')
  t.teardown(() => back.stop())
  await until(() => r.store.record.phase === 'rolled-back', 5000, 'rolled-back recorded')
  const outcome = r.store.events.filter(e => e.kind === 'ota.rolled-back')
  t.equal(outcome.length, 1)
  t.match(outcome[0]!.data, { version: '2.0.0', from: '1.0.0', reason: 'crash-loop' })
})

t.test('executor: anti-rollback does not depend on the channel', async t => {
  const r = rig()
  await installV1(r)
  // A channel that offers whatever it has, ignoring every rule.
  const rogue = { checks: 0, offered: [] as ReleaseCandidate[] }
  const old = r.start('1.0.0', 'a', {
    channel: {
      check: async () => {
        rogue.checks++
        return { ...cand('0.9.0'), length: 1 }
      },
      download: async () => {
        throw new Error('must not download')
      },
    },
  })
  t.teardown(() => old.stop())
  old.checkNow()
  await until(() => rogue.checks === 1, 5000, 'check')
  await new Promise(res => setTimeout(res, 200))
  t.equal(r.store.record.phase, 'idle', 'a lower version is not taken, however it arrives')
  t.same(r.store.events, [])
})

t.test('executor: an interrupted download resumes where it stopped; a corrupt one starts over', async t => {
  const r = rig()
  await installV1(r)
  const file = stubTar(join(r.dir, 'rel'), '2.0.0', 'run')
  const c = r.channel.add('2.0.0', file)
  r.channel.cutAfter = 4096
  r.channel.corruptNext = false
  const old = r.start('1.0.0', 'a')
  t.teardown(() => old.stop())
  old.checkNow()
  await until(() => r.restarts === 1, 10_000, 'switch after the retry')
  t.equal(r.channel.bytesServed, c.length, 'every byte fetched exactly once (resumed, not restarted)')
  const states = [...r.emitted, ...r.store.events].filter(e => e.kind === 'ota.download').map(e => e.data.state)
  for (const s of ['started', 'interrupted', 'resumed', 'done']) t.ok(states.includes(s), `download event ${s}`)

  const r2 = rig()
  await installV1(r2)
  r2.channel.add('2.0.0', stubTar(join(r2.dir, 'rel'), '2.0.0', 'run'))
  r2.channel.corruptNext = true
  const u2 = r2.start('1.0.0', 'a')
  t.teardown(() => u2.stop())
  u2.checkNow()
  await until(() => r2.restarts === 1, 10_000, 'switch after a clean download')
  t.equal(r2.channel.downloads, 2, 'the corrupt file was dropped and fetched again')
})

t.test('executor: a release that does not start is refused at staging and marked bad', async t => {
  const r = rig()
  await installV1(r)
  const rel = join(r.dir, 'rel')
  mkdirSync(rel, { recursive: true })
  const { packTar } = await import('../../protocol/tar.js')
  const { writeFileSync } = await import('node:fs')
  const bad = join(rel, 'bad.tar')
  writeFileSync(
    bad,
    packTar([
      { path: 'cairn.mjs', type: 'file', mode: 0o755, data: Buffer.from('process.exit(9)') },
      { path: 'VERSION', type: 'file', mode: 0o644, data: Buffer.from('2.0.0\n') },
    ]),
  )
  r.channel.add('2.0.0', bad)
  const u = r.start('1.0.0', 'a')
  t.teardown(() => u.stop())
  u.checkNow()
  await until(() => r.store.record.phase === 'failed', 10_000, 'failed')
  t.match(r.store.events.at(-1), { kind: 'ota.failed', data: { version: '2.0.0', step: 'staging', reason: 'stage-failed' } })
  t.same(readSlots(r.ota).state.bad, ['2.0.0'])
  t.equal(r.restarts, 0, 'no switch')
  t.equal(readSlots(r.ota).state.active, 'a')
})

t.test('executor: pause holds before the switch; pin holds at a version', async t => {
  const r = rig()
  await installV1(r)
  r.channel.add('2.0.0', stubTar(join(r.dir, 'rel'), '2.0.0', 'run'))
  r.channel.add('3.0.0', stubTar(join(r.dir, 'rel'), '3.0.0', 'run'))
  // The first poll is ~10 s away: nothing checks before pause and pin are set.
  const u = r.start('1.0.0', 'a', { random: () => 0.99 })
  t.teardown(() => u.stop())
  u.pin('2.0.0')
  u.setPaused(true)
  u.checkNow()
  await new Promise(res => setTimeout(res, 300))
  t.equal(r.channel.checks, 0, 'paused: no check')
  t.same(kinds(r.store.events), ['ota.pinned', 'ota.paused'])
  u.setPaused(false)
  await until(() => r.restarts === 1, 10_000, 'switch')
  t.equal(readSlots(r.ota).state.trial?.version, '2.0.0', 'the pin held it at 2.0.0, not 3.0.0')
  t.throws(() => u.pin('latest'), /not a semantic version/)
})

t.test('executor: a check that fails is reported once per distinct failure', async t => {
  const r = rig()
  await installV1(r)
  r.channel.failCheck = Object.assign(new Error('timestamp expired'), { code: 'TUF_METADATA' })
  const u = r.start('1.0.0', 'a')
  t.teardown(() => u.stop())
  for (let i = 0; i < 3; i++) {
    u.checkNow()
    await until(() => r.channel.checks === i + 1, 5000, 'check')
  }
  t.equal(r.emitted.filter(e => e.kind === 'ota.failed').length, 1)
  t.match(r.emitted[0], { kind: 'ota.failed', data: { step: 'checking', reason: 'check-failed' } })
})

t.test('state.db: the record and its event commit together', async t => {
  const dir = tmp()
  loadOrCreateIdentity(dir)
  const db = openStateDb(dir)
  t.teardown(() => db.close())
  const outbox = new Outbox(db, { clock: systemClock, maxBytes: 1 << 20, lazyWriteMs: 0, mustKeepDays: 1 })
  const store = new SqlOtaStore(db, outbox, e => ({ id: `evt-${e.kind}-0001`, cls: MsgClass.event, topic: 't/event', payload: Buffer.from(JSON.stringify(e)) }), systemClock)
  t.same(store.load(), INITIAL_RECORD)
  store.save({ ...INITIAL_RECORD, phase: 'downloading', candidate: cand('2.0.0') }, { kind: 'ota.available', data: { version: '2.0.0' } })
  t.equal(store.load().phase, 'downloading')
  t.equal(outbox.depth(), 1, 'event stored with the record')
  const failing = new SqlOtaStore(
    db,
    outbox,
    () => {
      throw new Error('no event')
    },
    systemClock,
  )
  t.throws(() => failing.save({ ...INITIAL_RECORD, phase: 'verifying', candidate: cand('2.0.0') }, { kind: 'x', data: {} }))
  t.equal(store.load().phase, 'downloading', 'no record without its event')
  db.prepare('UPDATE ota_state SET record = \'{"phase":"from-the-future"}\'').run()
  t.same(store.load(), INITIAL_RECORD, 'an unreadable record starts over from the facts')
  t.ok(existsSync(join(dir, 'state.db')))
})

// Found in review: a step took a copy of the record before awaiting the (slow) staging,
// and saved it afterwards, undoing a signed pause that arrived meanwhile.
t.test('a pause or pin that arrives while a release stages is kept, and stops the switch', async t => {
  const c: ReleaseCandidate = { version: '2.0.0', channel: 'stable', rollout: 100, kind: 'agent', targetPath: 'x', length: 1, sha256: 'a'.repeat(64) }
  for (const control of ['pause', 'pin'] as const) {
    const store = new MemoryOtaStore()
    store.record = { ...INITIAL_RECORD, phase: 'staging', candidate: c, from: { version: '1.0.0', slot: 'a' } }
    let state: SlotsState = { active: 'a', previous: null, trial: null, bad: [] }
    let releaseStage!: () => void
    let entered!: () => void
    const staging = new Promise<void>(r => (entered = r))
    let trials = 0
    const dir = tmp('cairn-ota-race-')
    const u = new Updater({
      store,
      slots: {
        kind: 'directory',
        current: () => state,
        stage: async () => {
          entered()
          await new Promise<void>(r => (releaseStage = r))
          return 'b'
        },
        activateForTrial: (slot: SlotName, version: string, o: { now: number }) => {
          trials++
          state = { ...state, previous: state.active, active: slot, trial: { slot, version, since: o.now, attempts: 0, maxAttempts: 3, deadlineS: 60 } }
        },
        commit() {},
        rollback() {},
        markBad() {},
      },
      channel: { check: async () => null, download: async () => {} },
      clock: systemClock,
      log: createLogger({ level: 'fatal', out: { write: () => true } }),
      running: { version: '1.0.0', slot: 'a' },
      device: { deviceId: 'd1', arch: 'x64', board: 'generic', channel: 'stable' },
      settings: { pollS: 3600, healthDeadlineS: 60, maxAttempts: 3, hintMinS: 1 },
      downloadDir: dir,
      health: { connected: () => true, statusPublished: () => true },
      selfTest: async () => ({ ok: true, failures: [] }),
      emit() {},
      restart: () => {},
    } as unknown as UpdaterOptions)
    u.start()
    await staging
    if (control === 'pause') t.equal(u.setPaused(true).paused, true, 'paused while staging')
    else u.pin('1.0.0')
    releaseStage()
    await new Promise(r => setTimeout(r, 300))
    if (control === 'pause') t.equal(store.record.paused, true, 'the pause survives the staging step')
    else t.equal(store.record.pinned, '1.0.0', 'the pin survives the staging step')
    t.equal(trials, 0, `${control}: no switch to the staged release`)
    await u.stop()
  }
})
