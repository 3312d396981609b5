#!/usr/bin/env node
// The Cairn launcher: the one piece of the agent that lives OUTSIDE the A/B slots, so
// that a broken release cannot break its own rollback. Plain JavaScript importing only
// node:* modules; it never loads anything from a slot. It is copied beside the bundle on
// its own, so it cannot share code with the TypeScript: it keeps its own copies of the
// slots.json rules (ota/slots.ts), the atomic write (protocol/durable-files.ts) and the
// version order (protocol/semver.ts), and test/ota/slots.test.ts holds each copy to
// the original.
//
//   node launcher.mjs --ota-dir DIR [--fallback FILE] [--grace-s S] [--os-record FILE] -- <agent args>
//
// Each start it reads DIR/slots.json (same rules as ota/slots.ts: validated, falling
// back to the last good state, then to no slot). If a trial is pending it counts the
// start (written to disk BEFORE the agent starts) and, past maxAttempts, rolls back:
// the previous slot becomes active again and the version is marked bad ("crash-loop").
// It also watches the trial's deadline: an agent that runs but never commits is
// stopped and rolled back ("health-timeout") deadline + grace seconds after the switch
// (SIGTERM, then SIGKILL KILL_AFTER_S later).
// Then it runs `node DIR/slots/<active>/cairn.mjs <agent args>` (or the --fallback
// bundle while no slot is installed) with CAIRN_SLOT and CAIRN_OTA_DIR set. A fallback
// bundle newer than the committed slot's (an OS update brought it: its VERSION file sits
// beside it) takes over: slots.json is set to no slot first, so the agent and this
// launcher agree on what runs, and agent updates continue from that version; but not
// while an OS update is on trial (--os-record, Cairn OS's update record, says so): a
// trial that fails must find the agent it left. It forwards
// SIGTERM/SIGINT/SIGHUP, and exits with the agent's code. Exit code 75 from the agent
// means "slots.json changed, start again now" and is handled here; systemd's
// Restart=always handles everything else (every start of the launcher is one attempt).

import { spawn } from 'node:child_process'
import { closeSync, existsSync, fsyncSync, mkdirSync, openSync, readFileSync, realpathSync, renameSync, rmSync, writeSync } from 'node:fs'
import { constants } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'

export const EXIT_SWITCH = 75
export const SLOTS_FILE = 'slots.json'
export const GOOD_FILE = 'slots.good.json'
/** Seconds past a trial's deadline before the launcher stops it: time for the agent to
 * roll back by itself (it checks its health every second, and the rollback is two small
 * writes). With the default deadline (ota.healthDeadlineS 30) and the SIGKILL below, a
 * hung trial is gone within 40 s of its switch, so the old version is back online
 * within a minute (docs/ota.md, "Sizing the health deadline"). */
export const DEFAULT_GRACE_S = 5
/** Seconds from SIGTERM to SIGKILL for a trial stopped past its deadline. */
export const KILL_AFTER_S = 5
const VERSION_RE = /^[0-9A-Za-z.+-]{1,64}$/

const isSlot = v => v === 'a' || v === 'b'
const isInt = (v, min) => Number.isSafeInteger(v) && v >= min
const isObj = v => typeof v === 'object' && v !== null && !Array.isArray(v)

/** The same acceptance rules as SlotsStateSchema in ota/slots.ts. */
export function validSlots(v) {
  if (!isObj(v)) return false
  if (!(v.active === null || isSlot(v.active))) return false
  if (!(v.previous === null || isSlot(v.previous))) return false
  if (!Array.isArray(v.bad) || v.bad.length > 1000 || !v.bad.every(b => typeof b === 'string' && VERSION_RE.test(b))) return false
  if (v.trial !== null) {
    const t = v.trial
    if (!isObj(t) || !isSlot(t.slot) || typeof t.version !== 'string' || !VERSION_RE.test(t.version)) return false
    if (!isInt(t.since, 0) || !isInt(t.attempts, 0) || !isInt(t.maxAttempts, 1) || !isInt(t.deadlineS, 1)) return false
    if (t.slot !== v.active) return false
  }
  if (v.rollback !== undefined) {
    const r = v.rollback
    if (!isObj(r) || typeof r.version !== 'string' || !VERSION_RE.test(r.version) || typeof r.reason !== 'string' || r.reason.length > 200 || !isInt(r.at, 0)) return false
    if (r.slot !== undefined && !isSlot(r.slot)) return false
  }
  return true
}

