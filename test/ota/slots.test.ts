// A/B slots and the launcher: the tar format of a release, slots.json (atomic,
// validated, last-good fallback; the launcher's copy of the rules held to the same
// table), the directory backend, and the launcher as a real process under a
// supervisor: fallback bundle, attempts counted before start, crash-loop rollback,
// health-timeout rollback, exit 75, signal forwarding.

import t from 'tap'
import { execFileSync, spawn } from 'node:child_process'
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { gzipSync } from 'node:zlib'
import { tmp, until } from '../helpers/agent.js'
import { LAUNCHER, readStubLog, stubTar, stubTree } from '../helpers/ota.js'
import { supervise } from '../helpers/supervisor.js'
import * as launcher from '../../ota/launcher.mjs'
import { packTar, readTar, treeEntries, writeEntries, TarError } from '../../protocol/tar.js'
import { compareSemver } from '../../protocol/semver.js'
import { DirectorySlots, GOOD_FILE, parseSlots, readSlots, rolledBack, SLOTS_FILE, StageError, writeSlots, type SlotsState } from '../../ota/slots.js'

t.test('tar: round trip, gzip, long names, and what GNU tar writes', async t => {
  const long = `node_modules/${'x'.repeat(90)}/${'y'.repeat(60)}/index.js`
  const entries = [
    { path: 'cairn.mjs', type: 'file' as const, mode: 0o755, data: Buffer.from('#!/usr/bin/env node\n') },
    { path: 'node_modules', type: 'dir' as const, mode: 0o755 },
    { path: long, type: 'file' as const, mode: 0o644, data: Buffer.alloc(1500, 7) },
    { path: 'empty', type: 'file' as const, mode: 0o644, data: Buffer.alloc(0) },
  ]
  const tar = packTar(entries)
  t.equal(tar.length % 512, 0)
  const back = readTar(tar)
  t.same(
    back.map(e => [e.path, e.type, e.mode, e.data?.length]),
    entries.map(e => [e.path, e.type, e.mode, e.data?.length]),
  )
  t.ok(back[2]!.data!.equals(entries[2]!.data!), 'content survives')
  t.same(readTar(gzipSync(tar)).length, 4, 'gzip is read transparently')
  t.ok(packTar(entries).equals(tar), 'the same tree packs to the same bytes')

  const dir = tmp()
  const src = join(dir, 'src')
  mkdirSync(join(src, 'a', 'b'), { recursive: true })
  writeFileSync(join(src, 'a', 'b', `${'n'.repeat(120)}.txt`), 'long name')
  writeFileSync(join(src, 'top'), 'top')
  for (const format of ['gnu', 'pax']) {
    const file = join(dir, `${format}.tar`)
    execFileSync('tar', ['--format', format, '-cf', file, '-C', src, '.'])
    const got = readTar(readFileSync(file))
    t.same(
      got
        .filter(e => e.type === 'file')
        .map(e => e.path)
        .sort(),
      [`a/b/${'n'.repeat(120)}.txt`, 'top'],
      `reads tar --format ${format} (long names)`,
    )
  }
  const src2 = join(dir, 'src2')
  mkdirSync(join(src2, 'p'.repeat(80)), { recursive: true })
  writeFileSync(join(src2, 'p'.repeat(80), `${'q'.repeat(60)}.txt`), 'split name')
  execFileSync('tar', ['--format', 'ustar', '-cf', join(dir, 'ustar.tar'), '-C', src2, '.'])
  t.same(
    readTar(readFileSync(join(dir, 'ustar.tar')))
      .filter(e => e.type === 'file')
      .map(e => e.path),
    [`${'p'.repeat(80)}/${'q'.repeat(60)}.txt`],
    'reads ustar prefix/name splits',
  )
})

