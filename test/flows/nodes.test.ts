// Every Cairn node in the real Node-RED 4.1 runtime (node-red-node-test-helper) against
// a real agent's local API on a real Mosquitto, with the fake GPIO driver: each loads,
// its config node connects and every node shows it, it sends what it should, and bad
// messages reach Catch nodes as errors with stable codes while the runtime carries on.

import t from 'tap'
import { writeFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { join } from 'node:path'
import { startBroker, type TestBroker } from '../helpers/broker.js'
import { tmp, until, type TestAgent } from '../helpers/agent.js'
import { agentConfig, BUTTON_PIN, cairnNodes, fakeGpio, LED_PIN, Recorder, startFlowAgent, statuses, statusMatching } from './kit.js'

const require = createRequire(import.meta.url)
const helper = require('node-red-node-test-helper') as {
  init(path: string, settings?: Record<string, unknown>): void
  startServer(): Promise<void>
  stopServer(): Promise<void>
  load(nodes: unknown[], flow: unknown[]): Promise<void>
  unload(): Promise<void>
  getNode(id: string): unknown
}
helper.init(require.resolve('node-red'))

interface RuntimeNode {
  receive(msg: Record<string, unknown>): void
}
const node = (id: string) => {
  const n = helper.getNode(id)
  if (!n) throw new Error(`node ${id} is not in the running flow`)
  return n as RuntimeNode
}

let broker: TestBroker
let a: TestAgent
let nodes: unknown[]
t.before(async () => {
  broker = await startBroker()
  a = await startFlowAgent(broker.url)
  nodes = await cairnNodes()
  await helper.startServer()
})
t.teardown(async () => {
  await helper.stopServer()
  await a.stop()
  await broker.close()
})
t.afterEach(async () => {
  await helper.unload()
})

/** Loads `flow` with the agent's config node, a catch-all Catch node and helper nodes `out` and `errors`. */
async function load(flow: Array<Record<string, unknown>>, agent: Record<string, unknown> = agentConfig(a)) {
  const onTab = [...flow, { id: 'catcher', type: 'catch', scope: null, uncaught: false, wires: [['errors']] }, { id: 'out', type: 'helper' }, { id: 'errors', type: 'helper' }].map(n =>
    n.type === 'cairn-agent' ? n : { z: 'tab', ...n },
  )
  await helper.load(nodes, [{ id: 'tab', type: 'tab', label: 'test' }, agent, ...onTab])
  return { out: new Recorder(helper.getNode('out')), errors: new Recorder(helper.getNode('errors')) }
}

const connected = (id: string) => statusMatching(helper.getNode(id), s => s.fill === 'green', 'green (connected)')

t.test('every node loads, and every node shows the shared connection', async t => {
  const types = ['cairn-telemetry', 'cairn-events', 'cairn-infer', 'cairn-led']
  await load([
    ...types.map(type => ({ id: `n-${type}`, type, agent: 'agent', wires: [[]] })),
    { id: 'in', type: 'cairn-gpio-in', agent: 'agent', pin: '23', wires: [[]] },
    { id: 'outpin', type: 'cairn-gpio-out', agent: 'agent', pin: '22' },
  ])
  for (const id of [...types.map(type => `n-${type}`), 'in', 'outpin']) {
    const s = await connected(id)
    t.pass(`${id}: ${s.text}`)
  }
  const pin = await statusMatching(helper.getNode('in'), s => s.text !== 'connected', 'the pin, once opened')
  t.match(pin, { fill: 'green', text: 'pin 23: 0' }, 'a GPIO node shows its pin once opened')
  await until(() => a.agent.localApi?.clientCount === 1, 20_000, 'one connection')
  t.equal(a.agent.localApi?.clientCount, 1, 'six nodes share one connection to the agent')
})

t.test('without a config node: a red status and an error for each message', async t => {
  const { errors } = await load([
    { id: 'led', type: 'cairn-led', agent: '', wires: [[]] },
    { id: 'infer', type: 'cairn-infer', agent: 'missing', wires: [[]] },
  ])
  for (const id of ['led', 'infer']) {
    t.match(statuses(helper.getNode(id)).at(-1), { fill: 'red', text: 'no Cairn agent configured' })
    node(id).receive({ payload: 'on' })
    const e = await errors.errorFrom(id)
    t.equal(e.error?.code, 'INVALID_CONFIG', `${id}: ${e.error?.message}`)
  }
})

t.test('a missing or wrong token: the nodes say why, and nothing crashes', async t => {
  const dir = tmp('cairn-nr-token-')
  const wrong = join(dir, 'wrong.token')
  writeFileSync(wrong, 'A'.repeat(43) + '\n')
  const base = agentConfig(a)
  await load(
    [
      { id: 'ev1', type: 'cairn-events', agent: 'agent', wires: [[]] },
      { id: 'ev2', type: 'cairn-events', agent: 'agent2', wires: [[]] },
      { id: 'agent2', type: 'cairn-agent', transport: 'socket', socket: base.socket, tokenFile: join(dir, 'absent.token') },
    ],
    { ...base, tokenFile: wrong },
  )
  const s1 = await statusMatching(helper.getNode('ev1'), s => /UNAUTHORIZED|401/.test(s.text ?? ''), 'unauthorised')
  t.match(s1, { fill: 'red' }, `wrong token: ${s1.text}`)
  const s2 = await statusMatching(helper.getNode('ev2'), s => /cannot read token \(ENOENT\)/.test(s.text ?? ''), 'token file missing')
  t.match(s2, { fill: 'red' }, `missing file: ${s2.text}`)
})

t.test('cairn telemetry: samples, a field filter, a rate limit, and the latest on demand', async t => {
  const { out, errors } = await load([
    { id: 'all', type: 'cairn-telemetry', agent: 'agent', fields: '', interval: 0, wires: [['out']] },
    { id: 'some', type: 'cairn-telemetry', agent: 'agent', fields: 'thermal, throttle', interval: 60, wires: [['out']] },
  ])
  node('all').receive({ payload: 'now?' })
  t.equal((await errors.errorFrom('all')).error?.code, 'UNAVAILABLE', 'asking before any sample: UNAVAILABLE')
  await connected('all')
  await connected('some')
  const sample = (celsius: number, throttled: boolean) => ({
    cpu: { percent: 12 },
    thermal: [
      { zone: 'thermal_zone0', type: 'cpu-thermal', celsius },
      { zone: 'thermal_zone1', type: 'gpu', celsius: celsius - 5 },
    ],
    throttle: { source: 'vcgencmd', raw: throttled ? '0x4' : '0x0', now: { throttled } },
  })
  // The agent's bus is where its telemetry loop puts samples; the hardware is faked here.
  const emit = (s: ReturnType<typeof sample>, ts: number) => a.agent.bus.emit('telemetry', s as never, ts)
  emit(sample(61.5, false), 1_000_000)
  emit(sample(83, true), 1_030_000) // 30 s later: under the 60 s limit of 'some'
  emit(sample(50, false), 1_070_000)
  await until(() => out.msgs.length >= 5, 20_000, 'five messages')
  const fromAll = out.msgs.filter(m => (m.payload as Record<string, unknown>).cpu !== undefined)
  const fromSome = out.msgs.filter(m => (m.payload as Record<string, unknown>).cpu === undefined)
  t.equal(fromAll.length, 3, 'every sample from the unfiltered node')
  t.same(
    fromSome.map(m => m.ts),
    [1_000_000, 1_070_000],
    'at most one a minute from the other',
  )
  t.same(Object.keys(fromSome[0]!.payload as object).sort(), ['thermal', 'throttle'], 'only the chosen fields')
  t.match(fromAll[1], { topic: 'telemetry', hottest: 83, throttled: true, ts: 1_030_000 }, 'hottest and throttled worked out')
  t.match(fromAll[2], { hottest: 50, throttled: false })
  // A flow that changes its message must not change the sample other nodes and the next
  // input message get.
  ;(fromAll[2]!.payload as { cpu: { percent: number } }).cpu.percent = 999
  out.clear()
  node('all').receive({ payload: 'now?', keep: 'me' })
  const latest = await out.next()
  t.match(latest, { keep: 'me', ts: 1_070_000, hottest: 50 }, 'an input message gets the latest sample, its other properties kept')
  t.equal((latest.payload as { cpu: { percent: number } }).cpu.percent, 12, 'a copy: the change downstream did not reach it')
  // A sample with odd entries (this code runs inside the client's socket handler: a
  // throw there would end Node-RED) is passed on, without the readings it lacks.
  out.clear()
  a.agent.bus.emit('telemetry', { cpu: { percent: 1 }, thermal: [null, { zone: 'z', celsius: 'hot' }] } as never, 1_200_000)
  const odd = await out.next(m => m.ts === 1_200_000, 'the odd sample')
  t.equal(odd.hottest, undefined, 'no hottest reading')
  t.equal(odd.throttled, false)
})

t.test('cairn events: kinds filtered, status first and on changes', async t => {
  const { out } = await load([
    { id: 'tasks', type: 'cairn-events', agent: 'agent', kinds: 'task., ota.', events: true, status: false, wires: [['out']] },
    { id: 'status', type: 'cairn-events', agent: 'agent', kinds: '', events: false, status: true, wires: [['out']] },
  ])
  await connected('tasks')
  const first = await out.next(m => m.topic === 'status', 'the status now')
  t.match(first.payload, { connected: true, state: 'online' }, 'the connection state is sent when the node connects')
  a.agent.publishEvent('proof.failed', { message: 'not for this node' })
  a.agent.publishEvent('task.done', { task: 't1' })
  a.agent.publishEvent('ota.staged', { version: '1.2.3' })
  const done = await out.next(m => m.topic === 'task.done', 'task.done')
  t.same(done.payload, { task: 't1' })
  t.ok(typeof done.ts === 'number', 'with the time it happened')
  await out.next(m => m.topic === 'ota.staged', 'ota.staged')
  t.notOk(
    out.msgs.some(m => m.topic === 'proof.failed'),
    'a kind outside the filter is not sent',
  )
  t.notOk(
    out.msgs.some(m => m.topic === 'task.done' && m.payload && (m as { initial?: boolean }).initial),
    'events are not mistaken for status',
  )
})

t.test('cairn infer: every bad payload is a clear error; a picture reaches the agent', async t => {
  const { out, errors } = await load([{ id: 'infer', type: 'cairn-infer', agent: 'agent', model: 'demo', topK: 3, timeout: 30, wires: [['out']] }])
  await connected('infer')
  const bad: Array<[unknown, string, RegExp]> = [
    ['a string', 'BAD_REQUEST', /msg.payload is a string/],
    [undefined, 'BAD_REQUEST', /msg.payload is missing/],
    [Buffer.from('GIF89a not a png'), 'BAD_REQUEST', /not a PNG or JPEG/],
    [Buffer.alloc(0), 'BAD_REQUEST', /empty Buffer/],
    [Buffer.concat([Buffer.from([0xff, 0xd8, 0xff]), Buffer.alloc(7 * 1024 * 1024)]), 'TOO_LARGE', /at most/],
    [{ tensor: { shape: [2, 2], dtype: 'float32', data: [1, 2, 3] } }, 'BAD_REQUEST', /has 3 values; shape \[2, 2\] needs 4/],
    [{ tensor: { shape: [2], dtype: 'float64', data: [1, 2] } }, 'BAD_REQUEST', /dtype must be one of/],
    [{ tensor: { shape: [], dtype: 'float32', data: [] } }, 'BAD_REQUEST', /shape must be/],
    [[1, 2, 3], 'BAD_REQUEST', /msg.payload is an array/],
  ]
  for (const [payload, code, message] of bad) {
    errors.clear()
    node('infer').receive({ payload })
    const e = await errors.errorFrom('infer')
    t.equal(e.error?.code, code, `${code}: ${e.error?.message}`)
    t.match(e.error?.message, message)
  }
  errors.clear()
  node('infer').receive({ payload: Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), topK: 0 })
  t.equal((await errors.errorFrom('infer')).error?.code, 'BAD_REQUEST', 'topK out of range')
  t.match(statuses(helper.getNode('infer')).at(-1), { fill: 'red', shape: 'dot' }, 'a red status after a bad message')
  t.equal(out.msgs.length, 0, 'nothing sent on for bad input')
  // A well-formed request the agent itself refuses (no such model in its cache) comes
  // back with the agent's code: the node is a thin client of the local API.
  errors.clear()
  node('infer').receive({ payload: { tensor: { shape: [1, 2], dtype: 'float32', data: [0.5, 0.5] } }, model: 'f'.repeat(64) })
  const refused = await errors.errorFrom('infer', 30_000)
  t.ok(refused.error?.code, `the agent's answer: ${refused.error?.code}: ${refused.error?.message}`)
  t.not(refused.error?.code, 'DISCONNECTED')
  t.notMatch(refused.error?.message ?? '', /msg.payload/, 'the refusal is the agent’s, not the node’s input check')
})

