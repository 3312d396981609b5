// The release side of OTA: a TUF repository on disk that `cairn release` edits. It builds
// and signs metadata with @tufjs/models (ed25519 keys), and writes plain static files that
// any HTTP server, CDN or content-addressed gateway can host (layout: ota/tuf-layout.ts).
// The published tree is the single source of truth: opening a repository reads the
// current versions back from it, so there is no second state file to drift.

import { createHash, createPublicKey } from 'node:crypto'
import { closeSync, existsSync, mkdirSync, openSync, readSync, statSync } from 'node:fs'
import { basename, join } from 'node:path'
import { Metadata, MetadataKind, type Root, type Snapshot, type Targets, type Timestamp } from '@tufjs/models'
import type { Json } from '../protocol/canonical.js'
import { CairnError } from '../protocol/errors.js'
import { isSemver } from '../protocol/semver.js'
import { KeyStore, signWith, tufKeyJson, ROLES, type RoleName, type TufSigner } from './tuf-keys.js'
import {
  expiresIn,
  latestRootVersion,
  metadataName,
  publishTargetFile,
  readMetadataFile,
  readSettings,
  repoPaths,
  SPEC_VERSION,
  writeMetadata,
  writeSettings,
  type Expiries,
  type RepoPaths,
  type RepoSettings,
} from './tuf-layout.js'
import { sha256Hex } from '../protocol/hash.js'
import { parseReleaseInfo, type ReleaseInfo } from './release-types.js'

export interface RepoOptions {
  dir: string
  /** Where the private keys are (default <dir>/keys), searched in order: e.g. an offline
   * medium for root and targets plus the publishing machine's directory. */
  keysDir?: string | readonly string[]
  /** Injected clock: metadata expiry is computed from it. */
  now?: () => Date
}

export interface InitOptions {
  rootKeys?: number
  rootThreshold?: number
  expiry?: Partial<Expiries>
}

export interface PublishedTarget {
  path: string
  length: number
  sha256: string
  info: ReleaseInfo | null
}

type JsonObject = { [k: string]: Json }
type SignedOf = { root: Root; targets: Targets; snapshot: Snapshot; timestamp: Timestamp }

const CHANNEL_RE = /^[a-z0-9][a-z0-9._-]{0,63}$/
const TAG_RE = /^[a-z0-9][a-z0-9._-]{0,63}$/
const BASENAME_RE = /^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$/

export class TufRepo {
  readonly paths: RepoPaths
  readonly keys: KeyStore
  readonly settings: RepoSettings
  private readonly now: () => Date
  root!: Metadata<Root>
  timestamp!: Metadata<Timestamp>
  snapshot!: Metadata<Snapshot>
  targets!: Metadata<Targets>

  private constructor(opts: RepoOptions) {
    const keyDirs = opts.keysDir === undefined ? [] : typeof opts.keysDir === 'string' ? [opts.keysDir] : opts.keysDir
    this.paths = repoPaths(opts.dir, keyDirs[0])
    this.keys = new KeyStore(keyDirs.length > 0 ? keyDirs : [this.paths.keys])
    this.now = opts.now ?? (() => new Date())
    this.settings = readSettings(this.paths)
  }

  /** Creates keys and version 1 of every role. Root: `rootKeys` keys, `rootThreshold` to sign. */
  static init(opts: RepoOptions & InitOptions): TufRepo {
    const n = opts.rootKeys ?? 3
    const m = opts.rootThreshold ?? Math.min(2, n)
    if (!Number.isInteger(n) || n < 1 || n > 20) throw new CairnError('BAD_REQUEST', `--root-keys must be 1 to 20, got ${n}`)
    if (!Number.isInteger(m) || m < 1 || m > n) throw new CairnError('BAD_REQUEST', `--root-threshold must be 1 to ${n} (the number of root keys), got ${m}`)
    const repo = new TufRepo(opts)
    if (latestRootVersion(repo.paths) > 0) throw new CairnError('BAD_REQUEST', `${repo.paths.metadata} already holds a repository; refusing to overwrite it`)
    mkdirSync(repo.paths.dir, { recursive: true })
    Object.assign(repo.settings.expiry, opts.expiry ?? {})
    writeSettings(repo.paths, repo.settings)

    const rootSigners = Array.from({ length: n }, () => repo.keys.generate('root'))
    const others = { targets: repo.keys.generate('targets'), snapshot: repo.keys.generate('snapshot'), timestamp: repo.keys.generate('timestamp') }
    const keys: JsonObject = {}
    for (const s of [...rootSigners, ...Object.values(others)]) keys[s.keyId] = keyJson(s)
    const roles: JsonObject = {
      root: { keyids: rootSigners.map(s => s.keyId), threshold: m },
      targets: { keyids: [others.targets.keyId], threshold: 1 },
      snapshot: { keyids: [others.snapshot.keyId], threshold: 1 },
      timestamp: { keyids: [others.timestamp.keyId], threshold: 1 },
    }
    repo.root = repo.sign('root', { ...repo.header('root', 1), keys, roles, consistent_snapshot: true }, rootSigners)
    writeMetadata(repo.paths, 'root', repo.root)
    repo.publishTargets({}, 1)
    return repo
  }