t.test('tar: refuses what could escape or is not a plain tree', async t => {
  const mk = (path: string) => packTar([{ path, type: 'file', mode: 0o644, data: Buffer.from('x') }])
  t.throws(() => readTar(mk('../evil')), TarError)
  t.throws(() => readTar(mk('/etc/passwd')), TarError)
  t.throws(() => readTar(mk('a/../../b')), TarError)
  const dir = tmp()
  const src = join(dir, 'src')
  mkdirSync(src)
  symlinkSync('/etc/passwd', join(src, 'link'))
  execFileSync('tar', ['-cf', join(dir, 'l.tar'), '-C', src, '.'])
  t.throws(() => readTar(readFileSync(join(dir, 'l.tar'))), /unsupported entry type "2"/, 'symlinks refused')
  const good = packTar([{ path: 'f', type: 'file', mode: 0o644, data: Buffer.alloc(2000, 1) }])
  t.throws(() => readTar(good.subarray(0, 1024)), /truncated/)
  const bad = Buffer.from(good)
  bad[10] = 0x41
  t.throws(() => readTar(bad), /checksum/)
  t.throws(() => readTar(good, { maxBytes: 1000 }), /more than 1000 bytes/)
  const out = join(dir, 'out')
  mkdirSync(out)
  writeEntries(readTar(good), out)
  t.equal(readFileSync(join(out, 'f')).length, 2000)
  t.same(
    treeEntries(out).map(e => e.path),
    ['f'],
  )
})

t.test('slots.json: atomic writes, validation, last good state; launcher rules agree', async t => {
  const dir = tmp()
  t.same(readSlots(dir), { state: { active: null, previous: null, trial: null, bad: [] }, source: 'default', damaged: false })
  const committed: SlotsState = { active: 'a', previous: null, trial: null, bad: ['0.9.0'] }
  writeSlots(dir, committed)
  t.ok(existsSync(join(dir, GOOD_FILE)), 'a state without a trial is also the last good one')
  const trial: SlotsState = { active: 'b', previous: 'a', trial: { slot: 'b', version: '2.0.0', since: 1, attempts: 0, maxAttempts: 3, deadlineS: 120 }, bad: ['0.9.0'] }
  writeSlots(dir, trial)
  t.same(readSlots(dir).state, trial)
  t.same(JSON.parse(readFileSync(join(dir, GOOD_FILE), 'utf8')), committed, 'a trial never becomes the last good state')
  writeFileSync(join(dir, SLOTS_FILE), '{"active": "b", "prev')
  t.same(readSlots(dir), { state: committed, source: 'good', damaged: true }, 'damaged: back to the last good state')
  t.same(launcher.readSlots(dir), { state: committed, source: 'good', damaged: true }, 'the launcher reads it the same way')
  writeFileSync(join(dir, GOOD_FILE), 'garbage')
  t.equal(readSlots(dir).source, 'default')
  t.throws(() => writeSlots(dir, { ...trial, active: 'a' }), /invalid/, 'a trial slot must be the active one')

  const table: unknown[] = [
    committed,
    trial,
    { ...committed, rollback: { version: '2.0.0', slot: 'b', reason: 'crash-loop', at: 5 } },
    { ...committed, rollback: { version: '2.0.0', reason: 'interrupted', at: 5 } },
    { ...committed, extra: 'kept' },
    { ...committed, active: 'c' },
    { ...committed, bad: [1] },
    { ...committed, bad: ['a b'] },
    { ...trial, trial: { ...trial.trial, attempts: -1 } },
    { ...trial, trial: { ...trial.trial, maxAttempts: 0 } },
    { ...trial, trial: { ...trial.trial, since: 1.5 } },
    { ...trial, trial: { ...trial.trial, slot: 'a' } },
    { ...trial, trial: { ...trial.trial, deadlineS: undefined } },
    { ...committed, previous: undefined },
    { ...committed, rollback: { version: '2.0.0', reason: 'x'.repeat(201), at: 5 } },
    [],
    null,
    'text',
  ]
  for (const [i, v] of table.entries()) {
    const text = JSON.stringify(v)
    t.equal(launcher.parseSlots(text) !== null, parseSlots(text) !== null, `row ${i}: launcher and slots.ts agree (${parseSlots(text) ? 'valid' : 'invalid'})`)
  }
  t.same(launcher.rolledBack(trial, '2.0.0', 'crash-loop', 9), rolledBack(trial, '2.0.0', 'crash-loop', 9), 'same rollback rule')
  t.same(rolledBack(trial, '2.0.0', 'crash-loop', 9), { active: 'a', previous: null, trial: null, bad: ['0.9.0', '2.0.0'], rollback: { version: '2.0.0', slot: 'b', reason: 'crash-loop', at: 9 } })

  // The launcher's copy of the atomic write (protocol/durable-files.ts) leaves the same files.
  const written = (write: (d: string, s: SlotsState) => void) => {
    const d = tmp()
    write(d, trial)
    write(d, committed)
    return readdirSync(d)
      .sort()
      .map(f => [f, statSync(join(d, f)).mode & 0o777, readFileSync(join(d, f), 'utf8')])
  }
  t.same(written(launcher.writeSlots), written(writeSlots), 'launcher and slots.ts write the same files, modes and bytes (no temp file left)')
})

