// The search for a target through the targets role and its delegations (TUF spec 5.6.7),
// over the top-level metadata that tuf-js has just refreshed and verified. Cairn does this
// itself because tuf-js 5.0 keeps each delegated role it has loaded by name and trusts it
// from then on: a role that two delegators name, with different keys or thresholds, would
// pass through the second delegator on the strength of the first one's signatures. Here a
// delegated role is checked against the delegator that led to it every time the search
// reaches it, whether it came from the network, from the metadata dir or from earlier in
// this run. (tuf-js also reads a kept role from the unquoted name but writes it under the
// quoted one, so a role called "../x" was looked for outside the metadata dir.)

import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { Metadata, MetadataKind, type Root, type Snapshot, type TargetFile, type Targets } from '@tufjs/models'
import type { Fetcher } from 'tuf-js'
import { writeFileAtomic } from '../protocol/durable-files.js'
import { CairnError, isCairnError } from '../protocol/errors.js'

/** Longest delegated targets file fetched when the snapshot gives no length (as tuf-js). */
const TARGETS_MAX_LENGTH = 5_000_000
/** Most roles visited in one search (tuf-js's and python-tuf's default). */
const MAX_DELEGATIONS = 32

interface TrustedTargetsOptions {
  metadataDir: string
  metadataUrl: string
  fetcher: Fetcher
  root: Metadata<Root>
  snapshot: Metadata<Snapshot>
  targets: Metadata<Targets>
  /** The time the refresh started: expiry is judged against it (spec 5.1). */
  referenceTime: Date
  /** Maps a failure to the CairnError that says which check refused (tuf-client.ts). */
  refused: (err: unknown, what: string) => CairnError
}

/** Verified top-level metadata and the delegated roles loaded from it, for one run. */
export class TrustedTargets {
  /** Delegated roles whose bytes passed the snapshot's version, hash and length and are
   * not expired: loaded once a run. Their signatures are checked at every use. */
  private readonly loaded = new Map<string, Metadata<Targets>>()

  constructor(private readonly opts: TrustedTargetsOptions) {}

  /** Whether target files are named by hash on the server (spec 5.7.3). */
  get consistentSnapshot(): boolean {
    return this.opts.root.signed.consistentSnapshot
  }

  /** The verified top-level targets role's version, and its expiry as an ISO time. */
  get targetsVersion(): number {
    return this.opts.targets.signed.version
  }

  get targetsExpires(): string {
    return this.opts.targets.signed.expires
  }

  /** The target paths the top-level targets role lists itself (not its delegations). */
  topLevelPaths(): string[] {
    return Object.keys(this.opts.targets.signed.targets).sort()
  }

  /** The signed description of `targetPath` from the first role that lists it, in the
   * spec's pre-order depth-first order, or undefined when no role does. */
  async find(targetPath: string): Promise<TargetFile | undefined> {
    const toVisit: Array<{ role: string; delegator: { name: string; md: Metadata<Targets> } | null }> = [{ role: 'targets', delegator: null }]
    const visited = new Set<string>()
    while (toVisit.length > 0 && visited.size <= MAX_DELEGATIONS) {
      const { role, delegator } = toVisit.pop()!
      if (visited.has(role)) continue // a cycle, or a role already searched through another path
      const md = delegator ? await this.delegated(role, delegator) : this.opts.targets
      const hit = Object.hasOwn(md.signed.targets, targetPath) ? md.signed.targets[targetPath] : undefined
      if (hit) return hit
      visited.add(role)
      const children: typeof toVisit = []
      for (const child of md.signed.delegations?.rolesForTarget(targetPath) ?? []) {
        children.push({ role: child.role, delegator: { name: role, md } })
        if (child.terminating) {
          toVisit.length = 0 // spec 5.6.7.2.1: nothing after a terminating delegation
          break
        }
      }
      toVisit.push(...children.reverse())
    }
    return undefined
  }

  /** A delegated role, verified against `delegator`'s keys and threshold for it. */
  private async delegated(role: string, delegator: { name: string; md: Metadata<Targets> }): Promise<Metadata<Targets>> {
    const what = `delegated role ${role} (delegated by ${delegator.name})`
    const known = this.loaded.get(role)
    if (known) {
      this.verifySignatures(known, role, delegator, what)
      return known
    }
    const file = join(this.opts.metadataDir, `${encodeURIComponent(role)}.json`)
    try {
      const md = this.check(readFileSync(file), role, what)
      this.verifySignatures(md, role, delegator, what)
      this.loaded.set(role, md)
      return md
    } catch {
      // None kept, or the kept one is outdated or no longer signed as its delegator
      // requires: fetch the version the snapshot names.
    }
    const meta = this.snapshotMeta(role, what)
    const name = `${this.consistentSnapshot ? `${meta.version}.` : ''}${encodeURIComponent(role)}.json`
    let bytes: Buffer
    try {
      bytes = await this.opts.fetcher.downloadBytes(`${this.opts.metadataUrl.replace(/\/+$/, '')}/${name}`, meta.length ?? TARGETS_MAX_LENGTH)
    } catch (err) {
      throw this.opts.refused(err, what)
    }
    const md = this.check(bytes, role, what)
    this.verifySignatures(md, role, delegator, what)
    writeFileAtomic(file, bytes)
    this.loaded.set(role, md)
    return md
  }

  /** Spec 5.6.2, 5.6.4, 5.6.5: the bytes the snapshot names, in force. */
  private check(bytes: Buffer, role: string, what: string): Metadata<Targets> {
    const meta = this.snapshotMeta(role, what)
    try {
      meta.verify(bytes)
      const md = Metadata.fromJSON(MetadataKind.Targets, JSON.parse(bytes.toString('utf8')) as never) as Metadata<Targets>
      if (md.signed.version !== meta.version) throw new CairnError('TUF_METADATA', `${what} refused (version rollback or mismatch): version ${md.signed.version}, the snapshot says ${meta.version}`)
      if (md.signed.isExpired(this.opts.referenceTime)) throw new CairnError('TUF_METADATA', `${what} refused (expired: freeze attack or a repository nobody refreshes): expired ${md.signed.expires}`)
      return md
    } catch (err) {
      throw isCairnError(err) ? err : this.opts.refused(err, what)
    }
  }

  /** Spec 5.6.3, against this delegator: it may not be the one the role was loaded through. */
  private verifySignatures(md: Metadata<Targets>, role: string, delegator: { md: Metadata<Targets> }, what: string): void {
    try {
      delegator.md.verifyDelegate(role, md)
    } catch (err) {
      throw this.opts.refused(err, what)
    }
  }

  private snapshotMeta(role: string, what: string) {
    const key = `${role}.json`
    const meta = Object.hasOwn(this.opts.snapshot.signed.meta, key) ? this.opts.snapshot.signed.meta[key] : undefined
    if (!meta) throw new CairnError('TUF_METADATA', `${what} refused (not in the snapshot): the snapshot lists no ${key}`)
    return meta
  }
}
