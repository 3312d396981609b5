// Test harness for tasks: an in-process agent on a real broker trusting one dispatcher
// key, with the controllable executors of task-executors.ts (or real ones), and a
// dispatcher-side MQTT client that signs requests and cancels and reads updates and
// receipts.

import type { Test } from 'tap'
import type { IClientPublishOptions } from 'mqtt'
import { signEnvelope, type Envelope } from '../../protocol/envelope.js'
import { newId } from '../../protocol/ids.js'
import type { KeyPair } from '../../protocol/keys.js'
import type { TaskExecutor } from '../../agent/task/executor-port.js'
import type { TaskReceipt, TaskUpdate } from '../../protocol/task-format.js'
import { verifiedUpdate } from './replies.js'
import type { AgentDeps } from '../../agent/agent.js'
import { Consumer, operatorKey, startTestAgent, tmp, until, type Received, type TestAgent } from './agent.js'
import { testExecutors } from './task-executors.js'

export const FLEET = 'test'

export interface TaskAgentOptions {
  url: string
  stateDir?: string
  mqttVersion?: 4 | 5
  tasks?: Record<string, unknown>
  values?: Record<string, unknown>
  executors?: readonly TaskExecutor[]
  /** Run the agent's real executors (inference, cache) instead of the test ones. */
  builtin?: boolean
  /** Keys from an earlier harness (same state dir across a restart). */
  keys?: { dispatcher: ReturnType<typeof operatorKey>; operator: ReturnType<typeof operatorKey> }
  timings?: AgentDeps['taskTimings']
  /** More agent dependencies (e.g. hw pointing at a fixture root). */
  deps?: Partial<AgentDeps>
}

export async function taskAgent(t: Test, o: TaskAgentOptions) {
  const dir = tmp('cairn-task-keys-')
  const dispatcher = o.keys?.dispatcher ?? operatorKey(dir, 'dispatcher')
  const operator = o.keys?.operator ?? operatorKey(dir, 'operator')
  const ex = testExecutors()
  const a: TestAgent = await startTestAgent({
    url: o.url,
    ...(o.stateDir ? { stateDir: o.stateDir } : {}),
    mqttVersion: o.mqttVersion ?? 5,
    operatorKeys: [operator.pub],
    values: { proof: { enabled: false }, tasks: { dispatcherKeys: [dispatcher.pub], ...o.tasks }, ...o.values },
    deps: { ...(o.builtin ? {} : { taskExecutors: o.executors ?? ex.all }), taskTimings: o.timings ?? { graceMs: 300, tickMs: 50 }, ...o.deps },
  })
  let stopped = false
  const stop = async () => {
    if (stopped) return
    stopped = true
    await a.stop()
  }
  t.teardown(stop)
  const device = a.agent.deviceId
  const base = `cairn/v1/${FLEET}/${device}/task`
  const c = await Consumer.connect(o.url, [`${base}/update`, `${base}/update/+`, `${base}/receipt`], { protocolVersion: o.mqttVersion ?? 5 })
  t.teardown(() => c.close())
  await until(() => a.agent.link.connected, 10_000, 'agent connected')
  // The agent subscribes in onConnect; give the SUBACK a moment by waiting for status.
  await until(() => a.agent.tasks !== undefined, 1000)

  const sign = (type: string, body: unknown, key: KeyPair = dispatcher, o2: { ttlMs?: number; iat?: number; id?: string } = {}): Envelope => {
    const now = o2.iat ?? Date.now()
    return signEnvelope(key, { type, id: o2.id ?? newId(now), fleet: FLEET, sub: device, iat: now, exp: now + (o2.ttlMs ?? 60_000), body: body as never })
  }
  const requestBody = (task: string, params: unknown, extra: { type?: string; deadline?: number; priority?: number } = {}) => ({
    task,
    type: extra.type ?? 'inference',
    params,
    deadline: extra.deadline ?? Date.now() + 30_000,
    priority: extra.priority ?? 0,
  })
  const publish = (topic: 'request' | 'cancel', payload: string | Buffer, opts: IClientPublishOptions = {}) => c.client.publishAsync(`${base}/${topic}`, payload, { qos: 1, ...opts })
  /** Signs and sends a request; returns the envelope. */
  const request = async (task: string, params: unknown, extra: Parameters<typeof requestBody>[2] & { key?: KeyPair; opts?: IClientPublishOptions } = {}) => {
    const env = sign('task.request', requestBody(task, params, extra), extra.key)
    await publish('request', JSON.stringify(env), extra.opts)
    return env
  }
  const cancel = async (task: string, key: KeyPair = dispatcher) => {
    const env = sign('task.cancel', { task }, key)
    await publish('cancel', JSON.stringify(env))
    return env
  }
  /** Every update so far, each verified as the device's signed task.update (for whoever
   * it names as its addressee): one that does not verify fails the test here. */
  const updates = (pred: (u: TaskUpdate) => boolean = () => true) =>
    c.messages
      .filter(m => m.topic.includes('/task/update'))
      .map(m => verifiedUpdate(m.payload, device, FLEET))
      .filter(pred)
  const waitUpdate = (pred: (u: TaskUpdate) => boolean, what: string, timeoutMs = 10_000) => c.waitFor(() => updates(pred)[0], timeoutMs, what)
  const receipts = (task?: string): Array<Received & { r: TaskReceipt }> =>
    c
      .on('/task/receipt')
      .map(m => ({ ...m, r: m.json as unknown as TaskReceipt }))
      .filter(m => task === undefined || m.r.body.task === task)
  const waitReceipt = (task: string, timeoutMs = 10_000) => c.waitFor(() => receipts(task)[0], timeoutMs, `receipt of ${task}`)

  return { a, device, dispatcher, operator, ex, c, base, sign, requestBody, publish, request, cancel, updates, waitUpdate, receipts, waitReceipt, stop }
}

export type TaskHarness = Awaited<ReturnType<typeof taskAgent>>
