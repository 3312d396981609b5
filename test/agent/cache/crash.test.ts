// kill -9 in the middle of a download: after reopening, no partial object is visible
// (not in the index, not servable, no file under objects/), the temp file is gone, and
// the object downloads cleanly afterwards.

import t from 'tap'
import { spawn } from 'node:child_process'
import { createInterface } from 'node:readline'
import { readdirSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { ContentStore } from '../../../agent/cache/store.js'
import { tmp, until } from '../../helpers/agent.js'
import { blob, sha256, startOrigin } from './origin.js'

const child = new URL('./crash-child.ts', import.meta.url).pathname

t.test('killed mid-download: nothing partial is visible after reopening', async t => {
  const origin = await startOrigin()
  t.teardown(() => origin.close())
  const body = blob(2 * 1024 * 1024)
  const h = sha256(body)
  const url = origin.route('/slow', { kind: 'trickle', body, chunk: 16 * 1024, everyMs: 20 })
  const dir = tmp('cairn-cache-crash-')
  const proc = spawn(process.execPath, ['--import', 'tsx', child, dir, h, url], { stdio: ['ignore', 'pipe', 'inherit'] })
  await new Promise<void>((resolve, reject) => {
    createInterface({ input: proc.stdout! }).on('line', line => (line === 'writing' ? resolve() : reject(new Error(line))))
    proc.once('exit', code => reject(new Error(`child exited ${code}`)))
  })
  // Wait until bytes are in the temp file (however slow a busy machine is), then kill
  // without warning. The origin trickles 2 MiB over 2.5 s or more, so it cannot be done.
  const tmpSize = () => readdirSync(join(dir, 'tmp')).reduce((n, f) => n + statSync(join(dir, 'tmp', f)).size, 0)
  await until(() => tmpSize() > 0, 60_000, 'bytes in the temp file')
  const temps = readdirSync(join(dir, 'tmp'))
  t.equal(temps.length, 1, 'a temp file was being written')
  const partial = statSync(join(dir, 'tmp', temps[0]!)).size
  t.ok(partial > 0 && partial < body.length, `partial temp file (${partial} bytes)`)
  proc.kill('SIGKILL')
  await new Promise(r => proc.once('exit', r))

  const store = await ContentStore.open({ dir, quotaBytes: 1 << 30, maxObjectBytes: 1 << 30, diskFree: () => 1e12 })
  t.teardown(() => store.close())
  t.notOk(store.has(h), 'not in the index')
  t.equal(store.leaseLocal(h), undefined, 'cannot be leased (or served)')
  t.same(readdirSync(join(dir, 'objects')), [], 'no object file')
  t.same(readdirSync(join(dir, 'tmp')), [], 'temp file cleaned on open')
  origin.route('/fast', { kind: 'ok', body })
  const lease = await store.lease(h, [`${origin.url}/fast`], { signal: new AbortController().signal })
  t.equal(lease.bytes, body.length, 'downloads cleanly afterwards')
  lease.release()
})
