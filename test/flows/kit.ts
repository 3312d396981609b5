// Shared parts of the Node-RED tests: a real agent with the fake GPIO driver (a status
// LED on BCM 17, a button on BCM 27) and its local API, the Cairn node modules, and
// small recorders for what nodes send, report to Catch nodes, and show as status.

import { createRequire } from 'node:module'
import { join } from 'node:path'
import { cairnPackageDir } from '../../flows/node-red-host.js'
import type { FakeGpio } from '../../hw/gpio/fake.js'
import { startTestAgent, until, type TestAgent } from '../helpers/agent.js'
import { ensureNodeRedClient } from '../../flows/build-client.mjs'

export const LED_PIN = 17
export const BUTTON_PIN = 27
const NODE_TYPES = ['cairn-agent', 'cairn-telemetry', 'cairn-events', 'cairn-infer', 'cairn-gpio-in', 'cairn-gpio-out', 'cairn-led'] as const

const require = createRequire(import.meta.url)

/** The package's node modules, as Node-RED would load them (after the client bundle is built). */
export async function cairnNodes(): Promise<unknown[]> {
  await ensureNodeRedClient()
  return NODE_TYPES.map(n => require(join(cairnPackageDir(), 'nodes', `${n}.js`)) as unknown)
}

export async function startFlowAgent(url: string, o: { stateDir?: string; values?: Record<string, unknown>; deps?: Parameters<typeof startTestAgent>[0]['deps'] } = {}): Promise<TestAgent> {
  return startTestAgent({
    url,
    ...(o.stateDir ? { stateDir: o.stateDir } : {}),
    ...(o.deps ? { deps: o.deps } : {}),
    values: {
      // One sample at start only: tests feed samples through the agent's bus.
      telemetry: { periodS: 86_400 },
      gpio: { driver: 'fake', statusLed: { pin: LED_PIN }, button: { pin: BUTTON_PIN } },
      tasks: { types: ['inference', 'cache'] },
      ...o.values,
    },
  })
}

export async function fakeGpio(a: TestAgent): Promise<FakeGpio> {
  const d = await a.agent.deviceUi.gpio.driver()
  if (d.name !== 'fake') throw new Error(`expected the fake GPIO driver, got ${d.name}`)
  return d as FakeGpio
}

/** The cairn-agent config node for a running test agent. */
export function agentConfig(a: TestAgent, id = 'agent'): Record<string, unknown> {
  const api = a.agent.localApi
  if (!api?.socketPath) throw new Error('the test agent has no local API socket')
  return { id, type: 'cairn-agent', name: 'test agent', transport: 'socket', socket: api.socketPath, url: '', tokenFile: api.tokenFile }
}

export interface NrMsg {
  topic?: string
  payload?: unknown
  error?: { message: string; code?: string; source?: { id: string } }
  [k: string]: unknown
}

interface EmitterNode {
  on(event: string, cb: (msg: NrMsg) => void): void
}

/** Records every message a helper node receives. */
export class Recorder {
  readonly msgs: NrMsg[] = []
  constructor(node: unknown) {
    ;(node as EmitterNode).on('input', msg => this.msgs.push(msg))
  }
  async next(pred: (m: NrMsg) => boolean = () => true, what = 'a message', timeoutMs = 20_000): Promise<NrMsg> {
    let hit: NrMsg | undefined
    await until(() => (hit = this.msgs.find(pred)) !== undefined, timeoutMs, `${what}; got ${JSON.stringify(this.msgs.slice(-3)).slice(0, 400)}`)
    return hit!
  }
  /** The error a Catch node reported for the given node. */
  errorFrom(id: string, timeoutMs = 20_000): Promise<NrMsg> {
    return this.next(m => m.error?.source?.id === id, `an error from ${id}`, timeoutMs)
  }
  clear(): void {
    this.msgs.length = 0
  }
}

interface Status {
  fill?: string
  shape?: string
  text?: string
}

/** The statuses a node has shown, from the test helper's spy on Node.prototype.status. */
export function statuses(node: unknown): Status[] {
  // One spy on Node.prototype.status serves every node: keep this node's calls.
  const spy = (node as { status: { getCalls(): Array<{ thisValue: unknown; args: unknown[] }> } }).status
  return spy
    .getCalls()
    .filter(c => c.thisValue === node)
    .map(c => c.args[0] as Status)
}

export async function statusMatching(node: unknown, pred: (s: Status) => boolean, what: string, timeoutMs = 20_000): Promise<Status> {
  let hit: Status | undefined
  await until(
    () => {
      const all = statuses(node)
      const last = all[all.length - 1]
      hit = last && pred(last) ? last : undefined
      return hit !== undefined
    },
    timeoutMs,
    `status ${what}; saw ${JSON.stringify(statuses(node).slice(-3))}`,
  )
  return hit!
}
