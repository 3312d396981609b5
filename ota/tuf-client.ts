// The verifying side of TUF, shared by the device's release channel (ota/tuf-channel.ts)
// and the conformance client (`cairn release client`): tuf-js's Updater over a local
// metadata directory, seeded from a trusted root, refreshes the top-level roles; the
// search through delegated targets roles is Cairn's (ota/tuf-delegations.ts). Errors
// become CairnErrors that say which check refused what. Targets are fetched by
// ota/fetcher.ts, not tuf-js.

import { copyFileSync, existsSync, mkdirSync, readFileSync, rmSync } from 'node:fs'
import { join, posix } from 'node:path'
import { Metadata, MetadataKind, type Root, type Snapshot, type TargetFile, type Targets } from '@tufjs/models'
import { LengthOrHashMismatchError, UnsignedMetadataError } from '@tufjs/models/dist/error.js'
import { Updater } from 'tuf-js'
import { BadVersionError, DownloadHTTPError, DownloadLengthMismatchError, ExpiredMetadataError, RuntimeError } from 'tuf-js/dist/error.js'
import { DefaultFetcher } from 'tuf-js/dist/fetcher.js'
import { CairnError, isCairnError } from '../protocol/errors.js'
import { TrustedTargets } from './tuf-delegations.js'

export interface TufClientOptions {
  /** Where the trusted metadata lives (root.json, timestamp.json, snapshot.json, targets.json). */
  metadataDir: string
  /** Base URL of the published metadata/ directory. */
  metadataUrl: string
  /** Time limit of one metadata request (tuf-js). Default 30 s. */
  fetchTimeoutMs?: number
  /** Retries of a failed metadata request (tuf-js, with backoff). Default 2. */
  fetchRetries?: number
}

/** Seeds `metadataDir/root.json` from a trusted root file (the one shipped in the image or
 * bundle): when there is none yet, when it no longer parses (tuf-js writes metadata files
 * in place, so a power cut can tear one), or when the shipped root is newer. Replacing a
 * root with an older one never happens here; TUF walks forward from whatever is kept. */
export function seedTrustedRoot(metadataDir: string, trustedRoot: string): void {
  mkdirSync(metadataDir, { recursive: true })
  const shipped = rootVersionOf(trustedRoot)
  if (shipped === null) throw new CairnError('TUF_METADATA', `${trustedRoot}: not a TUF root metadata file`)
  const local = join(metadataDir, 'root.json')
  const have = existsSync(local) ? rootVersionOf(local) : null
  if (have === null || shipped > have) copyFileSync(trustedRoot, local)
}

function rootVersionOf(file: string): number | null {
  try {
    const md: Metadata<Root> = Metadata.fromJSON(MetadataKind.Root, JSON.parse(readFileSync(file, 'utf8')) as never)
    return md.signed.version
  } catch {
    return null
  }
}

/** Runs the TUF client workflow (root chain, timestamp, snapshot, targets) and returns the
 * verified metadata to look targets up in. Call it again for each check: what it returns
 * is one run's view (tuf-js refreshes an Updater only once). */
export async function refreshMetadata(opts: TufClientOptions): Promise<TrustedTargets> {
  if (!existsSync(join(opts.metadataDir, 'root.json'))) throw new CairnError('TUF_METADATA', `${opts.metadataDir}/root.json missing: initialise with a trusted root first`)
  const keysBefore = onlineRoleKeys(opts.metadataDir)
  try {
    return await refreshOnce(opts)
  } catch (err) {
    const failure = tufError(err, 'release metadata')
    // Fast-forward recovery (TUF spec 5.3.11): when the new root rotated the timestamp or
    // snapshot keys, the trusted timestamp and snapshot must be dropped, or versions that
    // an attacker pushed up with the old keys would block the legitimate ones forever.
    // tuf-js only drops a file whose own signature stops verifying (so rotating the
    // snapshot key alone leaves the timestamp's snapshot version in force): do it here.
    if (failure.code !== 'TUF_METADATA' || onlineRoleKeys(opts.metadataDir) === keysBefore) throw failure
    for (const f of ['timestamp.json', 'snapshot.json']) rmSync(join(opts.metadataDir, f), { force: true })
    try {
      return await refreshOnce(opts)
    } catch (again) {
      throw tufError(again, 'release metadata')
    }
  }
}

async function refreshOnce(opts: TufClientOptions): Promise<TrustedTargets> {
  const fetcher = new DefaultFetcher({ userAgent: 'cairn', timeout: opts.fetchTimeoutMs ?? 30_000, retry: opts.fetchRetries ?? 2 })
  const referenceTime = new Date()
  const updater = new Updater({ metadataDir: opts.metadataDir, metadataBaseUrl: opts.metadataUrl, fetcher })
  await updater.refresh()
  const { root, snapshot, targets } = verifiedSet(updater)
  return new TrustedTargets({ metadataDir: opts.metadataDir, metadataUrl: opts.metadataUrl, fetcher, root, snapshot, targets, referenceTime, refused: tufError })
}