  /** Opens an existing repository, reading the current metadata from the published tree. */
  static open(opts: RepoOptions): TufRepo {
    const repo = new TufRepo(opts)
    repo.load()
    return repo
  }

  private load(): void {
    const rootVersion = latestRootVersion(this.paths)
    if (rootVersion === 0) throw new CairnError('BAD_REQUEST', `${this.paths.metadata}: no N.root.json here; run \`cairn release init --repo ${this.paths.dir}\` first`)
    const md = this.paths.metadata
    this.root = readMetadataFile(join(md, `${rootVersion}.root.json`), 'root')
    this.timestamp = readMetadataFile(join(md, 'timestamp.json'), 'timestamp')
    this.snapshot = readMetadataFile(join(md, metadataName('snapshot', this.timestamp.signed.snapshotMeta.version)), 'snapshot')
    const targetsMeta = this.snapshot.signed.meta['targets.json']
    if (!targetsMeta) throw new CairnError('TUF_METADATA', `${md}: snapshot lists no targets.json`)
    this.targets = readMetadataFile(join(md, metadataName('targets', targetsMeta.version)), 'targets')
  }

  // ---- releases -------------------------------------------------------------------------

  /** Adds `files` as targets `cairn/<version>/<basename>` with custom `{cairn: info}`, then
   * re-signs targets, snapshot and timestamp. A published path is immutable. */
  addRelease(files: readonly string[], info: ReleaseInfo): PublishedTarget[] {
    validateInfo(info)
    if (files.length === 0) throw new CairnError('BAD_REQUEST', 'no files to add')
    const targets = this.targetsJson()
    const added: PublishedTarget[] = []
    const seen = new Set<string>()
    for (const file of files) {
      const base = basename(file)
      if (!BASENAME_RE.test(base)) throw new CairnError('BAD_REQUEST', `${file}: file name must be letters, digits and ._+- (it becomes part of the target path)`)
      if (!existsSync(file) || !statSync(file).isFile()) throw new CairnError('BAD_REQUEST', `${file}: not a file`)
      const path = `cairn/${info.version}/${base}`
      if (seen.has(path)) throw new CairnError('BAD_REQUEST', `${base} given twice`)
      seen.add(path)
      const { length, sha256 } = hashFile(file)
      const entry: JsonObject = { length, hashes: { sha256 }, custom: { cairn: infoJson(info) } }
      const existing = targets[path] as JsonObject | undefined
      if (existing && JSON.stringify(existing) !== JSON.stringify(entry)) {
        throw new CairnError('BAD_REQUEST', `${path} is already published with other content or metadata; a release is immutable: publish a new version (or use set-rollout)`)
      }
      publishTargetFile(this.paths, path, sha256, file)
      targets[path] = entry
      added.push({ path, length, sha256, info })
    }
    this.publishTargets(targets)
    return added
  }

  /** Sets the rollout percentage of every target of `version` (0 halts the release),
   * only in `channel` and of `kind` when given. */
  setRollout(version: string, pct: number, channel?: string, kind?: ReleaseInfo['kind']): string[] {
    if (!(pct >= 0 && pct <= 100)) throw new CairnError('BAD_REQUEST', `rollout must be 0 to 100, got ${pct}`)
    const targets = this.targetsJson()
    const changed: string[] = []
    for (const [path, entry] of Object.entries(targets)) {
      const cairn = ((entry as JsonObject).custom as JsonObject | undefined)?.cairn as JsonObject | undefined
      if (!cairn || cairn.version !== version || (channel !== undefined && cairn.channel !== channel) || (kind !== undefined && cairn.kind !== kind)) continue
      cairn.rollout = pct
      changed.push(path)
    }
    if (changed.length === 0) throw new CairnError('BAD_REQUEST', `no published ${kind ? `${kind} ` : ''}target has version ${version}${channel ? ` on channel ${channel}` : ''}`)
    this.publishTargets(targets)
    return changed
  }

