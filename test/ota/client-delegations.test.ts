// Delegated targets roles through `cairn release client`, as the tuf-conformance suite
// checks them: one role reached through two delegators with different keys or
// thresholds, a role kept on disk by an earlier run whose delegator changed, and unusual
// role names (quoted in URLs, kept inside the metadata dir, read back from there). The
// CLI runs as that suite runs a client: the built bundle, real files, a real loopback
// server (test/helpers/release.ts).

import t from 'tap'
import { existsSync, readFileSync, readdirSync, rmSync } from 'node:fs'
import { join } from 'node:path'
import type { TufSigner } from '../../ota/tuf-keys.js'
import { attackServer, conformanceSetup as setup, HandMadeRepo } from '../helpers/release.js'

const bytes = (text: string): Buffer => Buffer.from(text)

t.test("delegations: a role reached through a second delegator is checked against that delegator's keys and threshold", async t => {
  const key = HandMadeRepo.key
  for (const variant of ['keys', 'threshold'] as const) {
    const { hand, download, downloaded } = await setup(t)
    const [parentA, parentB, releaseA, releaseB] = [key(), key(), key(), key()]
    // parent-b names release with a key release never signed with, or with release's own
    // key but a threshold of two.
    const viaB = variant === 'keys' ? { keys: [releaseB] } : { keys: [releaseA, releaseB], threshold: 2 }
    const publish = (releaseKeys: TufSigner[]) =>
      hand.publish(
        {
          targets: {},
          delegations: HandMadeRepo.delegations([
            { name: 'parent-a', keys: [parentA], paths: ['team-a/*'] },
            { name: 'parent-b', keys: [parentB], paths: ['team-b/*'] },
          ]),
        },
        {
          'parent-a': { targets: {}, delegations: HandMadeRepo.delegations([{ name: 'release', keys: [releaseA], paths: ['team-a/*'] }]), keys: [parentA] },
          'parent-b': { targets: {}, delegations: HandMadeRepo.delegations([{ name: 'release', ...viaB, paths: ['team-b/*'] }]), keys: [parentB] },
          release: {
            targets: { 'team-a/file.txt': hand.artifact('team-a/file.txt', bytes('trusted A')), 'team-b/file.txt': hand.artifact('team-b/file.txt', bytes('malicious B')) },
            keys: releaseKeys,
          },
        },
      )
    publish([releaseA])
    let r = await download('team-a/file.txt', 'team-b/file.txt')
    t.equal(r.code, 1, `${variant}: refused`)
    t.match(r.stderr, /delegated role release \(delegated by parent-b\) refused \(not signed by a threshold of trusted keys\)/, variant)
    t.same(downloaded(), { 'team-a/file.txt': 'trusted A' }, `${variant}: A's file through A, nothing through B`)

    publish([releaseA, releaseB]) // signed for both delegators: both paths hold
    r = await download('team-a/file.txt', 'team-b/file.txt')
    t.equal(r.code, 0, r.stderr)
    t.same(downloaded(), { 'team-a/file.txt': 'trusted A', 'team-b/file.txt': 'malicious B' }, `${variant}: both once signed for both`)
  }
})

