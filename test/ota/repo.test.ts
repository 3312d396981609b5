// The release repository (ota/tuf-repo.ts): what init, add, set-rollout, refresh and rotate
// write is spec-shaped TUF metadata that tuf-js accepts, and the keys stay private.

import t from 'tap'
import { createHash } from 'node:crypto'
import { mkdirSync, readdirSync, readFileSync, renameSync, statSync, writeFileSync } from 'node:fs'
import { join, relative } from 'node:path'
import { canonicalize } from '@tufjs/canonical-json'
import { lockRepo } from '../../ota/tuf-layout.js'
import { TufRepo } from '../../ota/tuf-repo.js'
import { targetInfo } from '../../ota/tuf-client.js'
import { clientDir, makeRepo, payload, refresh, serveRepo, tmp } from '../helpers/release.js'

const walk = (dir: string): string[] => readdirSync(dir, { withFileTypes: true }).flatMap(e => (e.isDirectory() ? walk(join(dir, e.name)) : [join(dir, e.name)]))

t.test('init: roles, thresholds, key ids, file layout and modes', async t => {
  const { repo, dir } = makeRepo()
  const root = repo.root.signed
  t.equal(root.roles.root!.threshold, 2, 'root 2 of …')
  t.equal(root.roles.root!.keyIDs.length, 3, '… 3 keys')
  for (const r of ['targets', 'snapshot', 'timestamp']) t.same([root.roles[r]!.keyIDs.length, root.roles[r]!.threshold], [1, 1], `${r}: one key`)
  t.equal(root.consistentSnapshot, true)
  for (const [id, key] of Object.entries(root.keys)) {
    const expected = createHash('sha256').update(canonicalize(key.toJSON())).digest('hex')
    t.equal(id, expected, 'key id = sha256 of the canonical key object (TUF spec)')
    t.equal(key.keyType, 'ed25519')
    t.match(key.keyVal.public, /^[0-9a-f]{64}$/)
  }
  const published = walk(repo.paths.published)
    .map(f => relative(repo.paths.published, f))
    .sort()
  t.same(published, ['metadata/1.root.json', 'metadata/1.snapshot.json', 'metadata/1.targets.json', 'metadata/timestamp.json'])
  const keyFiles = readdirSync(repo.paths.keys)
  t.equal(keyFiles.length, 6, 'six private keys')
  for (const f of keyFiles) {
    t.match(f, /^(root|targets|snapshot|timestamp)\.[0-9a-f]{64}\.key$/, 'named by role and key id')
    t.equal(statSync(join(repo.paths.keys, f)).mode & 0o777, 0o600, `${f} is 0600`)
  }
  t.equal(statSync(repo.paths.keys).mode & 0o777, 0o700, 'keys/ is 0700')
  t.ok(relative(repo.paths.published, repo.paths.keys).startsWith('..'), 'keys/ is not under published/')
  for (const f of walk(repo.paths.published)) t.notMatch(readFileSync(f, 'utf8'), /PRIVATE KEY/, `${f}: no private key material`)
  t.throws(() => TufRepo.init({ dir }), /already holds a repository/, 'init refuses to overwrite')
  t.throws(() => TufRepo.init({ dir: join(tmp(), 'r'), rootKeys: 2, rootThreshold: 3 }), /root-threshold/, 'threshold above key count refused')
})

t.test('spec-correct fields: expires without fractional seconds, spec_version', async t => {
  const { repo } = makeRepo()
  for (const f of walk(repo.paths.metadata)) {
    const { signed } = JSON.parse(readFileSync(f, 'utf8')) as { signed: { expires: string; spec_version: string } }
    t.match(signed.expires, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/, `${relative(repo.paths.metadata, f)} expires ${signed.expires}`)
    t.equal(signed.spec_version, '1.0.31')
  }
  const days = (s: string) => (new Date(s).getTime() - Date.now()) / 86_400_000
  t.ok(Math.abs(days(repo.root.signed.expires) - 365) < 0.01, 'root: 1 year')
  t.ok(Math.abs(days(repo.targets.signed.expires) - 90) < 0.01, 'targets: 3 months')
  t.ok(Math.abs(days(repo.snapshot.signed.expires) - 7) < 0.01, 'snapshot: 1 week')
  t.ok(Math.abs(days(repo.timestamp.signed.expires) - 1) < 0.01, 'timestamp: 1 day')
})

