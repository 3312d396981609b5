// Every TUF attack class from issue 4, against the real client path a device uses
// (tuf-js through ota/tuf-client.ts, targets through ota/fetcher.ts via TufChannel), a real
// repository from ota/tuf-repo.ts and a real loopback server. Each asserts the client
// REFUSES, with an error that says which check stopped it. docs/ota.md's threat-model
// table points at these test names.

import t, { type Test } from 'tap'
import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import type { Json } from '../../protocol/canonical.js'
import { sha256Hex } from '../../protocol/hash.js'
import { TufChannel } from '../../ota/tuf-channel.js'
import type { DeviceFacts } from '../../ota/release-types.js'
import { until } from '../helpers/agent.js'
import { attackServer, clientDir, forge, header, makeRepo, payload, publishedJson, refresh, serveRepo, tmp } from '../helpers/release.js'

type J = Record<string, Json>

/** A repository with release 1.0.0 published, served, and a device that has refreshed once. */
async function setup(t: Test) {
  const fx = makeRepo()
  const files = tmp()
  fx.repo.addRelease([payload(files, 'cairn-agent.tar', 40_000)], { version: '1.0.0', channel: 'stable', rollout: 100, kind: 'agent' })
  const server = await serveRepo(fx.repo)
  t.teardown(() => server.close())
  const md = clientDir(fx.repo)
  await refresh(md, server)
  return { ...fx, server, md, files }
}

const fileMeta = (file: string): J => {
  const bytes = readFileSync(file)
  const version = (JSON.parse(bytes.toString('utf8')) as { signed: { version: number } }).signed.version
  return { version, length: bytes.length, hashes: { sha256: sha256Hex(bytes) } }
}
const trusted = (md: string, role: string): number => (JSON.parse(readFileSync(join(md, `${role}.json`), 'utf8')) as { signed: { version: number } }).signed.version
const refused = (why: RegExp) => ({ code: 'TUF_METADATA', message: why })

const facts = (over: Partial<DeviceFacts> = {}): DeviceFacts => ({ deviceId: 'dev-1', runningVersion: '0.9.0', arch: 'arm64', board: 'rpi4', channel: 'stable', badVersions: new Set(), ...over })

t.test('rollback: an older timestamp is refused', async t => {
  const { repo, server, md } = await setup(t)
  const tsFile = join(repo.paths.metadata, 'timestamp.json')
  const old = readFileSync(tsFile)
  repo.refresh()
  await refresh(md, server)
  writeFileSync(tsFile, old) // a mirror replays yesterday's timestamp
  await t.rejects(refresh(md, server), refused(/version rollback.*New timestamp version 2 is less than current version 3/))
  t.equal(trusted(md, 'timestamp'), 3, 'the device keeps the newer timestamp')
})

t.test('rollback: a timestamp pointing at an older snapshot is refused (even signed with the timestamp key)', async t => {
  const { repo, server, md } = await setup(t)
  const snap1 = fileMeta(join(repo.paths.metadata, '1.snapshot.json'))
  forge(repo, 'timestamp', { ...header('timestamp', repo.timestamp.signed.version + 1), meta: { 'snapshot.json': snap1 } })
  await t.rejects(refresh(md, server), refused(/New snapshot version 1 is less than current version 2/))
})

t.test('rollback: a snapshot listing an older targets is refused (even signed with the online keys)', async t => {
  const { repo, server, md } = await setup(t)
  const targets1 = fileMeta(join(repo.paths.metadata, '1.targets.json'))
  const snap = forge(repo, 'snapshot', { ...header('snapshot', repo.snapshot.signed.version + 1), meta: { 'targets.json': targets1 } })
  forge(repo, 'timestamp', { ...header('timestamp', repo.timestamp.signed.version + 1), meta: { 'snapshot.json': snap.meta } })
  await t.rejects(refresh(md, server), refused(/New version 1 of targets.json is less than current version 2/))
})

t.test('rollback: an older root served as the next version is refused', async t => {
  const { repo, server, md } = await setup(t)
  repo.rotate('timestamp') // root v2
  await refresh(md, server)
  t.equal(trusted(md, 'root'), 2)
  writeFileSync(join(repo.paths.metadata, '3.root.json'), readFileSync(join(repo.paths.metadata, '1.root.json')))
  await t.rejects(refresh(md, server), refused(/Expected version 3, got 1/))
  t.equal(trusted(md, 'root'), 2)
})

