// `cairn cache ls|get|pin|unpin|gc` in process, against a real origin on 127.0.0.1.

import t from 'tap'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { main } from '../../../cli/cli.js'
import { cidFromSha256 } from '../../../agent/cache/cid.js'
import { ContentStore } from '../../../agent/cache/store.js'
import { tmp } from '../../helpers/agent.js'
import { blob, sha256, startOrigin } from './origin.js'

async function cairn(...args: string[]) {
  let out = ''
  let err = ''
  const code = await main(['cache', ...args], { out: { write: (s: string) => (out += s) }, err: { write: (s: string) => (err += s) }, env: {} })
  return { code, out, err }
}

t.test('cache CLI', async t => {
  const origin = await startOrigin()
  t.teardown(() => origin.close())
  const dir = tmp('cairn-state-')
  const [a, b] = [blob(3000), blob(2000)]
  const urlA = origin.route('/a', { kind: 'ok', body: a })
  const urlB = origin.route('/b', { kind: 'ok', body: b })
  const out = join(dir, 'copy')
  const got = await cairn('get', cidFromSha256(sha256(a)), '--state-dir', dir, '--origin', urlA, '--pin', '--out', out)
  t.equal(got.code, 0, got.err)
  t.match(JSON.parse(got.out), { sha256: sha256(a), bytes: 3000, pinned: true, fetched: true, origin: urlA })
  t.ok(readFileSync(out).equals(a), '--out copies the verified bytes')
  t.equal((await cairn('get', sha256(b), '--state-dir', dir, '--origin', urlB)).code, 0)
  const bad = await cairn('get', sha256(b).slice(1), '--state-dir', dir, '--origin', urlB)
  t.equal(bad.code, 2, 'a bad name is a usage error')
  t.match(bad.err, /cache get: expected a lowercase hex sha256/)
  const wrong = await cairn('get', sha256('other'), '--state-dir', dir, '--origin', urlB)
  t.equal(wrong.code, 1)
  t.match(wrong.err, /CONTENT_MISMATCH/)
  const ls = await cairn('ls', '--state-dir', dir, '--json')
  t.same((JSON.parse(ls.out) as Array<{ sha256: string }>).map(o => o.sha256).sort(), [sha256(a), sha256(b)].sort())
  const gc = await cairn('gc', '--state-dir', dir, '--quota-bytes', '3000')
  t.same(JSON.parse(gc.out).evicted, [sha256(b)], 'gc evicts the unpinned object to meet the quota')
  t.equal((await cairn('unpin', sha256(a), '--state-dir', dir)).code, 0)
  t.equal((await cairn('pin', sha256(b), '--state-dir', dir)).code, 1, 'pin of an absent object fails')
  const store = await ContentStore.open({ dir: join(dir, 'cache'), quotaBytes: 1 << 20, maxObjectBytes: 1 << 20 })
  const locked = await cairn('ls', '--state-dir', dir)
  store.close()
  t.equal(locked.code, 1)
  t.match(locked.err, /in use/, 'refused while another process (the agent) holds the store')
})
