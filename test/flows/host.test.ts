// The embedded Node-RED of `cairn demo` (flows/node-red-host.ts): it starts on
// 127.0.0.1 with the Cairn package loaded, writes a starter flow wired to the demo
// agent's socket and token only into a fresh user dir, serves the package's examples to
// the editor's Import menu, and fails soft (a printed reason, no throw) when it cannot run.

import t from 'tap'
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { request } from 'node:http'
import { join } from 'node:path'
import { startDemoNodeRed, startNodeRed } from '../../flows/node-red-host.js'
import WebSocket from 'ws'
import { tmp, until } from '../helpers/agent.js'
import { cairnNodes } from './kit.js'

t.test('the demo editor: starter flow, examples, one per process, fail soft', async t => {
  await cairnNodes() // the client bundle the package loads
  const stateDir = tmp('cairn-demo-nr-')
  const said: string[] = []
  const say = (s: string) => said.push(s)
  const host = await startDemoNodeRed({ stateDir, port: 0, say })
  if (!host) throw new Error(`Node-RED did not start: ${said.join('\n')}`)
  t.teardown(() => host.stop())
  t.match(said[0], new RegExp(`^  node-red  http://127\\.0\\.0\\.1:${host.port}/ `), 'prints its URL')

  const flows = JSON.parse(readFileSync(join(stateDir, 'node-red', 'flows.json'), 'utf8')) as Array<Record<string, unknown>>
  t.match(
    flows.find(n => n.type === 'cairn-agent'),
    { socket: join(stateDir, 'api.sock'), tokenFile: join(stateDir, 'api.token') },
    'the starter flow points at the demo agent',
  )
  const deployed = (await (await fetch(host.url + 'flows', { headers: { accept: 'application/json' } })).json()) as Array<Record<string, unknown>>
  t.ok(
    deployed.some(n => n.type === 'cairn-telemetry'),
    'and is what the runtime runs',
  )

  const examples = (await (await fetch(host.url + 'library/examples/flows/', { headers: { accept: 'application/json' } })).json()) as Record<string, unknown>
  t.ok(JSON.stringify(examples).includes('node-red-contrib-cairn'), 'the Import menu lists the package’s examples')
  const one = await fetch(host.url + 'library/examples/flows/node-red-contrib-cairn/01 status LED and button', { headers: { accept: 'application/json' } })
  t.equal(one.status, 200)
  t.ok(((await one.json()) as unknown[]).length > 5, 'and serves them')

  const editor = await fetch(host.url)
  t.equal(editor.status, 200)
  t.match(await editor.text(), /Cairn · Node-RED/, 'the editor, with its title')

  // No login on 127.0.0.1: a page in the owner's browser must not drive the editor.
  const status = (headers: Record<string, string>, method = 'GET') =>
    new Promise<number>((resolve, reject) => {
      const req = request({ host: '127.0.0.1', port: host.port, path: '/flows', method, headers: { accept: 'application/json', ...headers } }, res => {
        res.resume()
        resolve(res.statusCode ?? 0)
      })
      req.on('error', reject)
      req.end()
    })
  t.equal(await status({ host: `localhost:${host.port}` }), 200, 'Host localhost is served')
  t.equal(await status({ host: `rebound.example:${host.port}` }), 403, 'a DNS-rebound Host is refused')
  t.equal(await status({ host: `127.0.0.1:${host.port}`, origin: 'https://evil.example', 'content-type': 'application/json' }, 'POST'), 403, 'a foreign Origin is refused')
  const comms = (origin?: string) =>
    new Promise<number | 'open'>(resolve => {
      const ws = new WebSocket(`ws://127.0.0.1:${host.port}/comms`, origin ? { origin } : {})
      ws.on('open', () => {
        ws.close()
        resolve('open')
      })
      ws.on('unexpected-response', (_req, res) => {
        resolve(res.statusCode ?? 0)
        ws.terminate()
      })
      ws.on('error', () => resolve(0))
    })
  t.equal(await comms(), 'open', 'the editor’s WebSocket opens from this machine')
  t.equal(await comms('https://evil.example'), 403, 'but not for another site’s page')
})

t.test('an owner’s edits survive a restart: the starter flow is written only once', async t => {
  const stateDir = tmp('cairn-demo-nr-')
  const userDir = join(stateDir, 'node-red')
  mkdirSync(userDir, { recursive: true })
  const mine = [{ id: 'mine', type: 'tab', label: 'my flow' }]
  writeFileSync(join(userDir, 'flows.json'), JSON.stringify(mine))
  const host = await startDemoNodeRed({ stateDir, port: 0, say: () => {} })
  if (!host) throw new Error('Node-RED did not start')
  t.teardown(() => host.stop())
  t.same(JSON.parse(readFileSync(join(userDir, 'flows.json'), 'utf8')), mine, 'flows.json untouched')
  let deployed: unknown
  await until(
    async () => {
      deployed = await (await fetch(host.url + 'flows', { headers: { accept: 'application/json' } })).json()
      return JSON.stringify(deployed) === JSON.stringify(mine)
    },
    10_000,
    'the owner’s flow deployed',
  )
  t.same(deployed, mine, 'the owner’s flow runs')
})

t.test('fail soft: a reason printed, never a throw', async t => {
  await t.rejects(startNodeRed({ userDir: tmp(), port: 0, packageDir: '/nonexistent' }), /the Cairn Node-RED package is missing at \/nonexistent/)
  const said: string[] = []
  const say = (s: string) => said.push(s)
  const host = await startDemoNodeRed({ stateDir: tmp('cairn-demo-nr-'), port: 0, say })
  if (!host) throw new Error(`Node-RED did not start: ${said.join('\n')}`)
  t.teardown(() => host.stop())
  said.length = 0
  t.equal(await startDemoNodeRed({ stateDir: tmp('cairn-demo-nr-'), port: 0, say }), undefined, 'a second one in the same process is refused…')
  t.match(said[0], /^ {2}node-red {2}not started: Node-RED is already running in this process/, '…with the reason printed')
})