t.test('add, set-rollout, refresh: tuf-js accepts every step and sees the custom metadata', async t => {
  const { repo } = makeRepo()
  const server = await serveRepo(repo)
  t.teardown(() => server.close())
  const md = clientDir(repo)
  await refresh(md, server)

  const files = tmp()
  const added = repo.addRelease([payload(files, 'cairn-agent-arm64.tar', 5000), payload(files, 'cairn-agent-x64.tar', 6000, 2)], {
    version: '1.2.0',
    channel: 'stable',
    minVersion: '1.0.0',
    arch: ['arm64'],
    boards: ['rpi4', 'rpi5'],
    rollout: 25,
    kind: 'agent',
  })
  t.same(
    added.map(a => a.path),
    ['cairn/1.2.0/cairn-agent-arm64.tar', 'cairn/1.2.0/cairn-agent-x64.tar'],
  )
  for (const a of added) {
    const stored = join(repo.paths.targets, 'cairn', '1.2.0', `${a.sha256}.${a.path.split('/').pop()}`)
    t.equal(createHash('sha256').update(readFileSync(stored)).digest('hex'), a.sha256, `${a.path} stored as targets/cairn/1.2.0/<sha256>.<name>`)
  }
  t.same([repo.targets.signed.version, repo.snapshot.signed.version, repo.timestamp.signed.version], [2, 2, 2], 'targets, snapshot, timestamp re-signed')

  let trusted = await refresh(md, server)
  t.same(trusted.topLevelPaths(), ['cairn/1.2.0/cairn-agent-arm64.tar', 'cairn/1.2.0/cairn-agent-x64.tar'])
  const info = await targetInfo(trusted, 'cairn/1.2.0/cairn-agent-arm64.tar')
  t.same(
    info?.custom,
    { cairn: { version: '1.2.0', channel: 'stable', rollout: 25, kind: 'agent', minVersion: '1.0.0', arch: ['arm64'], boards: ['rpi4', 'rpi5'] } },
    'custom.cairn is the ReleaseInfo',
  )
  t.equal(info?.length, 5000)

  t.throws(() => repo.addRelease([payload(files, 'cairn-agent-arm64.tar', 5001)], { version: '1.2.0', channel: 'stable', rollout: 25, kind: 'agent' }), /immutable/, 'a published path cannot change')
  t.throws(() => repo.addRelease([payload(files, 'a.tar', 1)], { version: 'v1.3', channel: 'stable', rollout: 1, kind: 'agent' }), /semantic version/)
  t.throws(() => repo.addRelease([payload(files, 'a.tar', 1)], { version: '1.3.0', channel: 'Stable!', rollout: 1, kind: 'agent' }), /channel/)
  t.throws(() => repo.addRelease([payload(files, 'a.tar', 1)], { version: '1.3.0', channel: 'stable', rollout: 101, kind: 'agent' }), /rollout/)

  t.same(repo.setRollout('1.2.0', 0), ['cairn/1.2.0/cairn-agent-arm64.tar', 'cairn/1.2.0/cairn-agent-x64.tar'], 'halt: rollout 0')
  trusted = await refresh(md, server)
  t.equal(
    (await targetInfo(trusted, 'cairn/1.2.0/cairn-agent-x64.tar'))?.custom.cairn && ((await targetInfo(trusted, 'cairn/1.2.0/cairn-agent-x64.tar'))!.custom.cairn as { rollout: number }).rollout,
    0,
    'the device sees the halt',
  )
  t.throws(() => repo.setRollout('9.9.9', 50), /no published target/)
  t.throws(() => repo.setRollout('1.2.0', 50, undefined, 'os'), /no published os target has version 1\.2\.0/, 'by kind: no OS release 1.2.0')

  const before = repo.timestamp.signed.version
  t.same(repo.refresh().signed, ['timestamp'], 'refresh: only the timestamp while the snapshot is young')
  t.equal(repo.timestamp.signed.version, before + 1)
  await refresh(md, server)

  // Reopening reads the state back from the published tree.
  const again = TufRepo.open({ dir: repo.paths.dir })
  t.same([again.root.signed.version, again.targets.signed.version, again.snapshot.signed.version, again.timestamp.signed.version], [1, 3, 3, 4])
  t.same(
    again.list().map(x => x.info?.rollout),
    [0, 0],
  )
})

t.test('set-rollout by kind: an agent and an OS release of one version apart', async t => {
  const { repo } = makeRepo()
  const files = tmp()
  repo.addRelease([payload(files, 'cairn-agent.tar', 100)], { version: '2.0.0', channel: 'stable', rollout: 50, kind: 'agent' })
  repo.addRelease([payload(files, 'cairn-os.img', 100, 2)], { version: '2.0.0', channel: 'stable', rollout: 50, kind: 'os' })
  t.same(repo.setRollout('2.0.0', 0, 'stable', 'agent'), ['cairn/2.0.0/cairn-agent.tar'], 'the agent release alone')
  t.same(
    repo.list().map(r => [r.info?.kind, r.info?.rollout]),
    [
      ['agent', 0],
      ['os', 50],
    ],
  )
  t.same(repo.setRollout('2.0.0', 10), ['cairn/2.0.0/cairn-agent.tar', 'cairn/2.0.0/cairn-os.img'], 'without a kind: both')
})