t.test('launcher: start counting and deadline rules (pure)', async t => {
  const s: SlotsState = { active: 'b', previous: 'a', trial: { slot: 'b', version: '2.0.0', since: 1000, attempts: 2, maxAttempts: 3, deadlineS: 10 }, bad: [] }
  t.same(launcher.beforeStart(s, 2000, 0).state.trial?.attempts, 3, 'third start allowed')
  const over = launcher.beforeStart({ ...s, trial: { ...s.trial!, attempts: 3 } }, 2000, 0)
  t.equal(over.rollback, 'crash-loop')
  t.equal(over.state.active, 'a')
  t.equal(launcher.beforeStart(s, 1000 + 10_000 + 5001, 5000).rollback, 'health-timeout', 'past deadline + grace at start')
  t.equal(launcher.beforeStart({ ...s, trial: null }, 0, 0).changed, false)
  t.equal(launcher.trialRemainingMs(s.trial!, 3000, 5000), 13_000)
  t.equal(launcher.trialRemainingMs(s.trial!, 0, 5000), 15_000, 'a clock that went back does not stretch the window')
})

t.test('directory slots: stage into the inactive slot, smoke-test, switch, commit, roll back', async t => {
  const dir = tmp()
  const rel = join(dir, 'rel')
  const slots = new DirectorySlots(join(dir, 'ota'))
  const s1 = await slots.stage(stubTar(rel, '1.0.0', 'run'), { version: '1.0.0', running: null })
  t.equal(s1, 'a', 'first release goes to a')
  await t.rejects(slots.stage(stubTar(rel, '1.1.0', 'run'), { version: '9.9.9', running: null }), StageError, 'VERSION must match the signed metadata')
  writeSlots(slots.dir, { active: 'a', previous: null, trial: null, bad: [] })
  const s2 = await slots.stage(stubTar(rel, '2.0.0', 'run'), { version: '2.0.0', running: 'a' })
  t.equal(s2, 'b', 'never the running slot')
  t.equal(slots.versionOf('b'), '2.0.0')
  slots.activateForTrial('b', '2.0.0', { maxAttempts: 3, deadlineS: 60, now: 5 })
  slots.activateForTrial('b', '2.0.0', { maxAttempts: 3, deadlineS: 60, now: 6 })
  t.same(slots.current(), { active: 'b', previous: 'a', trial: { slot: 'b', version: '2.0.0', since: 5, attempts: 0, maxAttempts: 3, deadlineS: 60 }, bad: [] }, 'idempotent switch')
  await t.rejects(slots.stage(stubTar(rel, '3.0.0', 'run'), { version: '3.0.0', running: 'b' }), /trial of 2.0.0 is pending/)
  slots.commit('2.0.0')
  slots.commit('2.0.0')
  t.same(slots.current(), { active: 'b', previous: 'a', trial: null, bad: [] })

  // A bundle that cannot start is refused at staging, and the rollback target is
  // taken out of slots.json before its directory is overwritten.
  const broken = join(rel, 'broken.tar')
  writeFileSync(broken, packTar([...stubTree('3.0.0', 'run').filter(e => e.path !== 'cairn.mjs'), { path: 'cairn.mjs', type: 'file', mode: 0o755, data: Buffer.from('throw new Error("boom")') }]))
  await t.rejects(slots.stage(broken, { version: '3.0.0', running: 'b' }), /does not start: .*boom/)
  t.equal(slots.current().previous, null, 'previous cleared before slot a was rewritten')
  t.equal(slots.versionOf('a'), '1.0.0', 'the failed stage left slot a as it was (unpacked beside it)')
  const s3 = await slots.stage(stubTar(rel, '3.0.0', 'run'), { version: '3.0.0', running: 'b' })
  slots.activateForTrial(s3, '3.0.0', { maxAttempts: 3, deadlineS: 60, now: 7 })
  slots.rollback('3.0.0', 'self-test-failed', 8)
  slots.rollback('3.0.0', 'again', 9)
  t.same(slots.current(), { active: 'b', previous: null, trial: null, bad: ['3.0.0'], rollback: { version: '3.0.0', slot: 'a', reason: 'self-test-failed', at: 8 } })
})

