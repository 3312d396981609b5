// The device's release channel (ota/tuf-channel.ts): which release a device is offered
// (channel, arch, board, kind, anti-rollback, bad versions, pins, minimum version,
// rollout), the trusted-root seeding, and a v1 → v2 check-and-download over loopback.

import t from 'tap'
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { rolloutBucket } from '../../ota/rollout-bucket.js'
import { refusal, selectRelease, TufChannel } from '../../ota/tuf-channel.js'
import { seedTrustedRoot } from '../../ota/tuf-client.js'
import type { DeviceFacts, ReleaseCandidate } from '../../ota/release-types.js'
import { makeRepo, payload, serveRepo, tmp } from '../helpers/release.js'

const facts = (over: Partial<DeviceFacts> = {}): DeviceFacts => ({ deviceId: 'dev-1', runningVersion: '1.0.0', arch: 'arm64', board: 'rpi5', channel: 'stable', badVersions: new Set(), ...over })
const cand = (over: Partial<ReleaseCandidate> = {}): ReleaseCandidate => ({
  version: '1.1.0',
  channel: 'stable',
  rollout: 100,
  kind: 'agent',
  targetPath: `cairn/${over.version ?? '1.1.0'}/cairn-agent.tar`,
  length: 1,
  sha256: '0'.repeat(64),
  ...over,
})

t.test('refusal names each rule', async t => {
  const f = facts()
  t.equal(refusal(cand(), f, 'agent'), null)
  t.equal(refusal(cand({ channel: 'beta' }), f, 'agent'), 'channel beta')
  t.equal(refusal(cand({ kind: 'os' }), f, 'agent'), 'kind os')
  t.equal(refusal(cand({ arch: ['x64'] }), f, 'agent'), 'not built for arm64')
  t.equal(refusal(cand({ arch: ['x64', 'arm64'] }), f, 'agent'), null)
  t.equal(refusal(cand({ boards: ['rpi4'] }), f, 'agent'), 'not for board rpi5')
  t.equal(refusal(cand({ version: '1.0.0' }), f, 'agent'), 'not newer than 1.0.0')
  t.equal(refusal(cand({ version: '0.9.9' }), f, 'agent'), 'not newer than 1.0.0')
  t.equal(refusal(cand({ version: '1.0.1-rc.1' }), facts({ runningVersion: '1.0.1' }), 'agent'), 'not newer than 1.0.1', 'a pre-release of what runs is older')
  t.equal(refusal(cand(), facts({ badVersions: new Set(['1.1.0']) }), 'agent'), 'failed its health check here before')
  t.equal(refusal(cand({ version: '1.2.0' }), facts({ pinnedVersion: '1.1.0' }), 'agent'), 'newer than the pinned 1.1.0')
  t.equal(refusal(cand({ version: '1.1.0' }), facts({ pinnedVersion: '1.1.0' }), 'agent'), null, 'up to the pin is fine')
  t.equal(refusal(cand({ minVersion: '1.0.5' }), f, 'agent'), 'needs 1.0.5 or newer to update from')
  t.equal(refusal(cand({ minVersion: '1.0.0' }), f, 'agent'), null)
  t.equal(refusal(cand({ rollout: 0 }), f, 'agent'), 'outside the 0 % rollout', 'halted')
  const b = rolloutBucket('dev-1', 'cairn/1.1.0/cairn-agent.tar')
  t.equal(refusal(cand({ rollout: Math.floor(b) }), f, 'agent'), `outside the ${Math.floor(b)} % rollout`)
  t.equal(refusal(cand({ rollout: Math.ceil(b + 0.001) }), f, 'agent'), null)
  t.throws(() => refusal(cand(), facts({ runningVersion: 'dev' }), 'agent'), { code: 'BAD_REQUEST' })
})

