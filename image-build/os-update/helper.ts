// The privileged half of OS updates: a root helper (cairn-os-update.service) that performs
// what the unprivileged agent asks for through one request file in the agent's own state
// dir (/var/lib/cairn/agent/os-update/request.json, watched by cairn-os-update.path). It
// drives the tryboot planner/executor (plan.ts, execute.ts) and publishes the outcome in
// root's own directory (/var/lib/cairn/os), which the agent can read but not write.
//
// The request is untrusted input from another user: it is read without following links,
// size-capped and validated, and a release image it names must be a plain file inside
// the agent's state dir. Nothing is ever written into the agent's directory (a link the
// agent planted there must not redirect a root write); the request is only unlinked.
// Nor is the agent's word taken for what the image is: before a write the helper checks
// the named TUF target itself (verify.ts) and writes only bytes that hash to it.

import { closeSync, constants, fstatSync, openSync, readSync, realpathSync, unlinkSync } from 'node:fs'
import { sep } from 'node:path'
import type { Slot } from './autoboot.js'
import { readRecord, runUpdate, writeAtomic, type HealthVerdict, type UpdatePorts, type UpdateRun } from './execute.js'
import { ReleaseFormatError } from './release-format.js'
import { VerifyError } from './verify-error.js'
import type { Verified } from './write-slot.js'

export const REQUEST_FILE = 'request.json'
const MAX_REQUEST_BYTES = 16 * 1024
const VERSION_RE = /^[0-9A-Za-z.+-]{1,64}$/
/** A TUF target path as `cairn release add` names them. */
const TARGET_RE = /^[A-Za-z0-9._+-]+(\/[A-Za-z0-9._+-]+)*$/
export const CAPABILITY_FILE = 'os-update-capability.json'
/** The step that shows a request was carried out. */
const EXPECTED: Readonly<Record<Request['op'], readonly string[]>> = { write: ['write-slot'], arm: ['reboot-tryboot'], commit: ['commit'], reject: ['reboot', 'mark-failed'] }

export type Request =
  | { readonly op: 'write'; readonly version: string; readonly image: string; readonly target: string }
  | { readonly op: 'arm'; readonly version: string }
  | { readonly op: 'commit'; readonly version: string }
  | { readonly op: 'reject'; readonly version: string; readonly reason: string }

export interface HelperResult {
  readonly op: Request['op'] | 'boot' | 'deadline'
  readonly version?: string
  readonly ok: boolean
  readonly error?: string
  /** the refusal will not change by asking again (a bad request, a release that does
   * not verify or is not well formed): the agent gives this version up */
  readonly permanent?: boolean
  readonly steps: readonly string[]
  readonly at: string
}

/** How this device can hand the one-shot tryboot flag to the firmware. */
export type TrybootMethod = 'kernel' | 'module' | 'stand-in'

export interface Capability {
  /** null: it cannot, and OS updates are off (`detail` says why) */
  readonly tryboot: TrybootMethod | null
  readonly detail: string
  /** whether the image has a release channel the helper can verify against */
  readonly channel: boolean
  /** the boot it was found in (a file from an earlier boot says nothing of this one) */
  readonly bootId: string
  readonly at: string
}

export interface HelperPorts extends Omit<UpdatePorts, 'healthCheck' | 'writeSlot' | 'rebootTryboot'> {
  /** the agent's request dir (its state dir's os-update/) */
  readonly requestDir: string
  /** where release images may be (the agent's state dir) */
  readonly imageRoot: string
  /** root's result file, readable by the agent */
  readonly resultFile: string
  readonly now: () => Date
  readonly log: (line: string) => void
  /** root's file telling the agent whether OS updates can work here */
  readonly capabilityFile: string
  /** How the tryboot flag reaches the firmware on this device, probed once per start:
   * the Raspberry Pi kernel's own reboot notifier, Cairn's cairn_tryboot module (for
   * Debian's kernels), or the boot test's firmware stand-in; null when none works. */
  readonly probeTryboot: () => Promise<{ method: TrybootMethod | null; detail: string }>
  /** sets the flag the way `method` does, then reboots */
  readonly rebootTryboot: (method: TrybootMethod) => Promise<void>
  /** the TUF check of a write request (verify.ts); throws when it does not verify */
  readonly verifyRelease: ((req: { targetPath: string; version: string }) => Promise<Verified>) | undefined
}

export type SlotWriter = (image: string, target: Slot, version: string, verified: Verified) => Promise<void>

class RequestError extends Error {
  override readonly name = 'RequestError'
}