/** A ota dir with slots a (v1) and b (v2) populated from stub trees. */
function otaDirWith(modes: { a?: string; b?: string }, versions = { a: '1.0.0', b: '2.0.0' }): string {
  const ota = join(tmp(), 'ota')
  for (const slot of ['a', 'b'] as const) {
    const mode = modes[slot]
    if (!mode) continue
    const d = join(ota, 'slots', slot)
    mkdirSync(d, { recursive: true })
    writeEntries(stubTree(versions[slot], mode), d)
  }
  return ota
}

const stubLogFor = () => join(tmp(), 'stub.log')

t.test("launcher: its version order is protocol/semver.ts's; a newer installed bundle wins over an older committed slot (pure)", async t => {
  const vs = ['0.9.0', '1.0.0-alpha', '1.0.0-alpha.1', '1.0.0-alpha.beta', '1.0.0-beta.2', '1.0.0-beta.11', '1.0.0-rc.1', '1.0.0', '1.0.0+build.5', '1.0.1', '1.10.0', '2.0.0']
  for (const a of vs) for (const b of vs) t.equal(launcher.compareVersions(a, b), compareSemver(a, b), `${a} vs ${b}`)
  t.equal(launcher.compareVersions('1.0', '1.0.0'), null, 'not a version: no comparison')
  const committed: SlotsState = { active: 'a', previous: 'b', trial: null, bad: ['1.5.0'] }
  t.same(launcher.preferNewerFallback(committed, '1.0.0', '2.0.0'), { active: null, previous: null, trial: null, bad: ['1.5.0'] }, 'an OS update brought 2.0.0: it runs, and slots.json says so')
  t.equal(launcher.preferNewerFallback(committed, '2.0.0', '2.0.0'), null, 'the same version: the slot stays')
  t.equal(launcher.preferNewerFallback(committed, '3.0.0', '2.0.0'), null, 'a newer slot stays')
  t.equal(launcher.preferNewerFallback({ ...committed, trial: { slot: 'a', version: '1.0.0', since: 0, attempts: 0, maxAttempts: 3, deadlineS: 60 } }, '1.0.0', '2.0.0'), null, 'never during a trial')
  t.equal(launcher.preferNewerFallback(committed, undefined, '2.0.0'), null, 'a slot without VERSION stays as it was')
  t.equal(launcher.preferNewerFallback(committed, '1.0.0', undefined), null, 'a bundle without VERSION beside it: no change')
  t.equal(launcher.preferNewerFallback(committed, '1.0.0', '2.0.0', true), null, 'not while an OS update is on trial: a failed trial must find the agent it left')
  t.equal(launcher.compareVersions('1.0.0-01', '1.0.0'), null, 'a numeric pre-release with a leading zero is no version (as in protocol/semver.ts)')
})