t.test('refresh re-signs the snapshot past half its life, and warns about offline roles', async t => {
  const { repo, clock } = makeRepo()
  clock.offsetMs = 4 * 86_400_000 // 4 days on: the 1-week snapshot is past half
  const r = repo.refresh()
  t.same(r.signed, ['snapshot', 'timestamp'])
  t.same(r.warnings, [])
  clock.offsetMs = 70 * 86_400_000
  const late = repo.refresh()
  t.match(late.warnings.join('\n'), /targets metadata expires .*refresh --targets/)
  t.same(repo.refresh({ targets: true, root: true }).signed, ['root', 'targets', 'snapshot', 'timestamp'])
  t.equal(repo.root.signed.version, 2, 'refresh --root publishes a new root version with the same keys')
})

t.test('rotate: every role, the client follows', async t => {
  const { repo } = makeRepo()
  const server = await serveRepo(repo)
  t.teardown(() => server.close())
  const md = clientDir(repo)
  await refresh(md, server)
  for (const role of ['timestamp', 'snapshot', 'targets'] as const) {
    const oldId = repo.root.signed.roles[role]!.keyIDs[0]!
    const r = repo.rotate(role)
    t.not(r.newKeyIds[0], oldId, `${role}: new key`)
    t.same(repo.root.signed.roles[role]!.keyIDs, r.newKeyIds)
    t.notOk(repo.root.signed.keys[oldId], 'the old key leaves root')
    t.ok(statSync(join(repo.paths.keys, 'retired', `${role}.${oldId}.key`)).isFile(), 'old key moved to keys/retired/')
    await refresh(md, server)
    t.equal(JSON.parse(readFileSync(join(md, 'root.json'), 'utf8')).signed.version, repo.root.signed.version, `${role}: client follows to root v${repo.root.signed.version}`)
  }
  const oldRoot = repo.root.signed.roles.root!.keyIDs
  const r = repo.rotate('root', { rootKeys: 5, rootThreshold: 3 })
  t.equal(r.newKeyIds.length, 5)
  t.same(repo.root.signed.roles.root!.threshold, 3)
  const sigs = Object.keys(repo.root.signatures)
  t.ok(sigs.filter(id => oldRoot.includes(id)).length >= 2, 'new root signed by the old threshold (2 of the old keys)')
  t.ok(
    r.newKeyIds.every(id => sigs.includes(id)),
    'and by every new root key',
  )
  await refresh(md, server)
  t.equal(JSON.parse(readFileSync(join(md, 'root.json'), 'utf8')).signed.version, 5)
  t.throws(() => TufRepo.open({ dir: repo.paths.dir, keysDir: tmp() }).refresh(), { code: 'TUF_KEYS' }, 'signing without the keys names what is missing')
})

t.test('keys split across media: offline root and targets keys, online keys on the server', async t => {
  const { repo } = makeRepo()
  const offline = join(tmp(), 'usb')
  mkdirSync(offline, { mode: 0o700 })
  for (const f of readdirSync(repo.paths.keys)) if (/^(root|targets)\./.test(f)) renameSync(join(repo.paths.keys, f), join(offline, f))
  const online = TufRepo.open({ dir: repo.paths.dir })
  t.same(online.refresh().signed, ['timestamp'], 'the publishing machine refreshes with the online keys alone')
  t.throws(() => online.addRelease([payload(tmp(), 'a.tar', 10)], { version: '1.0.0', channel: 'stable', rollout: 100, kind: 'agent' }), {
    code: 'TUF_KEYS',
    message: /signing targets needs 1 of its keys, 0 found/,
  })
  t.throws(() => online.rotate('timestamp'), { code: 'TUF_KEYS', message: /signing root needs 2/ })
  const both = TufRepo.open({ dir: repo.paths.dir, keysDir: [offline, repo.paths.keys] })
  const r = both.rotate('timestamp')
  t.ok(statSync(join(repo.paths.keys, `timestamp.${r.newKeyIds[0]}.key`)).isFile(), 'the new timestamp key is written beside the old one (online)')
  both.addRelease([payload(tmp(), 'a.tar', 10)], { version: '1.0.0', channel: 'stable', rollout: 100, kind: 'agent' })
  const rr = both.rotate('root')
  t.ok(
    rr.newKeyIds.every(id => statSync(join(offline, `root.${id}.key`)).isFile()),
    'new root keys go to the offline medium',
  )
  t.ok(statSync(join(offline, 'retired')).isDirectory(), 'old root keys retired on the medium')
})

t.test('one signing command at a time: the repository lock', async t => {
  const dir = tmp()
  const unlock = lockRepo(dir)
  t.throws(() => lockRepo(dir), { code: 'LOCKED', message: new RegExp(`pid ${process.pid}`) })
  unlock()
  lockRepo(dir)() // free again
  writeFileSync(join(dir, '.lock'), '999999999') // left by a process that is gone
  const again = lockRepo(dir)
  t.equal(readFileSync(join(dir, '.lock'), 'utf8'), String(process.pid), 'a stale lock is taken over')
  again()
})
