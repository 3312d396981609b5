// The shared connection of a cairn-agent config node (flows/.../lib/connection.js) on
// its own, against a real agent: a node's event handler that throws cannot take the
// host down, the connection closes once no node uses it and comes back for the next,
// a node goes green only once the agent has its subscription, and a package packed
// without its client bundle says so instead of blaming the token.

import t from 'tap'
import { createRequire } from 'node:module'
import { join } from 'node:path'
import { startBroker, type TestBroker } from '../helpers/broker.js'
import { until, type TestAgent } from '../helpers/agent.js'
import { cairnPackageDir } from '../../flows/node-red-host.js'
import { agentConfig, cairnNodes, startFlowAgent } from './kit.js'

interface State {
  state: string
  reason?: string
}
interface Conn {
  state: State
  use(node: object, onState: (s: State) => void): () => void
  onEvent(fn: (topic: string, data: unknown, ts: number) => void): () => void
  subscribe(topic: string): () => void
  close(): Promise<void>
}
type ConnCtor = new (opts: Record<string, unknown>, load: () => unknown) => Conn

const require = createRequire(import.meta.url)
const lib = join(cairnPackageDir(), 'lib')

let broker: TestBroker
let a: TestAgent
t.before(async () => {
  await cairnNodes() // builds lib/client.cjs
  broker = await startBroker()
  a = await startFlowAgent(broker.url)
})
t.teardown(async () => {
  await a.stop()
  await broker.close()
})

function connection(o: Record<string, unknown> = {}, load: () => unknown = () => require(join(lib, 'client.cjs'))) {
  const { AgentConnection } = require(join(lib, 'connection.js')) as { AgentConnection: ConnCtor }
  const warnings: string[] = []
  const cfg = agentConfig(a)
  const conn = new AgentConnection({ socketPath: cfg.socket, tokenFile: cfg.tokenFile, log: { log: () => {}, warn: (m: string) => warnings.push(m) }, ...o }, load)
  return { conn, warnings }
}

t.test('a node whose event handler throws: logged, the other nodes still get the event', async t => {
  const { conn, warnings } = connection()
  t.teardown(() => conn.close())
  const release = conn.use({}, () => {})
  const drop = conn.subscribe('event')
  conn.onEvent(() => {
    throw new TypeError('a node bug')
  })
  const seen: string[] = []
  conn.onEvent((topic, data) => {
    if (topic === 'event') seen.push((data as { kind: string }).kind)
  })
  await until(() => conn.state.state === 'connected', 10_000, 'connected')
  // The subscription is sent on connect; publish until one arrives.
  await until(
    () => {
      a.agent.publishEvent('task.done', { task: 't' })
      return seen.includes('task.done')
    },
    10_000,
    'the event at the second node',
  )
  t.ok(
    warnings.some(w => /a node failed handling an agent message: a node bug/.test(w)),
    'the throw is logged',
  )
  drop()
  release()
})

t.test('green means subscribed: an event sent the moment the state turns connected arrives', async t => {
  const { conn } = connection()
  t.teardown(() => conn.close())
  const seen: string[] = []
  conn.onEvent((topic, data) => {
    if (topic === 'event') seen.push((data as { kind: string }).kind)
  })
  const drop = conn.subscribe('event')
  // Published from inside the state change, before anything else runs: with the
  // subscription sent after the change (as it once was), the agent has no subscriber yet.
  const release = conn.use({}, s => {
    if (s.state === 'connected') a.agent.publishEvent('task.done', { task: 'at-green' })
  })
  await until(() => conn.state.state === 'connected', 10_000, 'connected')
  await until(() => seen.includes('task.done'), 5_000, 'the event sent at green')
  t.pass('the event sent at green arrived')
  drop()
  release()
})

t.test('closed when no node uses it, opened again for the next', async t => {
  const { conn } = connection({ idleCloseMs: 50 })
  t.teardown(() => conn.close())
  const release = conn.use({}, () => {})
  await until(() => conn.state.state === 'connected' && a.agent.localApi?.clientCount === 1, 10_000, 'connected')
  release()
  await until(() => a.agent.localApi?.clientCount === 0, 10_000, 'the agent sees the client go')
  t.equal(conn.state.state, 'idle')
  const states: string[] = []
  const again = conn.use({}, s => states.push(s.state))
  await until(() => conn.state.state === 'connected' && a.agent.localApi?.clientCount === 1, 10_000, 'connected again')
  t.same(states.slice(0, 2), ['idle', 'connecting'], 'the new user is told each step')
  again()
})

t.test('a package without lib/client.cjs: a clear reason, no retry loop, no throw', async t => {
  const { conn, warnings } = connection({}, () => {
    throw Object.assign(new Error("Cannot find module '../lib/client.cjs'"), { code: 'MODULE_NOT_FOUND' })
  })
  t.teardown(() => conn.close())
  const states: State[] = []
  conn.use({}, s => states.push(s))
  t.match(states.at(-1), { state: 'error', reason: /lib\/client\.cjs missing/ })
  t.match(warnings[0], /cannot load the local API client/)
})