t.test('launcher: after an OS update brought a newer bundle, it starts that one', async t => {
  const ota = otaDirWith({ a: 'exit3' })
  writeSlots(ota, { active: 'a', previous: null, trial: null, bad: [] })
  const fallback = join(tmp(), 'opt-cairn')
  mkdirSync(fallback)
  writeEntries(stubTree('2.0.0', 'exit3'), fallback)
  const log = stubLogFor()
  const child = spawn(process.execPath, [LAUNCHER, '--ota-dir', ota, '--fallback', join(fallback, 'cairn.mjs'), '--', 'agent'], { env: { ...process.env, STUB_LOG: log }, stdio: 'ignore' })
  t.equal(await new Promise(r => child.once('exit', r)), 3)
  t.match(readStubLog(log), [{ version: '2.0.0', slot: 'fallback' }], "the OS's 2.0.0 runs, not slot a's 1.0.0")
  t.same(readSlots(ota).state, { active: null, previous: null, trial: null, bad: [] })

  // during the OS update's trial boot, slot a keeps running as it is
  writeSlots(ota, { active: 'a', previous: null, trial: null, bad: [] })
  const record = join(tmp(), 'os-update.json')
  writeFileSync(record, JSON.stringify({ phase: 'trial', target: 'B', version: '9.0.0', armedBootId: 'x' }))
  const log2 = stubLogFor()
  const during = spawn(process.execPath, [LAUNCHER, '--ota-dir', ota, '--fallback', join(fallback, 'cairn.mjs'), '--os-record', record, '--', 'agent'], {
    env: { ...process.env, STUB_LOG: log2 },
    stdio: 'ignore',
  })
  t.equal(await new Promise(r => during.once('exit', r)), 3)
  t.match(readStubLog(log2), [{ version: '1.0.0', slot: 'a' }], 'an OS trial: slot a runs, slots.json unchanged')
  t.same(readSlots(ota).state, { active: 'a', previous: null, trial: null, bad: [] })
})

t.test('launcher: no slot yet runs the installed bundle; args, env and exit code pass through', async t => {
  const dir = tmp()
  const fallback = join(dir, 'installed')
  mkdirSync(fallback)
  writeEntries(stubTree('0.5.0', 'exit3'), fallback)
  const log = stubLogFor()
  const ota = join(dir, 'ota')
  const child = spawn(process.execPath, [LAUNCHER, '--ota-dir', ota, '--fallback', join(fallback, 'cairn.mjs'), '--', 'agent', '--fleet', 'x'], {
    env: { ...process.env, STUB_LOG: log },
    stdio: 'ignore',
  })
  const code = await new Promise(r => child.once('exit', r))
  t.equal(code, 3, "exits with the agent's code")
  t.match(readStubLog(log), [{ version: '0.5.0', slot: 'fallback', args: ['agent', '--fleet', 'x'] }])
  t.notOk(existsSync(join(ota, SLOTS_FILE)), 'nothing written while no slot exists')
  const none = spawn(process.execPath, [LAUNCHER, '--ota-dir', join(dir, 'other'), '--fallback', join(dir, 'missing.mjs')], { stdio: 'ignore' })
  t.equal(await new Promise(r => none.once('exit', r)), 1, 'nothing to start: exit 1')
  const usage = spawn(process.execPath, [LAUNCHER], { stdio: 'ignore' })
  t.equal(await new Promise(r => usage.once('exit', r)), 2)
})

