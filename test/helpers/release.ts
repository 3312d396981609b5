// Test fixtures for the release channel: a real TUF repository in a temp dir, served over
// loopback HTTP, a device-side metadata dir seeded with its root, and an "attacker" who
// holds some of the repository's keys and can sign whatever metadata they like.

import type { Test } from 'tap'
import { execFile } from 'node:child_process'
import { createHash, createPublicKey, getHashes } from 'node:crypto'
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, writeFileSync } from 'node:fs'
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { dirname, join, posix } from 'node:path'
import { Metadata, MetadataKind } from '@tufjs/models'
import type { Json } from '../../protocol/canonical.js'
import { KeyStore, signWith, tufKeyJson, type RoleName, type TufSigner } from '../../ota/tuf-keys.js'
import { metadataBytes, metadataName, SPEC_VERSION, tufTime } from '../../ota/tuf-layout.js'
import { sha256Hex } from '../../protocol/hash.js'
import { TufRepo, type RepoOptions } from '../../ota/tuf-repo.js'
import { serveStatic, type StaticServer } from '../../ota/tuf-serve.js'
import { refreshMetadata } from '../../ota/tuf-client.js'

export const tmp = (p = 'cairn-ota-'): string => mkdtempSync(join(tmpdir(), p))

/** A repository whose clock the test can move (metadata expiry is computed from it). */
export function makeRepo(opts: Partial<RepoOptions> & { rootKeys?: number; rootThreshold?: number } = {}): { repo: TufRepo; dir: string; clock: { offsetMs: number } } {
  const dir = opts.dir ?? join(tmp(), 'repo')
  const clock = { offsetMs: 0 }
  const repo = TufRepo.init({
    dir,
    now: () => new Date(Date.now() + clock.offsetMs),
    ...(opts.rootKeys ? { rootKeys: opts.rootKeys } : {}),
    ...(opts.rootThreshold ? { rootThreshold: opts.rootThreshold } : {}),
  })
  return { repo, dir, clock }
}

/** Writes a release payload file of `size` bytes (deterministic content) and returns its path. */
export function payload(dir: string, name: string, size: number, seed = 1): string {
  const buf = Buffer.alloc(size)
  let x = seed
  for (let i = 0; i < size; i++) {
    x = (x * 1103515245 + 12345) >>> 0
    buf[i] = x >>> 24
  }
  mkdirSync(dir, { recursive: true })
  const file = join(dir, name)
  writeFileSync(file, buf)
  return file
}

export async function serveRepo(repo: TufRepo): Promise<StaticServer & { requests: string[] }> {
  const requests: string[] = []
  const s = await serveStatic({ root: repo.paths.published, onRequest: (_m, p, status) => requests.push(`${status} ${p}`) })
  return Object.assign(s, { requests })
}

/** A device's trusted metadata dir, seeded with the repository's first root. */
export function clientDir(repo: TufRepo, rootVersion = 1): string {
  const dir = join(tmp('cairn-ota-client-'), 'metadata')
  mkdirSync(dir, { recursive: true })
  copyFileSync(join(repo.paths.metadata, `${rootVersion}.root.json`), join(dir, 'root.json'))
  return dir
}

export const refresh = (metadataDir: string, server: { url: string }) => refreshMetadata({ metadataDir, metadataUrl: `${server.url}/metadata`, fetchRetries: 0, fetchTimeoutMs: 5000 })

/** Reads the current published JSON of a role (for tampering). */
export function publishedJson(repo: TufRepo, role: RoleName, version?: number): { signed: Record<string, Json>; signatures: Json[] } {
  const v = version ?? (role === 'root' ? repo.root.signed.version : role === 'targets' ? repo.targets.signed.version : role === 'snapshot' ? repo.snapshot.signed.version : 0)
  return JSON.parse(readFileSync(join(repo.paths.metadata, metadataName(role, v)), 'utf8')) as { signed: Record<string, Json>; signatures: Json[] }
}

/** Signs `signed` with the given role keys from the repository's key store (an attacker
 * who stole them, or a test building odd but validly signed metadata), writes it into the
 * published tree under its usual name, and returns the bytes with their MetaFile entry. */
export function forge(repo: TufRepo, role: RoleName, signed: Record<string, Json>, keyIds?: string[], keyRole: RoleName = role): { bytes: Buffer; meta: Record<string, Json> } {
  const md = Metadata.fromJSON(role as MetadataKind.Root, { signed, signatures: [] })
  const ids = keyIds ?? repo.root.signed.roles[keyRole]!.keyIDs
  for (const s of repo.keys.signers(keyRole, ids)) signWith(md, s)
  const bytes = metadataBytes(md)
  writeFileSync(join(repo.paths.metadata, metadataName(role, md.signed.version)), bytes)
  return { bytes, meta: { version: md.signed.version, length: bytes.length, hashes: { sha256: sha256Hex(bytes) } } }
}

