// The fleet service following a release repository: a real TUF repository served over
// loopback HTTP, read with OTA's own verifier (ota/release-list.ts) into a real SQLite
// store; a rollout raised, a release added, and metadata signed by keys the pinned root
// does not trust (nothing recorded, the reason shown).

import t from 'tap'
import { join } from 'node:path'
import { listReleases, type ReleaseListing } from '../../../ota/release-list.js'
import { createLogger } from '../../../protocol/log.js'
import { ReleaseWatch, summarise } from '../../../fleet/service/releases.js'
import { SqliteFleetStore } from '../../../fleet/service/sqlite-store.js'
import { makeRepo, payload, serveRepo, tmp } from '../../helpers/release.js'

const log = createLogger({ level: 'fatal', out: { write: () => true } })

t.test('summarise: targets of one release taken together', async t => {
  const c = { length: 1, sha256: 'x', channel: 'stable', kind: 'agent' as const }
  t.same(
    summarise({
      targetsVersion: 3,
      expires: '2030-01-01T00:00:00Z',
      releases: [
        { ...c, targetPath: 'cairn/1.4.0/a.tar', version: '1.4.0', rollout: 10, arch: ['arm64'] },
        { ...c, targetPath: 'cairn/1.4.0/b.tar', version: '1.4.0', rollout: 20, arch: ['x64'], boards: ['rpi5'] },
        { ...c, targetPath: 'cairn/1.4.0/c.tar', version: '1.4.0', rollout: 20, channel: 'beta' },
      ],
    }),
    [
      { kind: 'agent', version: '1.4.0', channel: 'stable', rollout: 20, targets: 2, arch: ['arm64', 'x64'], boards: null },
      { kind: 'agent', version: '1.4.0', channel: 'beta', rollout: 20, targets: 1, arch: null, boards: null },
    ],
    'the highest rollout, the arches named, boards for any (one target names none)',
  )
})

t.test('a real repository over HTTP: releases and rollout changes recorded, untrusted metadata refused', async t => {
  const { repo } = makeRepo()
  const files = tmp('cairn-rel-files-')
  repo.addRelease([payload(files, 'cairn-agent-arm64.tar', 3000), payload(files, 'cairn-agent-x64.tar', 3000, 2)], { version: '1.4.0', channel: 'stable', rollout: 10, kind: 'agent', arch: ['arm64'] })
  const server = await serveRepo(repo)
  t.teardown(() => server.close())
  const state = tmp('cairn-rel-state-')
  const store = new SqliteFleetStore(state)
  t.teardown(() => store.close())
  let now = 1_000_000
  const clock = { now: () => now }
  const root = join(repo.paths.metadata, '1.root.json')
  const watch = new ReleaseWatch({
    url: server.url,
    list: () => listReleases({ metadataUrl: `${server.url}/metadata`, metadataDir: join(state, 'tuf'), trustedRoot: root, fetchRetries: 0, fetchTimeoutMs: 5000 }),
    store,
    clock,
    log,
    everyMs: 60_000,
  })
  t.teardown(() => watch.stop())

  await watch.poll()
  t.match(watch.state(), { ok: true, error: null, checkedAt: now, verifiedAt: now, targetsVersion: Number })
  t.match(await store.releases(10), [{ kind: 'agent', version: '1.4.0', channel: 'stable', rollout: 10, targets: 2, firstSeen: now }])

  now += 3_600_000
  repo.setRollout('1.4.0', 50)
  repo.addRelease([payload(files, 'cairn-os.img', 2000, 3)], { version: '7.0.0', channel: 'stable', rollout: 100, kind: 'os' })
  await watch.poll()
  const all = await store.releases(10)
  t.match(
    all.map(r => [r.kind, r.version, r.rollout]),
    [
      ['os', '7.0.0', 100],
      ['agent', '1.4.0', 50],
    ],
  )
  t.same(
    all[1]!.history.map(h => h.rollout),
    [10, 50],
    'the rollout over time',
  )
  await watch.poll()
  t.equal((await store.releases(10))[1]!.history.length, 2, 'an unchanged listing adds nothing')

  // the same repository read against another repository's root: nothing verifies
  const other = makeRepo().repo
  const stranger = new ReleaseWatch({
    url: server.url,
    list: () =>
      listReleases({
        metadataUrl: `${server.url}/metadata`,
        metadataDir: join(tmp('cairn-rel-other-'), 'tuf'),
        trustedRoot: join(other.paths.metadata, '1.root.json'),
        fetchRetries: 0,
        fetchTimeoutMs: 5000,
      }),
    store,
    clock,
    log,
    everyMs: 60_000,
  })
  now += 1000
  repo.setRollout('1.4.0', 100)
  await stranger.poll()
  t.match(stranger.state(), { ok: false, error: /TUF_METADATA/, checkedAt: now, verifiedAt: null, targetsVersion: null })
  t.equal((await store.releases(10)).find(r => r.kind === 'agent')?.rollout, 50, 'nothing recorded from metadata that does not verify')

  // the server gone: the last verified listing stands, the failure is shown
  await server.close()
  now += 1000
  await watch.poll()
  t.match(watch.state(), { ok: false, error: /DOWNLOAD/, checkedAt: now, verifiedAt: now - 2000 })
})

t.test('start polls at once and again every everyMs; onChange when the page would change', async t => {
  const state = tmp('cairn-rel-state-')
  const store = new SqliteFleetStore(state)
  t.teardown(() => store.close())
  let calls = 0
  let changes = 0
  let release: () => void = () => {}
  const fourth = new Promise<void>(r => (release = r))
  const rel = { kind: 'agent' as const, version: '1.0.0', channel: 'stable', rollout: 10, targetPath: 'cairn/1.0.0/a.tar', length: 1, sha256: 'x' }
  const watch = new ReleaseWatch({
    url: 'http://127.0.0.1:9/none',
    list: async () => {
      calls++
      if (calls === 4) release() // the third has ended by now
      if (calls === 2) throw new Error('server down')
      return { targetsVersion: calls, expires: '2030-01-01T00:00:00Z', releases: [rel] }
    },
    store,
    clock: { now: () => 5 },
    log,
    everyMs: 5,
    onChange: () => changes++,
  })
  watch.start()
  await fourth
  await watch.stop()
  t.ok(calls >= 4, 'polled again after everyMs')
  t.ok(changes >= 3, `told: the release recorded, the failure, the recovery (${changes})`)
})

t.test('stop: waits a little for a poll under way, which then records nothing', async t => {
  const store = new SqliteFleetStore(tmp('cairn-rel-state-'))
  t.teardown(() => store.close())
  let answer: (l: ReleaseListing) => void = () => {}
  let asked: () => void = () => {}
  const polling = new Promise<void>(r => (asked = r))
  const watch = new ReleaseWatch({
    url: 'http://127.0.0.1:9/none',
    list: () => {
      asked()
      return new Promise<ReleaseListing>(r => (answer = r))
    },
    store,
    clock: { now: () => 5 },
    log,
    everyMs: 3_600_000,
    stopWaitMs: 20,
  })
  watch.start()
  await polling
  await watch.stop()
  t.pass('stop came back while the release server had not answered')
  answer({
    targetsVersion: 1,
    expires: '2030-01-01T00:00:00Z',
    releases: [{ kind: 'agent', version: '1.0.0', channel: 'stable', rollout: 10, targetPath: 'cairn/1.0.0/a.tar', length: 1, sha256: 'x' }],
  })
  await watch.poll()
  t.same(await store.releases(10), [], 'its late answer recorded nothing')
  t.equal(watch.state().checkedAt, null, 'nor changed what the page shows')
})