t.test('cairn gpio out: levels reach the pin; bad values, bad pins and the agent’s pins are refused', async t => {
  const gpio = await fakeGpio(a)
  const { errors } = await load([
    { id: 'out22', type: 'cairn-gpio-out', agent: 'agent', pin: '22', activeLow: false, initial: '1' },
    { id: 'out24', type: 'cairn-gpio-out', agent: 'agent', pin: '24', activeLow: true, initial: '0' },
    { id: 'led', type: 'cairn-gpio-out', agent: 'agent', pin: String(LED_PIN) },
    { id: 'nopin', type: 'cairn-gpio-out', agent: 'agent', pin: '99' },
  ])
  await statusMatching(helper.getNode('out22'), s => s.text === 'pin 22: 1', 'opened at its initial level')
  t.equal(gpio.physical(22), 1, 'opened at the initial level 1')
  await statusMatching(helper.getNode('out24'), s => s.text === 'pin 24: 0', 'opened')
  t.equal(gpio.physical(24), 1, 'active low: logical 0 is a high pin')
  const cases: Array<[unknown, 0 | 1]> = [
    [0, 0],
    [true, 1],
    ['off', 0],
    ['1', 1],
    [false, 0],
  ]
  for (const [payload, level] of cases) {
    node('out22').receive({ payload })
    await statusMatching(helper.getNode('out22'), s => s.text === `pin 22: ${level}`, `level ${level}`)
    t.equal(gpio.physical(22), level, `${JSON.stringify(payload)} → ${level}`)
  }
  for (const payload of ['banana', 2, null, { value: 1 }, Buffer.from('1')]) {
    errors.clear()
    node('out22').receive({ payload })
    const e = await errors.errorFrom('out22')
    t.equal(e.error?.code, 'BAD_REQUEST', `${e.error?.message}`)
  }
  t.equal(gpio.physical(22), 0, 'the pin kept its level through the bad messages')
  const busy = await statusMatching(helper.getNode('led'), s => s.fill === 'red', 'refused')
  t.match(busy.text, /PIN_BUSY/, `the status LED's pin is the agent's: ${busy.text}`)
  node('led').receive({ payload: 1 })
  t.equal((await errors.errorFrom('led')).error?.code, 'PIN_BUSY')
  t.match(statuses(helper.getNode('nopin')).at(-1), { fill: 'red', text: /pin must be a BCM number/ })
  node('nopin').receive({ payload: 1 })
  t.equal((await errors.errorFrom('nopin')).error?.code, 'BAD_REQUEST')
  await helper.unload()
  await until(() => !gpio.isOpen(22), 20_000, 'pin 22 released')
  t.notOk(gpio.isOpen(24), 'stopping the flow releases its pins')
})