/** Common header of forged metadata. */
export function header(role: RoleName, version: number, expiresInS = 86_400): Record<string, Json> {
  return { _type: role, spec_version: SPEC_VERSION, version, expires: tufTime(new Date(Date.now() + expiresInS * 1000)) }
}

/** An HTTP server whose handler the test writes; the rest falls through to files under `root`. */
export async function attackServer(root: string, override: (req: IncomingMessage, res: ServerResponse) => boolean): Promise<{ url: string; close(): Promise<void> }> {
  const server = createServer((req, res) => {
    if (override(req, res)) return
    try {
      const body = readFileSync(join(root, decodeURIComponent(new URL(req.url ?? '/', 'http://x').pathname)))
      res.writeHead(200, { 'Content-Length': body.length })
      res.end(body)
    } catch {
      res.writeHead(404, { 'Content-Length': 0 })
      res.end()
    }
  })
  await new Promise<void>(r => server.listen(0, '127.0.0.1', r))
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  return {
    url,
    close: () =>
      new Promise<void>(r => {
        server.closeAllConnections()
        server.close(() => r())
      }),
  }
}

/** Runs the built bundle (dist/cairn.mjs) as operators and the tuf-conformance suite do:
 * the exit code and both outputs, whatever the code. */
export function cairnCli(args: readonly string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const bundle = new URL('../../dist/cairn.mjs', import.meta.url).pathname
  return new Promise(resolve => {
    execFile(process.execPath, [bundle, ...args], { timeout: 30_000 }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : 1) : 0
      resolve({ code, stdout, stderr })
    })
  })
}

type TargetsBody = { targets: Record<string, Json>; delegations?: Json }

/** A repository written by hand, for shapes `cairn release` never makes: target hashes
 * other than SHA-256 and delegated targets roles. A TufRepo gives root and the keys of the
 * top-level roles; the test gives the targets and each delegated role as plain JSON, and
 * publish() signs whatever changed as a new version, then a snapshot and a timestamp.
 * Every file is also written under its plain name, for a root without consistent snapshots. */
export class HandMadeRepo {
  private readonly published = new Map<string, { json: string; version: number }>()
  private serial = 1

  constructor(readonly repo: TufRepo) {}

  /** A fresh ed25519 key for a delegated role. */
  static key(): TufSigner {
    return new KeyStore(tmp('cairn-ota-keys-')).generate('targets')
  }

  /** The delegations object of a targets role: `roles` in search order. */
  static delegations(roles: Array<{ name: string; keys: TufSigner[]; threshold?: number; paths?: string[]; terminating?: boolean }>): Json {
    const keys: Record<string, Json> = {}
    for (const r of roles) for (const k of r.keys) keys[k.keyId] = tufKeyJson(createPublicKey(k.privateKey)) as unknown as Json
    return {
      keys,
      roles: roles.map(r => ({ name: r.name, keyids: r.keys.map(k => k.keyId), threshold: r.threshold ?? 1, terminating: r.terminating ?? false, paths: r.paths ?? ['*'] })),
    }
  }

  /** Stores `bytes` under the plain name and every hash-prefixed one, and returns the
   * target entry listing `hashes` (TUF names; one Node cannot compute gets the SHA-256
   * value, so only its name is unknown), with the value of each in `wrong` altered. */
  artifact(path: string, bytes: Buffer, hashes: readonly string[] = ['sha256'], wrong: readonly string[] = []): Json {
    const listed: Record<string, string> = {}
    for (const alg of hashes) {
      const node = ({ blake2b: 'blake2b512', blake2s: 'blake2s256' } as Record<string, string>)[alg] ?? alg
      const digest = getHashes().includes(node) ? createHash(node).update(bytes).digest() : createHash('sha256').update(bytes).digest()
      if (wrong.includes(alg)) digest[0] = digest[0]! ^ 0xff
      listed[alg] = digest.toString('hex')
    }
    const { dir, base } = posix.parse(path)
    for (const name of [base, ...Object.values(listed).map(h => `${h}.${base}`)]) {
      const file = join(this.repo.paths.targets, ...(dir ? dir.split('/') : []), name)
      mkdirSync(dirname(file), { recursive: true })
      writeFileSync(file, bytes)
    }
    return { length: bytes.length, hashes: listed }
  }