t.test('launcher: a crash-looping trial is rolled back after maxAttempts; attempts are on disk before each start', async t => {
  const ota = otaDirWith({ a: 'run', b: 'crash' })
  writeSlots(ota, { active: 'b', previous: 'a', trial: { slot: 'b', version: '2.0.0', since: Date.now(), attempts: 0, maxAttempts: 3, deadlineS: 600 }, bad: [] })
  const log = stubLogFor()
  const sup = supervise({ launcher: LAUNCHER, otaDir: ota, agentArgs: ['agent'], env: { STUB_LOG: log }, restartDelayMs: 50 })
  t.teardown(() => sup.stop())
  await until(() => readStubLog(log).some(e => e.version === '1.0.0'), 15_000, 'the old version to run again')
  const starts = readStubLog(log)
  t.same(
    starts.map(e => [e.version, e.attempts]),
    [
      ['2.0.0', 1],
      ['2.0.0', 2],
      ['2.0.0', 3],
      ['1.0.0', null],
    ],
    'each start of the trial saw its attempt already counted in slots.json; the 4th start rolled back',
  )
  t.same(
    sup.exits.map(e => e.code),
    [1, 1, 1],
    'each crash ended that launcher run (systemd restarts it)',
  )
  const s = readSlots(ota).state
  t.match(s, { active: 'a', previous: null, trial: null, bad: ['2.0.0'], rollback: { version: '2.0.0', slot: 'b', reason: 'crash-loop' } })
  t.ok(
    sup.lines.some(l => /rolled back: crash-loop/.test(l)),
    'the launcher logs why',
  )
})

t.test('launcher: a trial that runs but never commits is stopped and rolled back (health-timeout)', async t => {
  // The deadline runs from `since`, written here: a launcher that starts after deadline +
  // grace rolls back before it starts the trial at all (beforeStart, tested above). On a
  // machine too busy to start it within the deadline, the run is repeated with a doubled
  // deadline until the trial got to run.
  for (let deadlineS = 1; ; deadlineS *= 2) {
    const ota = otaDirWith({ a: 'run', b: 'run' })
    const since = Date.now()
    writeSlots(ota, { active: 'b', previous: 'a', trial: { slot: 'b', version: '2.0.0', since, attempts: 0, maxAttempts: 3, deadlineS }, bad: [] })
    const log = stubLogFor()
    const sup = supervise({ launcher: LAUNCHER, otaDir: ota, graceS: 1, agentArgs: [], env: { STUB_LOG: log } })
    t.teardown(() => sup.stop())
    await until(() => readStubLog(log).some(e => e.version === '1.0.0'), 15_000 + deadlineS * 1000, 'rollback to the old version')
    const rolledBackAt = Date.now()
    t.match(readSlots(ota).state, { active: 'a', trial: null, bad: ['2.0.0'], rollback: { reason: 'health-timeout' } })
    const starts = readStubLog(log)
    if (starts[0]?.version !== '2.0.0') {
      t.comment(`the launcher started after the ${deadlineS} s deadline had passed (a busy machine): it rolled back before starting the trial; again with ${deadlineS * 2} s`)
      t.ok(deadlineS < 64, 'the trial got to start within a 64 s deadline')
      await sup.stop()
      if (deadlineS >= 64) return
      continue
    }
    t.ok(rolledBackAt - since >= (deadlineS + 1) * 1000, `rolled back after deadline + grace (${rolledBackAt - since} ms after the switch)`)
    t.same(sup.exits, [], 'within one launcher run: the old slot started at once')
    t.match(starts, [
      { version: '2.0.0', event: 'start' },
      { version: '2.0.0', event: 'SIGTERM' },
      { version: '1.0.0', event: 'start' },
    ])
    return
  }
})

t.test('launcher: a trial that commits in time is left running', async t => {
  const ota = otaDirWith({ a: 'run', b: 'commit' })
  const since = Date.now()
  writeSlots(ota, { active: 'b', previous: 'a', trial: { slot: 'b', version: '2.0.0', since, attempts: 0, maxAttempts: 3, deadlineS: 2 }, bad: [] })
  const log = stubLogFor()
  const sup = supervise({ launcher: LAUNCHER, otaDir: ota, graceS: 1, agentArgs: [], env: { STUB_LOG: log } })
  t.teardown(() => sup.stop())
  await until(() => readStubLog(log).some(e => e.event === 'committed'), 10_000, 'v2 to commit')
  await new Promise(r => setTimeout(r, Math.max(0, since + 3500 - Date.now())))
  t.match(readSlots(ota).state, { active: 'b', trial: null, bad: [] }, 'committed, not rolled back when the deadline passed')
  t.notOk(
    readStubLog(log).some(e => e.event === 'SIGTERM'),
    'the committed version was left alone',
  )
})

