// Target downloads by `cairn release client` in the shapes the tuf-conformance suite
// checks and `cairn release` never publishes: hashes other than SHA-256 (and wrong,
// unknown or weak ones), several --target-name in one run, and a root without consistent
// snapshots. The CLI runs as that suite runs a client: the built bundle, real files, a
// real loopback server (test/helpers/release.ts). test/ota/tuf-conformance.sh runs the
// upstream suite itself where its Python dependencies are installed.

import t from 'tap'
import type { Json } from '../../protocol/canonical.js'
import { conformanceSetup as setup } from '../helpers/release.js'

const bytes = (text: string): Buffer => Buffer.from(text)
const hashesOf = (entry: Json): Record<string, string> => (entry as { hashes: Record<string, string> }).hashes

t.test('hash algorithms: a target listing SHA-512 only, SHA-384 only, BLAKE2b only, or SHA-256 with SHA-512 downloads by a listed hash', async t => {
  const { hand, server, download, downloaded } = await setup(t)
  const algorithms: Record<string, string[]> = { 'sha512.txt': ['sha512'], 'sha384.txt': ['sha384'], 'blake2b.txt': ['blake2b'], 'both.txt': ['sha256', 'sha512'] }
  const targets: Record<string, Json> = {}
  for (const [name, algs] of Object.entries(algorithms)) targets[name] = hand.artifact(name, bytes(`contents of ${name}`), algs)
  hand.publish({ targets })
  for (const name of Object.keys(algorithms)) {
    const r = await download(name)
    t.equal(r.code, 0, `${name}: ${r.stderr}`)
    t.equal(downloaded()[name], `contents of ${name}`)
    const fetched = server.requests.filter(l => l.startsWith('200 /targets/') && l.endsWith(`.${name}`))
    t.equal(fetched.length, 1, `${name} fetched once`)
    t.ok(
      Object.values(hashesOf(targets[name]!)).some(h => fetched[0] === `200 /targets/${h}.${name}`),
      `${name} fetched under one of its listed hashes (${fetched[0]})`,
    )
  }
})

t.test('hash algorithms: every listed algorithm that Cairn knows is checked, so one wrong value refuses the target', async t => {
  const { hand, download, downloaded } = await setup(t)
  hand.publish({
    targets: {
      'bad-sha512.txt': hand.artifact('bad-sha512.txt', bytes('a'), ['sha256', 'sha512'], ['sha512']),
      'bad-sha256.txt': hand.artifact('bad-sha256.txt', bytes('b'), ['sha512', 'sha256'], ['sha256']),
    },
  })
  let r = await download('bad-sha512.txt')
  t.equal(r.code, 1)
  t.match(r.stderr, /SHA-512 is [0-9a-f]{128}, the signed metadata says/)
  r = await download('bad-sha256.txt')
  t.equal(r.code, 1)
  t.match(r.stderr, /SHA-256 is [0-9a-f]{64}, the signed metadata says/)
  t.same(downloaded(), {}, 'nothing kept')
})

t.test('hash algorithms: a target listing no algorithm that Cairn verifies (unknown, MD5, SHA-1) is refused; an unknown one beside SHA-256 is skipped', async t => {
  const { hand, download, downloaded } = await setup(t)
  hand.publish({
    targets: {
      'unknown.txt': hand.artifact('unknown.txt', bytes('u'), ['unknown-hash']),
      'weak.txt': hand.artifact('weak.txt', bytes('w'), ['md5', 'sha1']),
      'extra.txt': hand.artifact('extra.txt', bytes('e'), ['sha256', 'unknown-hash']),
    },
  })
  for (const name of ['unknown.txt', 'weak.txt']) {
    const r = await download(name)
    t.equal(r.code, 1, name)
    t.match(r.stderr, /lists no hash algorithm that Cairn verifies/, name)
  }
  t.same(downloaded(), {}, 'nothing kept')
  const r = await download('extra.txt')
  t.equal(r.code, 0, r.stderr)
  t.same(downloaded(), { 'extra.txt': 'e' })
})

t.test('repeated --target-name: one refresh, the targets in argument order, stopping at the first that fails', async t => {
  const { hand, server, download, downloaded } = await setup(t)
  const targets: Record<string, Json> = {}
  for (const name of ['a.txt', 'b.txt', 'c.txt', 'd.txt']) targets[name] = hand.artifact(name, bytes(name.toUpperCase()))
  hand.publish({ targets })
  let r = await download('a.txt', 'b.txt')
  t.equal(r.code, 0, r.stderr)
  t.same(downloaded(), { 'a.txt': 'A.TXT', 'b.txt': 'B.TXT' })
  t.equal(server.requests.filter(l => l.endsWith('/metadata/timestamp.json')).length, 1, 'one refresh for both')
  t.ok(r.stdout.indexOf('a.txt to') < r.stdout.indexOf('b.txt to'), 'in argument order')

  r = await download('c.txt', 'missing.txt', 'd.txt')
  t.equal(r.code, 1)
  t.match(r.stderr, /missing\.txt: no such target/)
  t.same(downloaded(), { 'a.txt': 'A.TXT', 'b.txt': 'B.TXT', 'c.txt': 'C.TXT' }, 'c before the failure, d never')
})

t.test('a root without consistent snapshots: targets are fetched by their plain names', async t => {
  const { hand, server, download, downloaded } = await setup(t)
  hand.consistentSnapshot(false)
  hand.publish({ targets: { 'dir/plain.txt': hand.artifact('dir/plain.txt', bytes('plain')) } })
  const r = await download('dir/plain.txt')
  t.equal(r.code, 0, r.stderr)
  t.same(downloaded(), { 'dir/plain.txt': 'plain' })
  t.same(
    server.requests.filter(l => l.includes('/targets/')),
    ['200 /targets/dir/plain.txt'],
  )
})