export function parseSlots(text) {
  try {
    const v = JSON.parse(text)
    return validSlots(v) ? v : null
  } catch {
    return null
  }
}

/** slots.json, else the last good state (without a trial), else no slot. */
export function readSlots(dir) {
  let damaged = false
  for (const [file, source] of [
    [SLOTS_FILE, 'slots'],
    [GOOD_FILE, 'good'],
  ]) {
    let text
    try {
      text = readFileSync(join(dir, file), 'utf8')
    } catch {
      continue
    }
    const state = parseSlots(text)
    if (state) return { state: source === 'good' ? { ...state, trial: null } : state, source, damaged }
    damaged = true
  }
  return { state: { active: null, previous: null, trial: null, bad: [] }, source: 'default', damaged }
}

function fsyncDir(dir) {
  try {
    const fd = openSync(dir, 'r')
    try {
      fsyncSync(fd)
    } finally {
      closeSync(fd)
    }
  } catch {
    // best effort
  }
}

function writeAtomic(dir, file, text) {
  const tmp = join(dir, `.${file}.${process.pid}.tmp`)
  rmSync(tmp, { force: true })
  const fd = openSync(tmp, 'wx', 0o644)
  try {
    writeSync(fd, text)
    fsyncSync(fd)
  } finally {
    closeSync(fd)
  }
  renameSync(tmp, join(dir, file))
  fsyncDir(dir)
}

export function writeSlots(dir, state) {
  if (!validSlots(state)) throw new Error(`refusing to write an invalid slots state: ${JSON.stringify(state)}`)
  mkdirSync(dir, { recursive: true, mode: 0o755 })
  const text = JSON.stringify(state, null, 2) + '\n'
  writeAtomic(dir, SLOTS_FILE, text)
  if (!state.trial) writeAtomic(dir, GOOD_FILE, text)
}

/** Same rule as rolledBack() in ota/slots.ts. */
export function rolledBack(state, version, reason, now) {
  const onTrial = state.trial !== null && state.trial.version === version
  return {
    ...state,
    active: onTrial ? state.previous : state.active,
    previous: onTrial ? null : state.previous,
    trial: onTrial ? null : state.trial,
    bad: state.bad.includes(version) ? state.bad : [...state.bad, version],
    rollback: { version, ...(onTrial ? { slot: state.trial.slot } : {}), reason: reason.slice(0, 200), at: now },
  }
}

/** Semantic version precedence (semver.org item 11), or null when either is not one;
 * the same rules as protocol/semver.ts (test/ota/slots.test.ts holds them together). */
export function compareVersions(a, b) {
  const id = '(?:0|[1-9]\\d*|\\d*[A-Za-z-][0-9A-Za-z-]*)'
  const re = new RegExp(`^(0|[1-9]\\d*)\\.(0|[1-9]\\d*)\\.(0|[1-9]\\d*)(?:-(${id}(?:\\.${id})*))?(?:\\+[0-9A-Za-z-]+(?:\\.[0-9A-Za-z-]+)*)?$`)
  const pa = re.exec(a)
  const pb = re.exec(b)
  if (!pa || !pb) return null
  for (let i = 1; i <= 3; i++) if (Number(pa[i]) !== Number(pb[i])) return Number(pa[i]) < Number(pb[i]) ? -1 : 1
  if (pa[4] === undefined || pb[4] === undefined) return pa[4] === pb[4] ? 0 : pa[4] === undefined ? 1 : -1
  const xa = pa[4].split('.')
  const xb = pb[4].split('.')
  for (let i = 0; i < Math.max(xa.length, xb.length); i++) {
    if (xa[i] === undefined) return -1
    if (xb[i] === undefined) return 1
    const na = /^\d+$/.test(xa[i])
    const nb = /^\d+$/.test(xb[i])
    if (na && nb && Number(xa[i]) !== Number(xb[i])) return Number(xa[i]) < Number(xb[i]) ? -1 : 1
    if (na !== nb) return na ? -1 : 1
    if (!na && xa[i] !== xb[i]) return xa[i] < xb[i] ? -1 : 1
  }
  return 0
}

/** Pure: whether the fallback bundle (version `fallbackVersion`) should run instead of
 * the committed slot holding `slotVersion`; the state to write when it should. */
export function preferNewerFallback(state, slotVersion, fallbackVersion, osOnTrial = false) {
  if (osOnTrial || state.trial || !state.active || !slotVersion || !fallbackVersion) return null
  if (compareVersions(fallbackVersion, slotVersion) !== 1) return null
  return { ...state, active: null, previous: null }
}