/** Reads and removes the pending request; undefined when there is none. */
function takeRequest(dir: string): unknown {
  const file = `${dir}/${REQUEST_FILE}`
  let fd: number
  try {
    fd = openSync(file, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined
    unlinkQuietly(file)
    throw new RequestError(`request unreadable (${(err as NodeJS.ErrnoException).code}): not a plain file?`)
  }
  try {
    const st = fstatSync(fd)
    if (!st.isFile()) throw new RequestError('request is not a plain file')
    if (st.size > MAX_REQUEST_BYTES) throw new RequestError(`request is ${st.size} bytes (at most ${MAX_REQUEST_BYTES})`)
    const buf = Buffer.alloc(st.size)
    const n = readSync(fd, buf, 0, st.size, 0)
    try {
      return JSON.parse(buf.subarray(0, n).toString('utf8')) as unknown
    } catch {
      throw new RequestError('request is not JSON')
    }
  } finally {
    closeSync(fd)
    unlinkQuietly(file)
  }
}

/** Validates a request; a release image must resolve to a plain file under imageRoot. */
function parseRequest(v: unknown, imageRoot: string): Request {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new RequestError('request must be a JSON object')
  const r = v as Record<string, unknown>
  const version = r.version
  if (typeof version !== 'string' || !VERSION_RE.test(version)) throw new RequestError(`request.version: not a version: ${JSON.stringify(version)?.slice(0, 80)}`)
  switch (r.op) {
    case 'arm':
    case 'commit':
      return { op: r.op, version }
    case 'reject':
      if (typeof r.reason !== 'string' || r.reason.length > 300) throw new RequestError('request.reason: text of at most 300 characters')
      return { op: 'reject', version, reason: r.reason }
    case 'write': {
      if (typeof r.image !== 'string') throw new RequestError('request.image: a file name')
      if (typeof r.target !== 'string' || r.target.length > 255 || !TARGET_RE.test(r.target) || r.target.split('/').includes('..'))
        throw new RequestError(`request.target: a TUF target path: ${JSON.stringify(r.target)?.slice(0, 80)}`)
      let real: string
      try {
        real = realpathSync(r.image)
      } catch {
        throw new RequestError(`request.image: no such file: ${r.image.slice(0, 200)}`)
      }
      const root = realpathSync(imageRoot)
      if (!real.startsWith(root + sep)) throw new RequestError(`request.image: must be inside ${root}`)
      return { op: 'write', version, image: real, target: r.target }
    }
    default:
      throw new RequestError(`request.op: one of write, arm, commit, reject; got ${JSON.stringify(r.op)?.slice(0, 40)}`)
  }
}

/** A refusal that asking again will not change. */
class Unavailable extends Error {
  override readonly name = 'Unavailable'
}

const isPermanent = (err: unknown) => err instanceof RequestError || err instanceof VerifyError || err instanceof ReleaseFormatError || err instanceof Unavailable

/** What the helper does for one start: `request`, the agent's request (cairn-os-update.path);
 * `boot`, the boot-time run (cairn-os-boot.service, before the agent: records a trial that
 * fell back, and drops a request left from before the reboot, which the agent will make
 * again if it still wants it); `deadline`, ends a trial boot that nobody committed. Each
 * start also says in the capability file whether OS updates can work here. The outcome
 * goes to the result file. */
export async function runHelper(p: HelperPorts, mode: 'request' | 'boot' | 'deadline', writeSlot: SlotWriter): Promise<HelperResult> {
  let req: Request | undefined
  let asked: string | undefined
  let op: HelperResult['op'] = mode === 'deadline' ? 'deadline' : 'boot'
  const finish = (r: Omit<HelperResult, 'at'>): HelperResult => {
    const result = { ...r, at: p.now().toISOString() }
    writeAtomic(p.resultFile, JSON.stringify(result) + '\n')
    p.log(`${result.op}${result.version ? ` ${result.version}` : ''}: ${result.ok ? 'ok' : `failed: ${result.error}`} (${result.steps.join(', ') || 'nothing to do'})`)
    return result
  }
  try {
    // the request first: whatever fails below, it is not left to trigger the path unit again
    const raw = mode === 'deadline' ? undefined : takeRequest(p.requestDir)
    if (mode === 'boot' && raw !== undefined) p.log(`dropped a request left from before the reboot (${JSON.stringify(raw)?.slice(0, 120)}): the agent asks again if it still wants it`)
    const probe = await p.probeTryboot()
    const capability: Capability = { tryboot: probe.method, detail: probe.detail, channel: p.verifyRelease !== undefined, bootId: p.bootId(), at: p.now().toISOString() }
    writeAtomic(p.capabilityFile, JSON.stringify(capability) + '\n')
    if (mode === 'request') {
      if (raw !== undefined) {
        // A refused request is still answered as itself, so the agent waiting for it hears.
        const r = raw as Record<string, unknown> | null
        if (typeof r === 'object' && r !== null && typeof r.op === 'string' && r.op in EXPECTED && typeof r.version === 'string' && VERSION_RE.test(r.version)) {
          op = r.op as Request['op']
          asked = r.version
        }
        req = parseRequest(raw, p.imageRoot)
        op = req.op
      }
    } else if (mode === 'boot') p.log(`tryboot: ${probe.method ?? 'unavailable'} (${probe.detail})`)
    // Without the flag the reboot would be an ordinary one: the trial would never run and
    // the update would be recorded as failed. Say why instead.
    if ((req?.op === 'arm' || req?.op === 'write') && !probe.method)
      throw new Unavailable(`this device cannot pass the tryboot flag to the firmware, so an OS update could never be tried: ${probe.detail} (docs/image.md, "OS updates")`)
    // arm, commit and reject name the update they are about: check before acting on it
    if (req && req.op !== 'write') {
      const rec = readRecord(p.recordFile)
      if (!rec) throw new RequestError(`nothing to ${req.op}: the update record is empty`)
      if (rec.version !== req.version) throw new RequestError(`the update in progress is ${rec.version}, not ${req.version}`)
    }
    let verified: Verified | undefined
    if (req?.op === 'write') {
      const rec = readRecord(p.recordFile)
      const done = rec?.phase === 'written' && rec.version === req.version
      if (!done) {
        if (!p.verifyRelease) throw new Unavailable('this image has no release channel (built without --release-root/--release-url), so the helper cannot verify an OS release and writes none')
        verified = await p.verifyRelease({ targetPath: req.target, version: req.version })
      }
    }
    const image = req?.op === 'write' ? req.image : undefined
    const verdict: HealthVerdict =
      req?.op === 'commit'
        ? { ok: true }
        : req?.op === 'reject'
          ? { ok: false, reason: req.reason }
          : mode === 'deadline'
            ? { ok: false, reason: 'no commit within the trial deadline' }
            : { pending: true }
    const ports: UpdatePorts = {
      ...p,
      rebootTryboot: () => p.rebootTryboot(probe.method!),
      healthCheck: async () => verdict,
      writeSlot: async (target, version) => {
        if (image === undefined || verified === undefined) throw new Error('the slot write was interrupted: the agent must ask again with the image')
        await writeSlot(image, target, version, verified)
      },
    }
    let run: UpdateRun
    if (req?.op === 'write') run = await runUpdate(ports, { version: req.version }, { stopBefore: ['arm'] })
    else if (req?.op === 'arm') run = await runUpdate(ports, undefined, { stopBefore: ['write-slot'] })
    else run = await runUpdate(ports, undefined, { stopBefore: ['write-slot', 'arm'] })
    const steps = run.steps.map(s => s.kind)
    const after = run.record
    if (req && after && req.version !== after.version && req.op !== 'write')
      return finish({ op, version: req.version, ok: false, error: `the update in progress is ${after.version}, not ${req.version}`, steps })
    // asked again after the step was done (the agent restarted): done, not an error
    const already = after?.version === req?.version && ((req?.op === 'write' && after?.phase === 'written') || (req?.op === 'commit' && after?.phase === 'committed'))
    const expected = req ? EXPECTED[req.op] : []
    if (req && !already && !steps.some(k => expected.includes(k)))
      return finish({ op, version: req.version, ok: false, error: `nothing to ${req.op}: the update record is ${after?.phase ?? 'empty'}`, steps })
    return finish({ op, ...(req ? { version: req.version } : {}), ok: true, steps })
  } catch (err) {
    // A release that cannot be written is not left half written as "writing": the next
    // boot would keep it, and it is no candidate any more.
    if (req?.op === 'write' && isPermanent(err)) {
      const rec = readRecord(p.recordFile)
      if (rec?.phase === 'writing' && rec.version === req.version)
        writeAtomic(p.recordFile, JSON.stringify({ ...rec, phase: 'failed', reason: `the slot write failed: ${(err as Error).message}`.slice(0, 300) }) + '\n')
    }
    const version = req?.version ?? asked
    return finish({ op, ...(version ? { version } : {}), ok: false, error: (err as Error).message, ...(isPermanent(err) ? { permanent: true } : {}), steps: [] })
  }
}

function unlinkQuietly(file: string): void {
  try {
    unlinkSync(file)
  } catch {
    // already gone
  }
}
