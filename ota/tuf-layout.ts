// Where a Cairn TUF repository keeps things, how metadata is written, and TUF's time
// format. Layout (consistent_snapshot: every file a client fetches, except timestamp.json,
// is named by version or hash, so a mirror can be updated file by file while clients read):
//
//   <repo>/cairn-release.json             settings (expiry periods); not published
//   <repo>/.lock                          held while a command signs
//   <repo>/keys/<role>.<keyid>.key        private keys, 0600; never published
//   <repo>/published/metadata/<n>.root.json
//   <repo>/published/metadata/<v>.targets.json, <v>.snapshot.json, timestamp.json
//   <repo>/published/targets/<dir>/<sha256>.<basename>   for target path <dir>/<basename>

import { closeSync, copyFileSync, existsSync, mkdirSync, openSync, readFileSync, readdirSync, renameSync, rmSync, writeSync } from 'node:fs'
import { dirname, join, posix } from 'node:path'
import { Metadata, MetadataKind, type Root, type Snapshot, type Targets, type Timestamp } from '@tufjs/models'
import { CairnError } from '../protocol/errors.js'
import { writeFileAtomic } from '../protocol/durable-files.js'
import type { RoleName } from './tuf-keys.js'

export const SPEC_VERSION = '1.0.31'

export interface RepoPaths {
  readonly dir: string
  readonly config: string
  readonly keys: string
  readonly published: string
  readonly metadata: string
  readonly targets: string
}

export function repoPaths(dir: string, keysDir?: string): RepoPaths {
  const published = join(dir, 'published')
  return { dir, config: join(dir, 'cairn-release.json'), keys: keysDir ?? join(dir, 'keys'), published, metadata: join(published, 'metadata'), targets: join(published, 'targets') }
}

// ---- lock -----------------------------------------------------------------------------

/** Takes `<repo>/.lock` for a command that signs: two at once (a refresh timer firing
 * during an `add`) would both take the next version numbers and one would silently undo
 * the other. Returns the release function. A lock left by a dead process is taken over. */
export function lockRepo(dir: string): () => void {
  mkdirSync(dir, { recursive: true })
  const file = join(dir, '.lock')
  for (let tries = 0; ; tries++) {
    try {
      const fd = openSync(file, 'wx', 0o644)
      writeSync(fd, String(process.pid))
      closeSync(fd)
      return () => rmSync(file, { force: true })
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err
      const pid = Number(readFileSync(file, 'utf8').trim())
      if (tries === 0 && !(pid > 0 && processAlive(pid))) {
        rmSync(file, { force: true })
        continue
      }
      throw new CairnError('LOCKED', `${dir} is being changed by another cairn release process (pid ${pid || '?'}); if none is running, remove ${file}`)
    }
  }
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM'
  }
}

// ---- time -----------------------------------------------------------------------------

const UNIT_S: Record<string, number> = { s: 1, m: 60, h: 3600, d: 86_400, w: 7 * 86_400, y: 365 * 86_400 }

/** "90d", "12h", "1w", "1y", "3600s" → seconds. */
export function parseDuration(text: string, what: string): number {
  const m = /^(\d+)([smhdwy])$/.exec(text.trim())
  const n = m ? Number(m[1]) * UNIT_S[m[2]!]! : NaN
  if (!(n > 0) || !Number.isSafeInteger(n)) throw new CairnError('BAD_REQUEST', `${what}: ${JSON.stringify(text)} is not a duration like 1d, 12h, 1w, 1y`)
  return n
}

function formatDuration(s: number): string {
  for (const u of ['y', 'w', 'd', 'h', 'm'] as const) if (s % UNIT_S[u]! === 0) return `${s / UNIT_S[u]!}${u}`
  return `${s}s`
}

/** TUF's `expires`: ISO 8601 UTC, whole seconds, "Z" ("2026-12-01T00:00:00Z"). */
export function tufTime(date: Date): string {
  return new Date(Math.floor(date.getTime() / 1000) * 1000).toISOString().replace(/\.\d{3}Z$/, 'Z')
}

export function expiresIn(now: Date, seconds: number): string {
  return tufTime(new Date(now.getTime() + seconds * 1000))
}

// ---- settings -------------------------------------------------------------------------

export type Expiries = Record<RoleName, number>
const DEFAULT_EXPIRY: Expiries = { root: 365 * 86_400, targets: 90 * 86_400, snapshot: 7 * 86_400, timestamp: 86_400 }