t.test("delegations: a role kept on disk by an earlier run is checked against its delegator's current keys and threshold", async t => {
  const { hand, md, out, download, downloaded } = await setup(t)
  const [k1, k2] = [HandMadeRepo.key(), HandMadeRepo.key()]
  const apps = { targets: { 'apps/one.txt': hand.artifact('apps/one.txt', bytes('one')) } }
  const publish = (delegation: { keys: TufSigner[]; threshold?: number }, signers: TufSigner[]) =>
    hand.publish({ targets: {}, delegations: HandMadeRepo.delegations([{ name: 'apps', ...delegation, paths: ['apps/*'] }]) }, { apps: { ...apps, keys: signers } })

  publish({ keys: [k1] }, [k1])
  let r = await download('apps/one.txt')
  t.equal(r.code, 0, r.stderr)
  t.ok(existsSync(join(md, 'apps.json')), 'apps kept in the metadata dir')
  const cached = readFileSync(join(md, 'apps.json'))

  // The delegator moves apps to another key; apps itself is not re-signed (same version).
  rmSync(out, { recursive: true })
  publish({ keys: [k2] }, [k1])
  r = await download('apps/one.txt')
  t.equal(r.code, 1, 'the kept apps is not trusted by name')
  t.match(r.stderr, /delegated role apps \(delegated by targets\) refused \(not signed by a threshold of trusted keys\)/)
  t.same(downloaded(), {})

  // The delegator asks for two signatures where apps has one.
  publish({ keys: [k1, k2], threshold: 2 }, [k1])
  r = await download('apps/one.txt')
  t.equal(r.code, 1, 'threshold raised')
  t.match(r.stderr, /delegated role apps .*not signed by a threshold/)
  t.same(downloaded(), {})
  t.ok(readFileSync(join(md, 'apps.json')).equals(cached), 'the refused role was not written over the kept one')

  publish({ keys: [k1, k2], threshold: 2 }, [k1, k2])
  r = await download('apps/one.txt')
  t.equal(r.code, 0, r.stderr)
  t.same(downloaded(), { 'apps/one.txt': 'one' })
})

t.test('delegations: unusual role names are quoted in URLs, kept inside the metadata dir and read back from there', async t => {
  // The static server decodes paths; this one serves metadata by the name as requested,
  // so a role called "a/b" is one file, not a directory.
  const requests: string[] = []
  const { hand, md, download, downloaded } = await setup(t, async hand => {
    const s = await attackServer(hand.repo.paths.published, (req, res) => {
      requests.push(req.url ?? '')
      if (!req.url?.startsWith('/metadata/')) return false
      const file = join(hand.repo.paths.metadata, req.url.slice('/metadata/'.length))
      const body = existsSync(file) ? readFileSync(file) : null
      res.writeHead(body ? 200 : 404, { 'Content-Length': body?.length ?? 0 })
      res.end(body)
      return true
    })
    return { ...s, requests }
  })
  const names = ['../escape', 'a/b?c#d']
  const [k1, k2] = [HandMadeRepo.key(), HandMadeRepo.key()]
  hand.publish(
    {
      targets: {},
      delegations: HandMadeRepo.delegations([
        { name: names[0]!, keys: [k1], paths: ['x/*'] },
        { name: names[1]!, keys: [k2], paths: ['y/*'] },
      ]),
    },
    {
      [names[0]!]: { targets: { 'x/one.txt': hand.artifact('x/one.txt', bytes('x1')) }, keys: [k1] },
      [names[1]!]: { targets: { 'y/two.txt': hand.artifact('y/two.txt', bytes('y2')) }, keys: [k2] },
    },
  )
  let r = await download('x/one.txt', 'y/two.txt')
  t.equal(r.code, 0, r.stderr)
  t.same(downloaded(), { 'x/one.txt': 'x1', 'y/two.txt': 'y2' })
  for (const n of names) t.ok(requests.includes(`/metadata/2.${encodeURIComponent(n)}.json`), `${n} requested quoted`)
  t.same(readdirSync(md).sort(), [...names.map(n => `${encodeURIComponent(n)}.json`), 'root.json', 'snapshot.json', 'targets.json', 'timestamp.json'].sort(), 'one file per role, inside the dir')
  t.same(readdirSync(join(md, '..')).sort(), ['metadata', 'targets'], 'nothing written beside it')

  requests.length = 0
  r = await download('x/one.txt', 'y/two.txt')
  t.equal(r.code, 0, r.stderr)
  t.same(
    requests.filter(u => names.some(n => u.includes(encodeURIComponent(n)))),
    [],
    'the kept delegated roles are read back, not fetched again',
  )
})