/** Whether Cairn OS's update record says a trial is on (image-build/os-update/tryboot-plan.ts). */
function osOnTrial(file) {
  if (!file) return false
  try {
    return JSON.parse(readFileSync(file, 'utf8')).phase === 'trial'
  } catch {
    return false
  }
}

function readVersion(file) {
  try {
    return readFileSync(file, 'utf8').trim()
  } catch {
    return undefined
  }
}

/** Pure: the state to write before a start, and whether a rollback happened. */
export function beforeStart(state, now, graceMs) {
  const t = state.trial
  if (!t) return { state, changed: false }
  const attempts = t.attempts + 1
  if (attempts > t.maxAttempts) return { state: rolledBack(state, t.version, 'crash-loop', now), changed: true, rollback: 'crash-loop' }
  if (now > t.since + t.deadlineS * 1000 + graceMs) return { state: rolledBack(state, t.version, 'health-timeout', now), changed: true, rollback: 'health-timeout' }
  return { state: { ...state, trial: { ...t, attempts } }, changed: true }
}

/** How long the trial may still run in this start, ms (clamped: a clock that jumped
 * back must not stretch the window). */
export function trialRemainingMs(trial, now, graceMs) {
  const full = trial.deadlineS * 1000 + graceMs
  return Math.max(0, Math.min(full, trial.since + full - now))
}

function log(level, msg, extra = {}) {
  const levels = { info: 30, warn: 40, error: 50 }
  process.stdout.write(JSON.stringify({ level: levels[level], time: Date.now(), mod: 'launcher', ...extra, msg }) + '\n')
}

function parseArgs(argv) {
  const sep = argv.indexOf('--')
  const own = sep === -1 ? argv : argv.slice(0, sep)
  const agentArgs = sep === -1 ? [] : argv.slice(sep + 1)
  const opts = { otaDir: undefined, fallback: undefined, graceS: DEFAULT_GRACE_S, node: process.execPath, osRecord: undefined, agentArgs }
  for (let i = 0; i < own.length; i++) {
    const a = own[i]
    const val = () => {
      const v = own[++i]
      if (v === undefined) throw new Error(`${a} needs a value`)
      return v
    }
    if (a === '--ota-dir') opts.otaDir = val()
    else if (a === '--fallback') opts.fallback = val()
    else if (a === '--grace-s') opts.graceS = Number(val())
    else if (a === '--node') opts.node = val()
    else if (a === '--os-record') opts.osRecord = val()
    else throw new Error(`unknown option ${a}`)
  }
  if (!opts.otaDir) throw new Error('--ota-dir DIR is required')
  if (!(opts.graceS >= 0)) throw new Error('--grace-s must be a number of seconds')
  if (opts.fallback === undefined) {
    const beside = join(dirname(fileURLToPath(import.meta.url)), 'cairn.mjs')
    if (existsSync(beside)) opts.fallback = beside
  }
  return opts
}

const signalNumber = sig => constants.signals[sig] ?? 0