  list(): PublishedTarget[] {
    return Object.entries(this.targets.signed.targets).map(([path, t]) => ({
      path,
      length: t.length,
      sha256: t.hashes.sha256 ?? '',
      info: parseReleaseInfo(t.custom.cairn),
    }))
  }

  // ---- re-signing -----------------------------------------------------------------------

  /** Re-signs the timestamp (always), the snapshot when it is past half its validity or
   * the targets changed, and targets/root when asked. Returns what was signed and warnings
   * about offline roles that expire soon. */
  refresh(opts: { targets?: boolean; root?: boolean } = {}): { signed: RoleName[]; warnings: string[] } {
    const signed: RoleName[] = []
    if (opts.root) {
      this.publishRoot(this.rootJson(), this.rootSigners())
      signed.push('root')
    }
    if (opts.targets) {
      this.publishTargets(this.targetsJson())
      signed.push('targets', 'snapshot', 'timestamp')
    } else if (this.expiresWithin(this.snapshot.signed.expires, this.settings.expiry.snapshot / 2)) {
      this.publishSnapshot()
      signed.push('snapshot', 'timestamp')
    } else {
      this.publishTimestamp()
      signed.push('timestamp')
    }
    const warnings: string[] = []
    for (const [role, md] of [
      ['root', this.root],
      ['targets', this.targets],
    ] as const) {
      if (this.expiresWithin(md.signed.expires, 30 * 86_400)) warnings.push(`${role} metadata expires ${md.signed.expires}: run \`cairn release refresh --${role}\` with the ${role} keys`)
    }
    return { signed, warnings }
  }

  /** Replaces a role's keys. Root: `rootKeys` new keys (default as many as now), the new
   * root signed by the old root threshold and by the new keys. Other roles: one new key,
   * a new root signed by the root threshold, then the role re-signed with its new key. */
  rotate(role: RoleName, opts: { rootKeys?: number; rootThreshold?: number } = {}): { newKeyIds: string[]; retired: string[] } {
    const oldSigners = this.rootSigners()
    const rootJson = this.rootJson()
    const roles = rootJson.roles as Record<RoleName, { keyids: string[]; threshold: number }>
    const keys = rootJson.keys as JsonObject
    const old = roles[role]
    const n = role === 'root' ? (opts.rootKeys ?? old.keyids.length) : 1
    const m = role === 'root' ? (opts.rootThreshold ?? Math.min(old.threshold, n)) : 1
    if (!Number.isInteger(n) || n < 1 || n > 20 || !Number.isInteger(m) || m < 1 || m > n) throw new CairnError('BAD_REQUEST', `need 1 ≤ threshold (${m}) ≤ keys (${n}) ≤ 20`)
    const fresh = Array.from({ length: n }, () => this.keys.generate(role, old.keyids))
    roles[role] = { keyids: fresh.map(s => s.keyId), threshold: m }
    for (const s of fresh) keys[s.keyId] = keyJson(s)
    const stillUsed = new Set(ROLES.flatMap(r => roles[r].keyids))
    for (const id of old.keyids) if (!stillUsed.has(id)) delete keys[id]
    // Root rotation: the old threshold vouches for the new root, and the new keys sign it
    // too, so that a client walking the chain accepts it under both the old and new rules.
    this.publishRoot(rootJson, role === 'root' ? [...oldSigners, ...fresh] : oldSigners)
    if (role === 'targets') this.publishTargets(this.targetsJson())
    else if (role === 'snapshot') this.publishSnapshot()
    else if (role === 'timestamp') this.publishTimestamp()
    for (const id of old.keyids) this.keys.retire(role, id)
    return { newKeyIds: fresh.map(s => s.keyId), retired: old.keyids }
  }

  // ---- building blocks ------------------------------------------------------------------

  private header(role: RoleName, version: number): JsonObject {
    return { _type: role, spec_version: SPEC_VERSION, version, expires: expiresIn(this.now(), this.settings.expiry[role]) }
  }

  private expiresWithin(expires: string, seconds: number): boolean {
    return new Date(expires).getTime() <= this.now().getTime() + seconds * 1000
  }

  /** Parses `signed` with @tufjs/models (which validates it) and signs it. */
  private sign<K extends RoleName>(role: K, signed: JsonObject, signers: readonly TufSigner[]): Metadata<SignedOf[K]> {
    const md = Metadata.fromJSON(role as MetadataKind.Root, { signed, signatures: [] })
    for (const s of signers) signWith(md, s)
    return md as unknown as Metadata<SignedOf[K]>
  }

  /** Signers of `role` under the current root, at least its threshold. */
  private signersFor(role: RoleName): TufSigner[] {
    const r = this.root.signed.roles[role]
    if (!r) throw new CairnError('TUF_METADATA', `root lists no ${role} role`)
    return this.keys.require(role, r.keyIDs, r.threshold)
  }