/** The metadata tuf-js has just verified. The Updater keeps it in a private field (it has
 * no accessor); reading it here, rather than the files it wrote, means the search uses
 * exactly what was verified. The check turns a tuf-js upgrade that moves it into a clear
 * error instead of a search over nothing. */
function verifiedSet(updater: Updater): { root: Metadata<Root>; snapshot: Metadata<Snapshot>; targets: Metadata<Targets> } {
  const set = (updater as unknown as { trustedSet?: { root?: Metadata<Root>; snapshot?: Metadata<Snapshot>; targets?: Metadata<Targets> } }).trustedSet
  const root = set?.root
  const snapshot = set?.snapshot
  const targets = set?.targets
  if (!root || !snapshot || !targets) throw new CairnError('INTERNAL', 'tuf-js refreshed but its verified metadata is not where ota/tuf-client.ts reads it (tuf-js upgraded?)')
  return { root, snapshot, targets }
}

/** The trusted root's timestamp and snapshot keys, as a string to compare. */
function onlineRoleKeys(metadataDir: string): string {
  try {
    const root: Metadata<Root> = Metadata.fromJSON(MetadataKind.Root, JSON.parse(readFileSync(join(metadataDir, 'root.json'), 'utf8')) as never)
    return JSON.stringify([root.signed.roles.timestamp, root.signed.roles.snapshot])
  } catch {
    return ''
  }
}

/** A target's signed description, searched through the delegations, or undefined. */
export async function targetInfo(trusted: TrustedTargets, targetPath: string): Promise<TargetFile | undefined> {
  try {
    return await trusted.find(targetPath)
  } catch (err) {
    throw tufError(err, targetPath)
  }
}

/** The URL of a target's bytes: with consistent snapshots one of its hashes goes before
 * the file name (spec 5.7.3); `hashPrefix` null for a repository without them. */
export function targetUrl(targetBaseUrl: string, targetPath: string, hashPrefix: string | null): string {
  const { dir, base } = posix.parse(targetPath)
  const file = hashPrefix === null ? base : `${hashPrefix}.${base}`
  const name = dir ? `${dir}/${file}` : file
  return `${targetBaseUrl.replace(/\/+$/, '')}/${name.split('/').map(encodeURIComponent).join('/')}`
}

/** Maps a tuf-js / @tufjs/models error to a CairnError naming the check that refused. */
function tufError(err: unknown, what: string): CairnError {
  if (isCairnError(err)) return err
  const message = err instanceof Error ? err.message : String(err)
  const refused = (why: string): CairnError => new CairnError('TUF_METADATA', `${what} refused (${why}): ${message}`, { cause: err })
  if (err instanceof DownloadHTTPError) return new CairnError('DOWNLOAD', `${what}: HTTP ${err.statusCode} from the release server`, { cause: err })
  if (err instanceof DownloadLengthMismatchError) return refused('larger than the signed or configured length: endless data')
  if (err instanceof ExpiredMetadataError) return refused('expired: freeze attack or a repository nobody refreshes')
  if (err instanceof BadVersionError) return refused('version rollback or mismatch')
  if (err instanceof UnsignedMetadataError) return refused('not signed by a threshold of trusted keys')
  if (err instanceof LengthOrHashMismatchError) return refused('length or hash differs from what the signed metadata says')
  if (isNetworkError(err)) return new CairnError('DOWNLOAD', `${what}: cannot reach the release server (${networkDetail(err)})`, { cause: err })
  // tuf-js wraps snapshot and targets failures in a RuntimeError that keeps only the text
  // of the original error, so here the class can only be recognised by that text.
  if (err instanceof RuntimeError) {
    if (/Failed to download|fetch failed|TimeoutError/.test(message)) return new CairnError('DOWNLOAD', `${what}: ${message}`, { cause: err })
    if (/Max length reached/.test(message)) return refused('larger than the signed or configured length: endless data')
    if (/is expired/.test(message)) return refused('expired: freeze attack or a repository nobody refreshes')
    if (/Expected (length|hash)/.test(message)) return refused('length or hash differs from what the signed metadata says')
    if (/signed by \d+\/\d+ keys/.test(message)) return refused('not signed by a threshold of trusted keys')
    if (/version/i.test(message)) return refused('version rollback or mismatch')
  }
  return refused('verification failed')
}

function isNetworkError(err: unknown): boolean {
  if (!(err instanceof Error)) return false
  return (err instanceof TypeError && err.message === 'fetch failed') || err.name === 'TimeoutError' || err.name === 'AbortError'
}

function networkDetail(err: unknown): string {
  const cause = (err as { cause?: { code?: string; message?: string } }).cause
  return cause?.code ?? cause?.message ?? (err as Error).message
}