t.test('freeze: an expired timestamp is refused', async t => {
  const { repo, server, md, clock } = await setup(t)
  clock.offsetMs = -2 * 86_400_000 // signed two days ago with a one-day life: what a frozen mirror replays
  repo.refresh()
  await t.rejects(refresh(md, server), refused(/expired.*timestamp.json is expired/))
})

t.test('freeze: an expired snapshot (and an expired targets) is refused', async t => {
  const { repo, server, md } = await setup(t)
  const targetsMeta = repo.snapshot.signed.meta['targets.json']!.toJSON() as J
  const snap = forge(repo, 'snapshot', { ...header('snapshot', repo.snapshot.signed.version + 1, -3600), meta: { 'targets.json': targetsMeta } })
  forge(repo, 'timestamp', { ...header('timestamp', repo.timestamp.signed.version + 1), meta: { 'snapshot.json': snap.meta } })
  await t.rejects(refresh(md, server), refused(/expired.*snapshot.json is expired/))

  const fresh = await setup(t)
  const r = fresh.repo
  const tg = forge(r, 'targets', { ...header('targets', r.targets.signed.version + 1, -3600), targets: publishedJson(r, 'targets').signed.targets! })
  const s2 = forge(r, 'snapshot', { ...header('snapshot', r.snapshot.signed.version + 1), meta: { 'targets.json': tg.meta } })
  forge(r, 'timestamp', { ...header('timestamp', r.timestamp.signed.version + 1), meta: { 'snapshot.json': s2.meta } })
  await t.rejects(refresh(fresh.md, fresh.server), refused(/targets.json is expired/))
})

t.test('mix-and-match: a snapshot listing a targets version that the file does not have is refused', async t => {
  const { repo, server, md } = await setup(t)
  // The snapshot says targets v3 (no hash, as the spec allows); 3.targets.json holds v2.
  writeFileSync(join(repo.paths.metadata, '3.targets.json'), readFileSync(join(repo.paths.metadata, '2.targets.json')))
  const snap = forge(repo, 'snapshot', { ...header('snapshot', repo.snapshot.signed.version + 1), meta: { 'targets.json': { version: 3 } } })
  forge(repo, 'timestamp', { ...header('timestamp', repo.timestamp.signed.version + 1), meta: { 'snapshot.json': snap.meta } })
  await t.rejects(refresh(md, server), refused(/Version 2 of targets does not match snapshot version 3/))
})

t.test('mix-and-match: an older, genuinely signed targets file served under the new name is refused', async t => {
  const { repo, server, md, files } = await setup(t)
  repo.addRelease([payload(files, 'cairn-agent.tar', 41_000, 2)], { version: '1.1.0', channel: 'stable', rollout: 100, kind: 'agent' })
  writeFileSync(join(repo.paths.metadata, '3.targets.json'), readFileSync(join(repo.paths.metadata, '2.targets.json')))
  await t.rejects(refresh(md, server), refused(/length or hash differs.*Expected length/))
})

t.test('arbitrary metadata: targets signed with the wrong key (the online keys cannot forge releases)', async t => {
  const { repo, server, md } = await setup(t)
  const targets = publishedJson(repo, 'targets').signed.targets as J
  ;(targets['cairn/1.0.0/cairn-agent.tar'] as J).hashes = { sha256: 'ab'.repeat(32) }
  const snapKey = repo.root.signed.roles.snapshot!.keyIDs
  const tg = forge(repo, 'targets', { ...header('targets', repo.targets.signed.version + 1), targets }, snapKey, 'snapshot')
  const snap = forge(repo, 'snapshot', { ...header('snapshot', repo.snapshot.signed.version + 1), meta: { 'targets.json': tg.meta } })
  forge(repo, 'timestamp', { ...header('timestamp', repo.timestamp.signed.version + 1), meta: { 'snapshot.json': snap.meta } })
  await t.rejects(refresh(md, server), refused(/targets was signed by 0\/1 keys/))
})