t.test('launcher: exit 75 re-reads slots.json without leaving the launcher', async t => {
  const ota = otaDirWith({ a: 'switch', b: 'run' })
  writeSlots(ota, { active: 'a', previous: null, trial: null, bad: [] })
  const log = stubLogFor()
  const sup = supervise({ launcher: LAUNCHER, otaDir: ota, agentArgs: [], env: { STUB_LOG: log } })
  t.teardown(() => sup.stop())
  await until(() => readStubLog(log).length >= 2, 10_000, 'two starts')
  t.same(
    readStubLog(log).map(e => e.version),
    ['1.0.0', '1.0.0'],
    'started again after exit 75',
  )
  t.same(sup.exits, [], 'the launcher itself kept running')
})

t.test('launcher: SIGTERM and SIGHUP reach the agent; the exit code comes back', async t => {
  const ota = otaDirWith({ a: 'run' })
  writeSlots(ota, { active: 'a', previous: null, trial: null, bad: [] })
  const log = stubLogFor()
  const child = spawn(process.execPath, [LAUNCHER, '--ota-dir', ota], { env: { ...process.env, STUB_LOG: log }, stdio: 'ignore' })
  await until(() => readStubLog(log).length === 1, 10_000, 'start')
  child.kill('SIGHUP')
  await until(() => readStubLog(log).some(e => e.event === 'SIGHUP'), 5000, 'SIGHUP forwarded')
  child.kill('SIGTERM')
  t.equal(await new Promise(r => child.once('exit', r)), 0)
  t.ok(
    readStubLog(log).some(e => e.event === 'SIGTERM'),
    'SIGTERM forwarded',
  )
})

t.test('launcher: damaged slots.json runs the last good slot and repairs the file; a missing trial bundle rolls back', async t => {
  const ota = otaDirWith({ a: 'run', b: 'run' })
  writeSlots(ota, { active: 'b', previous: 'a', trial: null, bad: [] })
  writeFileSync(join(ota, SLOTS_FILE), '\0\0\0')
  const log = stubLogFor()
  const child = spawn(process.execPath, [LAUNCHER, '--ota-dir', ota], { env: { ...process.env, STUB_LOG: log }, stdio: 'ignore' })
  await until(() => readStubLog(log).length === 1, 10_000, 'start')
  t.equal(readStubLog(log)[0]!.version, '2.0.0', 'the last good slot runs')
  t.same(parseSlots(readFileSync(join(ota, SLOTS_FILE), 'utf8')), { active: 'b', previous: 'a', trial: null, bad: [] }, 'file repaired')
  child.kill('SIGTERM')
  await new Promise(r => child.once('exit', r))

  rmSync(join(ota, 'slots', 'a'), { recursive: true })
  writeSlots(ota, { active: 'a', previous: 'b', trial: { slot: 'a', version: '3.0.0', since: Date.now(), attempts: 0, maxAttempts: 3, deadlineS: 60 }, bad: [] })
  const log2 = stubLogFor()
  const c2 = spawn(process.execPath, [LAUNCHER, '--ota-dir', ota], { env: { ...process.env, STUB_LOG: log2 }, stdio: 'ignore' })
  await until(() => readStubLog(log2).length === 1, 10_000, 'start')
  t.equal(readStubLog(log2)[0]!.version, '2.0.0')
  t.match(readSlots(ota).state, { active: 'b', bad: ['3.0.0'], rollback: { reason: 'missing-bundle' } })
  c2.kill('SIGTERM')
  await new Promise(r => c2.once('exit', r))
})
