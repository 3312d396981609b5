// The settings.js provisioning writes for Node-RED, loaded by a real Node-RED 4.1 (the
// repo's own node-red, the version the image installs) on 127.0.0.1: it starts, listens
// where the settings say, and with an admin password hash the editor's API needs a login
// that only the right password passes.

import t from 'tap'
import { spawn } from 'node:child_process'
import { writeFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { join } from 'node:path'
import { nodeRedSettings } from '../../image-build/provision/node-red.js'
import { freePort } from '../helpers/broker.js'
import { tmp } from '../helpers/agent.js'

const require = createRequire(import.meta.url)
const RED = require.resolve('node-red/red.js')
const HASH = '$2b$08$BgKiMW5QTgnGs4xXEsV1r.9vtz2n4APJaYtx7zmUy4vPV.uu38Bla' // bcrypt of "s3cret-admin"

async function startNodeRed(t: { teardown(fn: () => void): void }, settings: string): Promise<{ url: string; log: () => string }> {
  const dir = tmp('cairn-nr-')
  writeFileSync(join(dir, 'settings.js'), settings)
  const port = await freePort()
  const child = spawn(process.execPath, [RED, '--userDir', join(dir, 'user'), '--settings', join(dir, 'settings.js'), '-p', String(port)], { stdio: ['ignore', 'pipe', 'pipe'] })
  t.teardown(() => void child.kill('SIGKILL'))
  let log = ''
  const started = new Promise<string>((resolve, reject) => {
    const onData = (d: Buffer) => {
      log += d.toString()
      // ready once the runtime has started its (empty) flows, not just the HTTP server
      const m = /Server now running at (http:\/\/\S+?)\/?\s/.exec(log)
      if (m && /\[info\] Started flows/.test(log)) resolve(m[1]!)
    }
    child.stdout.on('data', onData)
    child.stderr.on('data', onData)
    child.on('exit', code => reject(new Error(`node-red exited (${code}):\n${log}`)))
  })
  return { url: await started, log: () => log }
}

t.test('local only: Node-RED starts with the generated settings on 127.0.0.1', async t => {
  const nr = await startNodeRed(t, nodeRedSettings({ enabled: true, lan: false }, new Date()))
  t.match(nr.url, /^http:\/\/127\.0\.0\.1:\d+$/, 'listening on loopback')
  t.notMatch(nr.log(), /\[error\]/)
  t.equal((await fetch(`${nr.url}/flows`)).status, 200, 'no login on loopback without a hash')
})

t.test('with an admin password hash the editor API needs the password', async t => {
  // lan: true, but bound to loopback for the test (the host part is checked in provision.test.ts)
  const settings = nodeRedSettings({ enabled: true, lan: true, adminPasswordHash: HASH }, new Date()).replace('"0.0.0.0"', '"127.0.0.1"')
  const nr = await startNodeRed(t, settings)
  t.match(await (await fetch(`${nr.url}/auth/login`)).json(), { type: 'credentials' })
  t.equal((await fetch(`${nr.url}/flows`)).status, 401, 'the flows API refuses without a token')
  const token = (password: string) =>
    fetch(`${nr.url}/auth/token`, { method: 'POST', body: new URLSearchParams({ client_id: 'node-red-editor', grant_type: 'password', scope: '*', username: 'admin', password }) })
  const wrong = await token('wrong-password')
  t.ok(wrong.status >= 400 && wrong.status < 500, `a wrong password is refused (${wrong.status})`)
  t.notMatch(await wrong.text(), /access_token/, 'and gets no token')
  const ok = (await (await token('s3cret-admin')).json()) as { access_token?: string }
  t.ok(ok.access_token, 'the right password gets a token')
  t.equal((await fetch(`${nr.url}/flows`, { headers: { authorization: `Bearer ${ok.access_token}` } })).status, 200)
})