export async function main(argv) {
  let opts
  try {
    opts = parseArgs(argv)
  } catch (err) {
    process.stderr.write(`cairn launcher: ${err.message}\nusage: node launcher.mjs --ota-dir DIR [--fallback FILE] [--grace-s S] [--os-record FILE] -- <agent args>\n`)
    return 2
  }
  const dir = opts.otaDir
  const graceMs = opts.graceS * 1000
  mkdirSync(dir, { recursive: true, mode: 0o755 })
  let child
  let stopping = false
  // Exit 75 restarts at once; an agent that kept asking for it (a bug) must not spin.
  const switches = []
  for (const sig of ['SIGTERM', 'SIGINT', 'SIGHUP']) {
    process.on(sig, () => {
      if (sig !== 'SIGHUP') stopping = true
      if (child && child.exitCode === null && child.signalCode === null) child.kill(sig)
      else if (stopping) process.exit(128 + signalNumber(sig))
    })
  }
  for (;;) {
    const read = readSlots(dir)
    let state = read.state
    if (read.source !== 'slots' && (read.damaged || read.source === 'good')) {
      log('warn', `slots.json missing or damaged: using the ${read.source === 'good' ? 'last good state' : 'installed bundle'}`, { source: read.source })
      writeSlots(dir, state)
    }
    const d = beforeStart(state, Date.now(), graceMs)
    if (d.changed) writeSlots(dir, d.state)
    state = d.state
    if (d.rollback) log('warn', `trial of ${read.state.trial.version} rolled back: ${d.rollback}`, { version: read.state.trial.version, reason: d.rollback, active: state.active ?? 'fallback' })
    if (opts.fallback && state.active) {
      const slotVersion = readVersion(join(dir, 'slots', state.active, 'VERSION'))
      const fallbackVersion = readVersion(join(dirname(opts.fallback), 'VERSION'))
      const newer = preferNewerFallback(state, slotVersion, fallbackVersion, osOnTrial(opts.osRecord))
      if (newer) {
        writeSlots(dir, newer)
        log('info', `the installed bundle ${fallbackVersion} is newer than slot ${state.active}'s ${slotVersion} (an OS update brought it): starting it`, {
          slot: state.active,
          slotVersion,
          fallbackVersion,
        })
        state = newer
      }
    }
    let entry = opts.fallback
    if (state.active) {
      const bundle = join(dir, 'slots', state.active, 'cairn.mjs')
      if (existsSync(bundle)) entry = bundle
      else if (state.trial) {
        writeSlots(dir, rolledBack(state, state.trial.version, 'missing-bundle', Date.now()))
        log('error', `slot ${state.active} has no cairn.mjs: trial rolled back`)
        continue
      } else log('error', `slot ${state.active} has no cairn.mjs: starting the installed bundle`)
    }
    if (!entry || !existsSync(entry)) {
      log('error', 'nothing to start: no slot is installed and no --fallback bundle exists')
      return 1
    }
    if (state.trial) log('info', `starting ${state.trial.version} from slot ${state.active} on trial (attempt ${state.trial.attempts} of ${state.trial.maxAttempts})`)
    const trial = state.trial
    const started = spawn(opts.node, [entry, ...opts.agentArgs], {
      stdio: 'inherit',
      env: { ...process.env, CAIRN_SLOT: state.active ?? 'fallback', CAIRN_OTA_DIR: dir },
    })
    child = started
    let timedOut = false
    let killTimer
    const deadline = trial
      ? setTimeout(
          () => {
            const now = readSlots(dir).state
            if (!now.trial || now.trial.version !== trial.version) return
            timedOut = true
            log('warn', `trial of ${trial.version} did not commit within ${trial.deadlineS} s (+${opts.graceS} s grace): stopping it`)
            started.kill('SIGTERM')
            killTimer = setTimeout(() => started.kill('SIGKILL'), KILL_AFTER_S * 1000)
          },
          trialRemainingMs(trial, Date.now(), graceMs),
        )
      : undefined
    const { code, signal } = await new Promise(resolve => {
      started.once('error', err => {
        log('error', `cannot start ${entry}: ${err.message}`)
        resolve({ code: 127, signal: null })
      })
      started.once('exit', (code, signal) => resolve({ code, signal }))
    })
    clearTimeout(deadline)
    clearTimeout(killTimer)
    child = undefined
    const status = code ?? 128 + signalNumber(signal)
    if (timedOut) {
      // Decided only now that the agent is gone: it may have committed at the last moment.
      const now = readSlots(dir).state
      if (now.trial && now.trial.version === trial.version) {
        writeSlots(dir, rolledBack(now, trial.version, 'health-timeout', Date.now()))
        log('warn', `trial of ${trial.version} rolled back: health-timeout`, { version: trial.version, reason: 'health-timeout' })
      }
      if (!stopping) continue
    }
    if (stopping) return status
    if (code === EXIT_SWITCH) {
      const now = Date.now()
      switches.push(now)
      while (switches.length > 0 && switches[0] < now - 60_000) switches.shift()
      if (switches.length > 5) {
        log('warn', `the agent asked to be started again ${switches.length} times within a minute: waiting 10 s`)
        await new Promise(r => setTimeout(r, 10_000))
      }
      if (stopping) return status
      continue
    }
    log(status === 0 ? 'info' : 'warn', `agent exited with ${signal ?? code}`)
    return status
  }
}

function isMain() {
  try {
    return process.argv[1] !== undefined && import.meta.url === pathToFileURL(realpathSync(process.argv[1])).href
  } catch {
    return false
  }
}

if (isMain()) {
  main(process.argv.slice(2)).then(
    code => process.exit(code),
    err => {
      process.stderr.write(`cairn launcher: ${err?.stack ?? err}\n`)
      process.exit(70)
    },
  )
}
