// Test fixtures for the release channel: a real TUF repository in a temp dir, served over
// loopback HTTP, a device-side metadata dir seeded with its root, and an "attacker" who
// holds some of the repository's keys and can sign whatever metadata they like.

import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Metadata, MetadataKind } from '@tufjs/models'
import type { Json } from '../../protocol/canonical.js'
import { signWith, type RoleName } from '../../ota/tuf-keys.js'
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