export interface RepoSettings {
  /** Validity period of each role's metadata, in seconds. */
  expiry: Expiries
}

export function readSettings(paths: RepoPaths): RepoSettings {
  if (!existsSync(paths.config)) return { expiry: { ...DEFAULT_EXPIRY } }
  let raw: { expiry?: Partial<Record<string, unknown>> }
  try {
    raw = JSON.parse(readFileSync(paths.config, 'utf8')) as typeof raw
  } catch (err) {
    throw new CairnError('INVALID_CONFIG', `${paths.config}: not JSON`, { cause: err })
  }
  const expiry = { ...DEFAULT_EXPIRY }
  for (const role of Object.keys(expiry) as RoleName[]) {
    const v = raw.expiry?.[role]
    if (v !== undefined) expiry[role] = parseDuration(String(v), `${paths.config}: expiry.${role}`)
  }
  return { expiry }
}

export function writeSettings(paths: RepoPaths, settings: RepoSettings): void {
  const expiry = Object.fromEntries(Object.entries(settings.expiry).map(([k, v]) => [k, formatDuration(v)]))
  writeFileAtomic(paths.config, JSON.stringify({ expiry }, null, 2) + '\n')
}

// ---- metadata files -------------------------------------------------------------------

export type AnyMetadata = Metadata<Root> | Metadata<Timestamp> | Metadata<Snapshot> | Metadata<Targets>

export function metadataBytes(md: AnyMetadata): Buffer {
  return Buffer.from(JSON.stringify(md.toJSON(), null, 2) + '\n', 'utf8')
}

/** File name of a role's metadata in the published tree (consistent snapshots). */
export function metadataName(role: RoleName, version: number): string {
  return role === 'timestamp' ? 'timestamp.json' : `${version}.${role}.json`
}

/** Writes signed metadata atomically and returns the exact bytes written (for MetaFile hashes). */
export function writeMetadata(paths: RepoPaths, role: RoleName, md: AnyMetadata): Buffer {
  mkdirSync(paths.metadata, { recursive: true })
  const bytes = metadataBytes(md)
  writeFileAtomic(join(paths.metadata, metadataName(role, md.signed.version)), bytes)
  return bytes
}

export function readMetadataFile(file: string, kind: 'root'): Metadata<Root>
export function readMetadataFile(file: string, kind: 'timestamp'): Metadata<Timestamp>
export function readMetadataFile(file: string, kind: 'snapshot'): Metadata<Snapshot>
export function readMetadataFile(file: string, kind: 'targets'): Metadata<Targets>
export function readMetadataFile(file: string, kind: RoleName): AnyMetadata {
  let json: unknown
  try {
    json = JSON.parse(readFileSync(file, 'utf8'))
  } catch (err) {
    throw new CairnError('TUF_METADATA', `${file}: cannot read ${kind} metadata (${(err as Error).message})`, { cause: err })
  }
  try {
    return Metadata.fromJSON(kind as MetadataKind.Root, json as Parameters<typeof Metadata.fromJSON>[1])
  } catch (err) {
    throw new CairnError('TUF_METADATA', `${file}: not valid ${kind} metadata (${(err as Error).message})`, { cause: err })
  }
}

/** The highest N of the published N.root.json files (0 when there is none). */
export function latestRootVersion(paths: RepoPaths): number {
  if (!existsSync(paths.metadata)) return 0
  let max = 0
  for (const name of readdirSync(paths.metadata)) {
    const m = /^(\d+)\.root\.json$/.exec(name)
    if (m) max = Math.max(max, Number(m[1]))
  }
  return max
}

// ---- target files ---------------------------------------------------------------------

/** Where the bytes of a target live under targets/ (consistent snapshots: hash-prefixed
 * file name, as tuf-js and python-tuf request them). */
function targetFileName(targetPath: string, sha256: string): string {
  const { dir, base } = posix.parse(targetPath)
  return dir ? `${dir}/${sha256}.${base}` : `${sha256}.${base}`
}

/** Copies `file` into the published tree under its hash-prefixed name, atomically. */
export function publishTargetFile(paths: RepoPaths, targetPath: string, sha256: string, file: string): void {
  const dest = join(paths.targets, ...targetFileName(targetPath, sha256).split('/'))
  if (existsSync(dest)) return // content-addressed: same name, same bytes
  mkdirSync(dirname(dest), { recursive: true })
  const tmp = `${dest}.${process.pid}.tmp`
  rmSync(tmp, { force: true })
  copyFileSync(file, tmp)
  renameSync(tmp, dest)
}
