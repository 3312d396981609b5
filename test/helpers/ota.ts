// OTA test helpers: stub slot trees (a tiny cairn.mjs that logs how it was started and
// behaves as told), a ReleaseChannel backed by plain files, real agent bundles built
// with cli/bundle.mjs for a given version, and a TUF repository driven through the
// `cairn release` CLI of the built bundle.

import { execFile, spawn } from 'node:child_process'
import { createHash } from 'node:crypto'
import { appendFileSync, cpSync, existsSync, mkdirSync, readFileSync, statSync, truncateSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { CairnError } from '../../protocol/errors.js'
import { packSlot } from '../../ota/slot-pack.js'
import { DirectorySlots, readSlots, writeSlots, type SlotsState } from '../../ota/slots.js'
import { packTar, type TarEntry } from '../../protocol/tar.js'
import { selectRelease } from '../../ota/tuf-channel.js'
import type { DeviceFacts, DownloadProgress, ReleaseCandidate, ReleaseChannel, ReleaseInfo } from '../../ota/release-types.js'
import { tmp } from './agent.js'
import { supervise, type Supervisor } from './supervisor.js'

const run = promisify(execFile)
export const REPO_ROOT = new URL('../..', import.meta.url).pathname
export const LAUNCHER = join(REPO_ROOT, 'ota', 'launcher.mjs')
export const DIST_BUNDLE = join(REPO_ROOT, 'dist', 'cairn.mjs')

/** A stand-in agent: logs {version, slot, args, attempts, mode} to $STUB_LOG, then acts
 * by its MODE file: exit0, crash (exit 1), run (until SIGTERM), commit (ends the trial in
 * its favour, then runs), switch (exits 75 once). */
const STUB_BUNDLE = `
import { appendFileSync, readFileSync, renameSync, writeFileSync, existsSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
const here = dirname(fileURLToPath(import.meta.url))
const version = readFileSync(join(here, 'VERSION'), 'utf8').trim()
if (process.argv[2] === '--version') { console.log(version); process.exit(0) }
let mode = 'exit0'
try { mode = readFileSync(join(here, 'MODE'), 'utf8').trim() } catch {}
const otaDir = process.env.CAIRN_OTA_DIR
let slots = null
try { slots = JSON.parse(readFileSync(join(otaDir, 'slots.json'), 'utf8')) } catch {}
const log = extra => { if (process.env.STUB_LOG) appendFileSync(process.env.STUB_LOG, JSON.stringify({ version, slot: process.env.CAIRN_SLOT, args: process.argv.slice(2), attempts: slots?.trial?.attempts ?? null, mode, ...extra }) + '\\n') }
log({ event: 'start' })
const stay = () => {
  process.on('SIGTERM', () => { log({ event: 'SIGTERM' }); process.exit(0) })
  process.on('SIGHUP', () => log({ event: 'SIGHUP' }))
  setInterval(() => {}, 1 << 30)
}
if (mode === 'crash') process.exit(1)
else if (mode === 'exit0') process.exit(0)
else if (mode === 'exit3') process.exit(3)
else if (mode === 'switch') {
  const flag = join(otaDir, 'switched-' + version)
  if (!existsSync(flag)) { writeFileSync(flag, ''); process.exit(75) }
  stay()
} else if (mode === 'commit') {
  if (slots && slots.trial) {
    slots.trial = null
    writeFileSync(join(otaDir, '.c.tmp'), JSON.stringify(slots))
    renameSync(join(otaDir, '.c.tmp'), join(otaDir, 'slots.json'))
    log({ event: 'committed' })
  }
  stay()
} else stay()
`

export function stubTree(version: string, mode: string): TarEntry[] {
  return [
    { path: 'cairn.mjs', type: 'file', mode: 0o755, data: Buffer.from(STUB_BUNDLE) },
    { path: 'VERSION', type: 'file', mode: 0o644, data: Buffer.from(version + '\n') },
    { path: 'MODE', type: 'file', mode: 0o644, data: Buffer.from(mode + '\n') },
  ]
}

/** A release archive of a stub tree, written to `dir`; returns its path. */
export function stubTar(dir: string, version: string, mode: string): string {
  mkdirSync(dir, { recursive: true })
  const file = join(dir, `stub-${version}-${mode}.tar`)
  writeFileSync(file, packTar(stubTree(version, mode)))
  return file
}

export function readStubLog(file: string): Array<{ version: string; slot: string; args: string[]; attempts: number | null; mode: string; event: string }> {
  if (!existsSync(file)) return []
  return readFileSync(file, 'utf8')
    .split('\n')
    .filter(l => l.trim() !== '')
    .map(l => JSON.parse(l))
}

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex')

/** A ReleaseChannel over plain files, with the selection rules of the TUF channel (no
 * signatures: for updater tests only). It can cut a download short once, or corrupt it. */
export class DirReleaseChannel implements ReleaseChannel {
  readonly offered: Array<{ candidate: ReleaseCandidate; file: string }> = []
  checks = 0
  downloads = 0
  bytesServed = 0
  /** The next download stops with a DOWNLOAD error after this many bytes. */
  cutAfter: number | undefined
  /** The next download delivers different bytes. */
  corruptNext = false
  /** Makes check() fail with this error. */
  failCheck: Error | undefined

  add(version: string, file: string, info: Partial<ReleaseInfo> = {}): ReleaseCandidate {
    const data = readFileSync(file)
    const candidate: ReleaseCandidate = { version, channel: 'stable', rollout: 100, kind: 'agent', ...info, targetPath: `cairn/${version}/agent.tar`, length: data.length, sha256: sha256(data) }
    this.offered.push({ candidate, file })
    return candidate
  }

  async check(facts: DeviceFacts): Promise<ReleaseCandidate | null> {
    this.checks++
    if (this.failCheck) throw this.failCheck
    return selectRelease(
      this.offered.map(o => o.candidate),
      facts,
    )
  }

  async download(c: ReleaseCandidate, file: string, onProgress?: (p: DownloadProgress) => void): Promise<void> {
    this.downloads++
    const src = this.offered.find(o => o.candidate.targetPath === c.targetPath)
    if (!src) throw new CairnError('DOWNLOAD', `404 ${c.targetPath}`)
    let data = readFileSync(src.file)
    if (this.corruptNext) {
      this.corruptNext = false
      data = Buffer.from(data)
      data[data.length - 1] = data[data.length - 1]! ^ 0xff
    }
    let have = existsSync(file) ? statSync(file).size : 0
    if (have > data.length) {
      truncateSync(file, 0)
      have = 0
    }
    const chunk = 4096
    for (let pos = have; pos < data.length; pos += chunk) {
      if (this.cutAfter !== undefined && pos - have >= this.cutAfter) {
        this.cutAfter = undefined
        throw new CairnError('DOWNLOAD', `connection reset after ${pos - have} bytes`)
      }
      const part = data.subarray(pos, Math.min(data.length, pos + chunk))
      appendFileSync(file, part)
      this.bytesServed += part.length
      onProgress?.({ bytes: pos + part.length, total: data.length, refetched: 0 })
    }
    const got = readFileSync(file)
    if (got.length !== c.length || sha256(got) !== c.sha256) throw new CairnError('TARGET_MISMATCH', 'length or sha256 differs from the signed metadata')
  }
}

/** Builds the agent bundle (or another entry) for `version` into a fresh directory. */
export async function buildBundle(version: string, opts: { entry?: string; dir?: string } = {}): Promise<string> {
  const dir = opts.dir ?? tmp(`cairn-build-${version}-`)
  const outfile = join(dir, 'cairn.mjs')
  await run(process.execPath, [join(REPO_ROOT, 'cli', 'bundle.mjs'), '--outfile', outfile, ...(opts.entry ? ['--entry', opts.entry] : [])], {
    env: { ...process.env, CAIRN_VERSION: version },
    timeout: 120_000,
  })
  return outfile
}

/** `cairn release …` through the built bundle (dist/cairn.mjs). */
export async function cairnRelease(args: string[]): Promise<string> {
  const { stdout } = await run(process.execPath, [DIST_BUNDLE, 'release', ...args], { timeout: 60_000 })
  return stdout
}

export interface TestRepo {
  dir: string
  /** The trusted root to ship with the agent (--release-root). */
  root: string
  url: string
  /** `cairn release add` of one file. */
  add(version: string, file: string, channel?: string): Promise<void>
  close(): Promise<void>
}

/** A TUF repository made with `cairn release init`, served by `cairn release serve`
 * (a real process) on a free loopback port. */
export async function startRepo(): Promise<TestRepo> {
  const dir = join(tmp('cairn-repo-'), 'repo')
  await cairnRelease(['init', '--repo', dir])
  const server = spawn(process.execPath, [DIST_BUNDLE, 'release', 'serve', '--repo', dir, '--port', '0'], { stdio: ['ignore', 'pipe', 'pipe'] })
  const url = await new Promise<string>((resolve, reject) => {
    let out = ''
    server.stderr!.on('data', (d: Buffer) => (out += d.toString()))
    // Generous (a loaded machine starts the bundle slowly); a server that never says
    // where it listens is killed, or it would keep the test process alive to its timeout.
    const timer = setTimeout(() => {
      server.kill('SIGKILL')
      reject(new Error(`cairn release serve did not start within 60 s: ${out}`))
    }, 60_000)
    server.stdout!.on('data', (d: Buffer) => {
      out += d.toString()
      const m = /--release-url (http:\/\/127\.0\.0\.1:\d+)/.exec(out)
      if (m) {
        clearTimeout(timer)
        resolve(m[1]!)
      }
    })
    server.once('exit', code => {
      clearTimeout(timer)
      reject(new Error(`cairn release serve exited with ${code}: ${out}`))
    })
  })
  return {
    dir,
    root: join(dir, 'published', 'metadata', '1.root.json'),
    url,
    add: async (version, file, channel = 'stable') => {
      await cairnRelease(['add', '--repo', dir, '--version', version, '--channel', channel, file])
    },
    close: async () => {
      if (server.exitCode !== null) return
      await new Promise<void>(resolve => {
        server.once('exit', () => resolve())
        server.kill('SIGTERM')
      })
    },
  }
}

/** A release target file (tar of a slot tree) for a built bundle. */
export function packTarget(dir: string, bundle: string, version: string, extra: Record<string, string> = {}): string {
  mkdirSync(dir, { recursive: true })
  const file = join(dir, `cairn-agent-${version}${Object.keys(extra).length ? '-' + Object.values(extra).join('-') : ''}.tar`)
  writeFileSync(file, packSlot({ bundle, version, extra }))
  return file
}

/** An unpacked slot tree of `target` (for installing "v1 in slot a" quickly). */
export async function unpackedTree(target: string, version: string): Promise<string> {
  const dir = tmp('cairn-tree-')
  const slots = new DirectorySlots(dir)
  const slot = await slots.stage(target, { version, running: null })
  return slots.slotDir(slot)
}

export interface TestDevice {
  stateDir: string
  otaDir: string
  sup: Supervisor
  slots(): SlotsState
  stop(): Promise<void>
  kill(): Promise<void>
}

/** A device as on Cairn OS: `tree` installed in slot a (committed), the agent started
 * by the launcher under a supervisor, following `repo`. */
export function startDevice(o: {
  tree: string
  brokerUrl: string
  fleet: string
  repo: { url: string; root: string }
  channel?: string
  /** The agent's MQTT version (default 5). */
  mqttVersion?: 4 | 5
  set?: string[]
  env?: NodeJS.ProcessEnv
  graceS?: number
  onLine?: (line: string) => void
}): TestDevice {
  const stateDir = tmp('cairn-dev-')
  const otaDir = join(stateDir, 'ota')
  mkdirSync(join(otaDir, 'slots'), { recursive: true })
  cpSync(o.tree, join(otaDir, 'slots', 'a'), { recursive: true })
  writeSlots(otaDir, { active: 'a', previous: null, trial: null, bad: [] })
  const agentArgs = [
    'agent',
    '--broker',
    o.brokerUrl,
    '--mqtt-version',
    String(o.mqttVersion ?? 5),
    '--fleet',
    o.fleet,
    '--state-dir',
    stateDir,
    '--health-port',
    '0',
    '--telemetry-period',
    '3600',
    '--release-url',
    o.repo.url,
    '--release-root',
    o.repo.root,
    '--channel',
    o.channel ?? 'stable',
    '--set',
    'proof.enabled=false',
    '--set',
    'broker.reconnectMinMs=200',
    ...(o.set ?? []).flatMap(s => ['--set', s]),
  ]
  const sup = supervise({
    launcher: LAUNCHER,
    otaDir,
    agentArgs,
    ...(o.graceS !== undefined ? { graceS: o.graceS } : {}),
    ...(o.env ? { env: o.env } : {}),
    ...(o.onLine ? { onLine: o.onLine } : {}),
    restartDelayMs: 200,
  })
  return { stateDir, otaDir, sup, slots: () => readSlots(otaDir).state, stop: () => sup.stop(), kill: () => sup.kill() }
}