t.test('cairn gpio in: edges, active low, a read on demand; the button pin is the agent’s', async t => {
  const gpio = await fakeGpio(a)
  gpio.setInput(23, 0)
  const { out, errors } = await load([
    { id: 'in23', type: 'cairn-gpio-in', agent: 'agent', pin: '23', edge: 'both', debounce: 0, activeLow: false, initial: true, wires: [['out']] },
    { id: 'in25', type: 'cairn-gpio-in', agent: 'agent', pin: '25', edge: 'falling', debounce: 0, activeLow: true, initial: false, wires: [['out']] },
    { id: 'button', type: 'cairn-gpio-in', agent: 'agent', pin: String(BUTTON_PIN), wires: [['out']] },
  ])
  const initial = await out.next(m => m.initial === true, 'the initial level')
  t.match(initial, { topic: 'gpio/23', payload: 0, pin: 23 })
  await connected('in25')
  gpio.setInput(23, 1)
  t.match(await out.next(m => m.topic === 'gpio/23' && m.payload === 1, 'a rising edge'), { pin: 23 })
  gpio.setInput(23, 0)
  await out.next(m => m.topic === 'gpio/23' && m.payload === 0 && m.initial !== true, 'a falling edge')
  // BCM 25 is active low: pulling it low is logical 1, a rising edge, which 'falling' skips.
  gpio.setInput(25, 0)
  gpio.setInput(25, 1)
  const fell = await out.next(m => m.topic === 'gpio/25', 'the falling edge on 25')
  t.equal(fell.payload, 0, 'only the falling edge, inverted')
  t.equal(out.msgs.filter(m => m.topic === 'gpio/25').length, 1, 'the rising edge was not sent')
  out.clear()
  gpio.setInput(23, 1)
  await out.next(m => m.topic === 'gpio/23', 'the edge')
  out.clear()
  node('in23').receive({ payload: 'read', keep: 1 })
  t.match(await out.next(), { topic: 'gpio/23', payload: 1, keep: 1 }, 'an input message reads the pin now')
  const busy = await statusMatching(helper.getNode('button'), s => s.fill === 'red', 'refused')
  t.match(busy.text, /PIN_BUSY/, String(busy.text))
  node('button').receive({})
  t.equal((await errors.errorFrom('button')).error?.code, 'PIN_BUSY')
})