t.test('arbitrary target: wrong bytes (hash mismatch) and wrong length are refused by the fetcher', async t => {
  const { repo, server, md } = await setup(t)
  const channel = new TufChannel({ releaseUrl: server.url, metadataDir: md, trustedRoot: join(repo.paths.metadata, '1.root.json'), metadataRetries: 0, download: { retries: 0 } })
  const c = await channel.check(facts())
  t.ok(c, 'release offered')
  const stored = join(repo.paths.targets, 'cairn', '1.0.0', `${c!.sha256}.cairn-agent.tar`)
  const good = readFileSync(stored)
  const evil = Buffer.from(good)
  evil[100] = evil[100]! ^ 1
  writeFileSync(stored, evil)
  const out = join(tmp(), 'dl.tar')
  await t.rejects(channel.download(c!, out), { code: 'TARGET_MISMATCH', message: /SHA-256/ })
  t.notOk(existsSync(out), 'the bad file is deleted')
  writeFileSync(stored, Buffer.concat([good, Buffer.from('more')]))
  await t.rejects(channel.download(c!, out), { code: 'TARGET_MISMATCH', message: /offers 40004 bytes, the signed metadata says 40000/ })
  writeFileSync(stored, good)
  await channel.download(c!, out)
  t.ok(readFileSync(out).equals(good), 'the genuine file downloads')
})

t.test('endless data: a target stream longer than the signed length is cut at the length', async t => {
  const { repo, md } = await setup(t)
  let sent = 0
  let closed = false
  const evil = await attackServer(repo.paths.published, (req, res) => {
    if (!req.url?.startsWith('/targets/')) return false
    res.writeHead(200) // chunked, no Content-Length: nothing to refuse up front
    const chunk = Buffer.alloc(16_384, 0x41)
    const pump = (): void => {
      while (!res.destroyed && res.write(chunk)) sent += chunk.length
      if (!res.destroyed) res.once('drain', pump)
    }
    res.on('close', () => (closed = true))
    pump()
    return true
  })
  t.teardown(() => evil.close())
  const channel = new TufChannel({ releaseUrl: evil.url, metadataDir: md, trustedRoot: join(repo.paths.metadata, '1.root.json'), metadataRetries: 0, download: { retries: 0 } })
  const c = (await channel.check(facts()))!
  const out = join(tmp(), 'dl.tar')
  // the server never stops sending: the download ends only at the signed length
  await t.rejects(channel.download(c, out), { code: 'TARGET_MISMATCH', message: /more than the 40000 bytes .*endless data/ })
  t.notOk(existsSync(out), 'nothing kept')
  await until(() => closed, 10_000, 'the client to hang up')
  t.ok(closed, `the client hung up (server had queued ${sent} bytes)`)
})

t.test('endless data: a timestamp longer than tuf-js allows is refused', async t => {
  const { repo, md } = await setup(t)
  const evil = await attackServer(repo.paths.published, (req, res) => {
    if (req.url !== '/metadata/timestamp.json') return false
    res.writeHead(200)
    const chunk = Buffer.alloc(4096, 0x20)
    const pump = (): void => {
      while (!res.destroyed && res.write(chunk));
      if (!res.destroyed) res.once('drain', pump)
    }
    pump()
    return true
  })
  t.teardown(() => evil.close())
  await t.rejects(refresh(md, evil), refused(/endless data/))
})

t.test('fast-forward recovery: after a timestamp key compromise, rotating the key recovers', async t => {
  const { repo, server, md } = await setup(t)
  // The attacker, holding the timestamp key, pushes the device to timestamp v100.
  forge(repo, 'timestamp', { ...header('timestamp', 100), meta: { 'snapshot.json': repo.timestamp.signed.snapshotMeta.toJSON() as J } })
  await refresh(md, server)
  t.equal(trusted(md, 'timestamp'), 100, 'the device accepted it: it was validly signed')
  repo.refresh()
  await t.rejects(refresh(md, server), refused(/less than current version 100/), 'the legitimate timestamp now looks like a rollback')
  repo.rotate('timestamp')
  await refresh(md, server)
  t.equal(trusted(md, 'timestamp'), repo.timestamp.signed.version, 'after rotation the device follows the real timestamp again')
})