  /** Re-signs root (version + 1) with consistent snapshots on or off. */
  consistentSnapshot(on: boolean): void {
    const current = publishedJson(this.repo, 'root', this.rootVersion())
    const signed = { ...current.signed, version: (current.signed.version as number) + 1, consistent_snapshot: on }
    forge(this.repo, 'root', signed)
  }

  /** Signs the top-level targets (its own key) and each delegated role (the given keys)
   * whose content or keys changed since the last publish, then snapshot and timestamp. */
  publish(targets: TargetsBody, delegated: Record<string, TargetsBody & { keys: TufSigner[] }> = {}): void {
    const serial = ++this.serial
    const meta: Record<string, Json> = {}
    const roles: Array<[string, TargetsBody, TufSigner[]]> = [['targets', targets, this.repo.keys.signers('targets', this.repo.root.signed.roles.targets!.keyIDs)]]
    for (const [name, { keys, ...body }] of Object.entries(delegated)) roles.push([name, body, keys])
    for (const [name, body, keys] of roles) {
      const json = JSON.stringify([body, keys.map(k => k.keyId)])
      let entry = this.published.get(name)
      if (!entry || entry.json !== json) {
        const md = Metadata.fromJSON(MetadataKind.Targets, { signed: { ...header('targets', serial), ...body }, signatures: [] } as never)
        for (const k of keys) signWith(md, k)
        entry = { json, version: serial }
        this.published.set(name, entry)
        this.write(`${serial}.${encodeURIComponent(name)}.json`, `${encodeURIComponent(name)}.json`, metadataBytes(md))
      }
      meta[`${name}.json`] = { version: entry.version }
    }
    const snapshot = this.sign('snapshot', { ...header('snapshot', serial), meta })
    this.write(`${serial}.snapshot.json`, 'snapshot.json', snapshot)
    const timestamp = this.sign('timestamp', { ...header('timestamp', serial), meta: { 'snapshot.json': { version: serial } } })
    this.write('timestamp.json', 'timestamp.json', timestamp)
  }

  private rootVersion(): number {
    let v = this.repo.root.signed.version
    while (existsSync(join(this.repo.paths.metadata, `${v + 1}.root.json`))) v++
    return v
  }

  private sign(role: 'snapshot' | 'timestamp', signed: Record<string, Json>): Buffer {
    const md = Metadata.fromJSON(role as MetadataKind.Snapshot, { signed, signatures: [] } as never)
    for (const s of this.repo.keys.signers(role, this.repo.root.signed.roles[role]!.keyIDs)) signWith(md, s)
    return metadataBytes(md)
  }

  private write(versioned: string, plain: string, bytes: Buffer): void {
    for (const name of new Set([versioned, plain])) writeFileSync(join(this.repo.paths.metadata, name), bytes)
  }
}

/** For the tuf-conformance scenarios: a hand-made repository served over loopback (by
 * `serve` when given), a client metadata dir initialised with its root through the CLI,
 * `download` running `cairn release client … download` for some targets, and
 * `downloaded` the files the client has stored, by target path. */
export async function conformanceSetup(t: Test, serve?: (hand: HandMadeRepo) => Promise<{ url: string; requests: string[]; close(): Promise<void> }>) {
  const hand = new HandMadeRepo(makeRepo().repo)
  const server = serve ? await serve(hand) : await serveRepo(hand.repo)
  t.teardown(() => server.close())
  const dir = tmp('cairn-conformance-')
  const md = join(dir, 'metadata')
  const out = join(dir, 'targets')
  const init = await cairnCli(['release', 'client', '--metadata-dir', md, 'init', join(hand.repo.paths.metadata, '1.root.json')])
  t.equal(init.code, 0, init.stderr)
  const download = (...names: string[]) =>
    cairnCli([
      'release',
      'client',
      '--metadata-dir',
      md,
      '--metadata-url',
      `${server.url}/metadata`,
      ...names.flatMap(n => ['--target-name', n]),
      '--target-base-url',
      `${server.url}/targets`,
      '--target-dir',
      out,
      'download',
    ])
  const downloaded = (): Record<string, string> => {
    if (!existsSync(out)) return {}
    const files = readdirSync(out).filter(f => !f.endsWith('.partial'))
    return Object.fromEntries(files.map(f => [decodeURIComponent(f), readFileSync(join(out, f), 'utf8')]))
  }
  return { hand, server, md, out, download, downloaded }
}