t.test('cairn led: patterns set through the agent, "auto" hands the LED back, bad patterns refused', async t => {
  const { out, errors } = await load([
    { id: 'led', type: 'cairn-led', agent: 'agent', pattern: '', wires: [['out']] },
    { id: 'fixed', type: 'cairn-led', agent: 'agent', pattern: 'error', wires: [['out']] },
  ])
  await connected('led')
  const light = a.agent.deviceUi.light
  if (!light) throw new Error('the test agent has no status LED')
  node('led').receive({ payload: ' Blink ' })
  t.match(await out.next(), { payload: 'blink', led: { source: 'api' } }, 'the agent’s LED info comes back as msg.led')
  t.equal(light.info().source, 'api', 'the agent shows the flow’s pattern')
  out.clear()
  node('fixed').receive({ payload: 'whatever' })
  t.match(await out.next(), { payload: 'error' }, 'a fixed pattern ignores msg.payload')
  out.clear()
  node('led').receive({ payload: 'auto' })
  await out.next()
  t.equal(light.info().source, 'agent', 'auto gives the LED back to the agent')
  for (const payload of ['rainbow', 3, undefined]) {
    errors.clear()
    node('led').receive({ payload })
    const e = await errors.errorFrom('led')
    t.equal(e.error?.code, 'BAD_REQUEST', `${e.error?.message}`)
  }
})

t.test('the connection comes back after the agent restarts, and GPIO lines are opened again', async t => {
  const { errors } = await load([
    { id: 'out22', type: 'cairn-gpio-out', agent: 'agent', pin: '22', initial: '0' },
    { id: 'led', type: 'cairn-led', agent: 'agent', wires: [[]] },
  ])
  await connected('out22')
  node('out22').receive({ payload: 1 })
  await statusMatching(helper.getNode('out22'), s => s.text === 'pin 22: 1', 'level 1')
  const stateDir = a.stateDir
  await a.stop()
  await statusMatching(helper.getNode('led'), s => s.fill === 'red' && /disconnected/.test(s.text ?? ''), 'disconnected')
  node('led').receive({ payload: 'on' })
  const e = await errors.errorFrom('led')
  t.equal(e.error?.code, 'DISCONNECTED', `while the agent is away: ${e.error?.message}`)
  a = await startFlowAgent(broker.url, { stateDir })
  await statusMatching(helper.getNode('out22'), s => s.text === 'pin 22: 1', 'reopened at the last level', 20_000)
  const gpio = await fakeGpio(a)
  t.equal(gpio.physical(22), 1, 'the new agent drives the pin at the level last written')
  await connected('led')
})