t.test('fast-forward recovery: after a snapshot key compromise, rotating the snapshot key recovers', async t => {
  const { repo, server, md } = await setup(t)
  // The attacker (snapshot and timestamp keys) pushes the device to snapshot v100.
  const targetsMeta = repo.snapshot.signed.meta['targets.json']!.toJSON() as J
  const snap = forge(repo, 'snapshot', { ...header('snapshot', 100), meta: { 'targets.json': targetsMeta } })
  forge(repo, 'timestamp', { ...header('timestamp', 100), meta: { 'snapshot.json': snap.meta } })
  await refresh(md, server)
  t.equal(trusted(md, 'snapshot'), 100)
  repo.refresh({ targets: true })
  await t.rejects(refresh(md, server), refused(/less than current version 100/), 'the real metadata now looks like a rollback')
  repo.rotate('snapshot')
  // tuf-js alone keeps a trusted timestamp whose key did not change, and its snapshot
  // version 100 keeps blocking; ota/tuf-client.ts drops the trusted timestamp and
  // snapshot when root rotates either key (spec 5.3.11).
  const bare = clientDir(repo)
  for (const f of ['root.json', 'timestamp.json', 'snapshot.json', 'targets.json']) writeFileSync(join(bare, f), readFileSync(join(md, f)))
  const { Updater } = await import('tuf-js')
  await t.rejects(new Updater({ metadataDir: bare, metadataBaseUrl: `${server.url}/metadata`, config: { fetchRetry: 0 } }).refresh(), /less than current version 100/, 'tuf-js on its own stays stuck')
  await refresh(md, server)
  t.equal(trusted(md, 'snapshot'), repo.snapshot.signed.version, 'recovered')
  t.equal(trusted(md, 'timestamp'), repo.timestamp.signed.version)
})

t.test('a root signed below the threshold is refused', async t => {
  const { repo, server, md } = await setup(t)
  const rootIds = repo.root.signed.roles.root!.keyIDs
  const next = { ...publishedJson(repo, 'root', 1).signed, ...header('root', 2, 365 * 86_400) }
  forge(repo, 'root', next, [rootIds[0]!])
  await t.rejects(refresh(md, server), refused(/root was signed by 1\/2 keys/))
  t.equal(trusted(md, 'root'), 1)
})

t.test('a rotated root not signed by its own new keys is refused', async t => {
  const { repo, server, md } = await setup(t)
  const signed = { ...publishedJson(repo, 'root', 1).signed, ...header('root', 2, 365 * 86_400) }
  const roles = signed.roles as Record<string, { keyids: string[]; threshold: number }>
  const keys = signed.keys as J
  // New root keys the attacker does not hold the private halves of: the old keys sign only.
  const stranger = makeRepo().repo.root.signed
  roles.root = { keyids: stranger.roles.root!.keyIDs, threshold: 2 }
  for (const id of stranger.roles.root!.keyIDs) keys[id] = stranger.keys[id]!.toJSON() as J
  forge(repo, 'root', signed)
  await t.rejects(refresh(md, server), refused(/root was signed by 0\/2 keys/))
})

t.test('root key rotation works: a device follows 1 → 2 → 3', async t => {
  const { repo, server, md } = await setup(t)
  repo.rotate('root')
  await refresh(md, server)
  t.equal(trusted(md, 'root'), 2)
  repo.rotate('root', { rootKeys: 1, rootThreshold: 1 })
  const late = clientDir(repo) // a device that slept through both rotations
  await refresh(md, server)
  await refresh(late, server)
  t.equal(trusted(md, 'root'), 3, 'step by step')
  t.equal(trusted(late, 'root'), 3, 'and in one go, 1 → 2 → 3')
  t.ok(server.requests.includes('200 /metadata/2.root.json') && server.requests.includes('200 /metadata/3.root.json'))
})

t.test('downgrade: a correctly signed lower version is never selected', async t => {
  const { repo, server, md, files } = await setup(t)
  repo.addRelease([payload(files, 'cairn-agent.tar', 40_000, 3)], { version: '2.0.0', channel: 'stable', rollout: 100, kind: 'agent' })
  repo.addRelease([payload(files, 'cairn-agent.tar', 40_000, 4)], { version: '1.5.0', channel: 'stable', rollout: 100, kind: 'agent' }) // published later, lower
  const channel = new TufChannel({ releaseUrl: server.url, metadataDir: md, trustedRoot: join(repo.paths.metadata, '1.root.json'), metadataRetries: 0 })
  t.equal((await channel.check(facts({ runningVersion: '1.0.0' })))?.version, '2.0.0', 'newest wins, not the latest published')
  t.equal(await channel.check(facts({ runningVersion: '2.0.0' })), null, 'nothing at the same version')
  t.equal(await channel.check(facts({ runningVersion: '3.0.0' })), null, 'nothing below what runs, however well signed')
  t.equal((await channel.check(facts({ runningVersion: '1.0.0', badVersions: new Set(['2.0.0']) })))?.version, '1.5.0', 'a bad version is skipped for the next best newer one')
  t.equal(await channel.check(facts({ runningVersion: '1.6.0', badVersions: new Set(['2.0.0']) })), null, '…but never a lower one')
})