t.test('selection: newest admissible, stepping stones, most specific target', async t => {
  const f = facts()
  t.equal(selectRelease([cand({ version: '1.1.0' }), cand({ version: '1.3.0', minVersion: '1.1.0' }), cand({ version: '1.2.0' })], f)?.version, '1.2.0', '1.3.0 needs 1.1.0: take 1.2.0 first')
  const generic = cand({ version: '1.2.0', targetPath: 'cairn/1.2.0/a.tar' })
  const specific = cand({ version: '1.2.0', targetPath: 'cairn/1.2.0/b.tar', arch: ['arm64'] })
  t.equal(selectRelease([generic, specific], f)?.targetPath, 'cairn/1.2.0/b.tar')
  t.equal(selectRelease([cand({ version: '1.2.0', kind: 'os' })], f, 'os')?.kind, 'os')
  t.equal(selectRelease([], f), null)
})

t.test('trusted root seeding: a newer shipped root replaces the kept one, an older never does', async t => {
  const { repo } = makeRepo()
  repo.rotate('root')
  const md = join(tmp(), 'md')
  const v1 = join(repo.paths.metadata, '1.root.json')
  const v2 = join(repo.paths.metadata, '2.root.json')
  seedTrustedRoot(md, v1)
  t.equal(JSON.parse(readFileSync(join(md, 'root.json'), 'utf8')).signed.version, 1)
  seedTrustedRoot(md, v2)
  t.equal(JSON.parse(readFileSync(join(md, 'root.json'), 'utf8')).signed.version, 2, 'newer shipped root taken')
  seedTrustedRoot(md, v1)
  t.equal(JSON.parse(readFileSync(join(md, 'root.json'), 'utf8')).signed.version, 2, 'never back to an older one')
  writeFileSync(join(md, 'root.json'), '{"torn')
  seedTrustedRoot(md, v1)
  t.equal(JSON.parse(readFileSync(join(md, 'root.json'), 'utf8')).signed.version, 1, 'a torn root.json is replaced by the shipped one (TUF walks forward again)')
  t.throws(() => seedTrustedRoot(md, join(repo.paths.metadata, 'timestamp.json')), { code: 'TUF_METADATA' })
})

t.test('v1 → v2: check offers the release, download verifies it, progress is reported', async t => {
  const { repo } = makeRepo()
  const files = tmp()
  const bundle = payload(files, 'cairn-agent-arm64.tar', 500_000)
  repo.addRelease([bundle], { version: '2.0.0', channel: 'stable', arch: ['arm64'], rollout: 100, kind: 'agent' })
  repo.addRelease([payload(files, 'cairn-agent-x64.tar', 1000)], { version: '2.0.0', channel: 'stable', arch: ['x64'], rollout: 100, kind: 'agent' })
  const server = await serveRepo(repo)
  t.teardown(() => server.close())
  const state = tmp()
  const shipped = join(state, 'image-root.json')
  copyFileSync(join(repo.paths.metadata, '1.root.json'), shipped)
  const channel = new TufChannel({ releaseUrl: server.url + '/', metadataDir: join(state, 'tuf'), trustedRoot: shipped, metadataRetries: 0 })
  const c = await channel.check(facts({ runningVersion: '1.0.0' }))
  t.match(c, { version: '2.0.0', targetPath: 'cairn/2.0.0/cairn-agent-arm64.tar', length: 500_000, arch: ['arm64'], kind: 'agent' })
  const out = join(state, 'download', 'slot.tar')
  mkdirSync(join(state, 'download'))
  const progress: number[] = []
  await channel.download(c!, out, p => progress.push(p.bytes / p.total))
  t.ok(readFileSync(out).equals(readFileSync(bundle)))
  t.equal(progress.at(-1), 1)
  t.match(channel.lastDownload, { received: 500_000, refetched: 0, cached: false })
  t.equal(await channel.check(facts({ runningVersion: '2.0.0' })), null, 'up to date')
  repo.setRollout('2.0.0', 0)
  t.equal(await channel.check(facts({ runningVersion: '1.0.0' })), null, 'halted release no longer offered')
})

t.test('an unreachable server is a DOWNLOAD error, not a verification failure', async t => {
  const { repo } = makeRepo()
  const server = await serveRepo(repo)
  const url = server.url
  await server.close()
  const channel = new TufChannel({ releaseUrl: url, metadataDir: join(tmp(), 'tuf'), trustedRoot: join(repo.paths.metadata, '1.root.json'), metadataRetries: 0 })
  await t.rejects(channel.check(facts()), { code: 'DOWNLOAD', message: /cannot reach the release server/ })
})