  private rootSigners(): TufSigner[] {
    return this.signersFor('root')
  }

  /** The current root's content as the next version, with a fresh expiry. */
  private rootJson(): JsonObject {
    return { ...structuredClone(this.root.signed.toJSON() as JsonObject), ...this.header('root', this.root.signed.version + 1) }
  }

  private targetsJson(): Record<string, Json> {
    return structuredClone(this.targets.signed.toJSON().targets as Record<string, Json>)
  }

  private publishRoot(signed: JsonObject, signers: readonly TufSigner[]): void {
    this.root = this.sign('root', signed, signers)
    writeMetadata(this.paths, 'root', this.root)
  }

  /** New targets (version+1, or `version`), then snapshot and timestamp pointing at it. */
  private publishTargets(targets: Record<string, Json>, version = this.targets.signed.version + 1): void {
    const md = this.sign('targets', { ...this.header('targets', version), targets }, this.signersFor('targets'))
    const bytes = writeMetadata(this.paths, 'targets', md)
    this.targets = md
    this.publishSnapshot({ version, length: bytes.length, hashes: { sha256: sha256Hex(bytes) } })
  }

  private publishSnapshot(targetsMeta?: JsonObject): void {
    const meta = targetsMeta ?? (this.snapshot.signed.meta['targets.json']!.toJSON() as JsonObject)
    const version = this.snapshot ? this.snapshot.signed.version + 1 : 1
    const md = this.sign('snapshot', { ...this.header('snapshot', version), meta: { 'targets.json': meta } }, this.signersFor('snapshot'))
    const bytes = writeMetadata(this.paths, 'snapshot', md)
    this.snapshot = md
    this.publishTimestamp({ version, length: bytes.length, hashes: { sha256: sha256Hex(bytes) } })
  }

  private publishTimestamp(snapshotMeta?: JsonObject): void {
    const meta = snapshotMeta ?? (this.timestamp.signed.snapshotMeta.toJSON() as JsonObject)
    const version = this.timestamp ? this.timestamp.signed.version + 1 : 1
    this.timestamp = this.sign('timestamp', { ...this.header('timestamp', version), meta: { 'snapshot.json': meta } }, this.signersFor('timestamp'))
    writeMetadata(this.paths, 'timestamp', this.timestamp)
  }
}

/** Length and SHA-256 of a file, read in chunks (OS images run to gigabytes). */
function hashFile(file: string): { length: number; sha256: string } {
  const hash = createHash('sha256')
  const buf = Buffer.alloc(1 << 20)
  const fd = openSync(file, 'r')
  let length = 0
  try {
    for (let n; (n = readSync(fd, buf, 0, buf.length, null)) > 0; length += n) hash.update(buf.subarray(0, n))
  } finally {
    closeSync(fd)
  }
  return { length, sha256: hash.digest('hex') }
}

function keyJson(s: TufSigner): JsonObject {
  return tufKeyJson(createPublicKey(s.privateKey)) as unknown as JsonObject
}

function validateInfo(info: ReleaseInfo): void {
  const bad = (msg: string): never => {
    throw new CairnError('BAD_REQUEST', msg)
  }
  if (!isSemver(info.version)) bad(`--version ${JSON.stringify(info.version)} is not a semantic version (e.g. 1.4.0)`)
  if (!CHANNEL_RE.test(info.channel)) bad(`--channel ${JSON.stringify(info.channel)}: use lowercase letters, digits and ._-`)
  if (info.minVersion !== undefined && !isSemver(info.minVersion)) bad(`--min-version ${JSON.stringify(info.minVersion)} is not a semantic version`)
  for (const a of [...(info.arch ?? []), ...(info.boards ?? [])]) if (!TAG_RE.test(a)) bad(`${JSON.stringify(a)}: architecture and board names are lowercase letters, digits and ._-`)
  if (!(info.rollout >= 0 && info.rollout <= 100)) bad(`--rollout must be 0 to 100, got ${info.rollout}`)
  if (info.kind !== 'agent' && info.kind !== 'os') bad(`--kind must be agent or os`)
}

function infoJson(info: ReleaseInfo): JsonObject {
  const out: JsonObject = { version: info.version, channel: info.channel, rollout: info.rollout, kind: info.kind }
  if (info.minVersion !== undefined) out.minVersion = info.minVersion
  if (info.arch !== undefined) out.arch = [...info.arch]
  if (info.boards !== undefined) out.boards = [...info.boards]
  return out
}
