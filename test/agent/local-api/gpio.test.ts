// GPIO and the LED through the local API of a real agent (fake GPIO driver, real
// Mosquitto): lend lines, read, write, edge events, refuse the agent's own pins and
// pins another client holds, release on disconnect, led.set and 'auto'.

import t from 'tap'
import { startBroker, type TestBroker } from '../../helpers/broker.js'
import { until } from '../../helpers/agent.js'
import { LocalApiClient } from '../../../agent/local-api/api-client.js'
import { RawClient, resultErrors, startApiAgent } from './helpers.js'

const LED = 17
const BUTTON = 27

let broker: TestBroker
t.before(async () => {
  broker = await startBroker()
})
t.teardown(async () => broker.close())

const code = (f: Record<string, unknown>) => (f.error as { code?: string } | undefined)?.code

t.test('gpio.open / read / write / events / close through the fake driver', async t => {
  const a = await startApiAgent(broker.url, { gpio: { driver: 'fake', statusLed: { pin: LED }, button: { pin: BUTTON } } })
  t.teardown(() => a.stop())
  const fake = await a.fake()
  const c = await RawClient.open(a.socket, a.token)
  t.teardown(() => c.close())
  await c.req('subscribe', { topics: ['gpio'] })

  const out = await c.req('gpio.open', { pin: 22, mode: 'out', initial: 0 })
  t.equal(out.ok, true)
  t.equal(resultErrors('gpio.open', out.data), null, 'gpio.open result as documented')
  t.match(out.data, { pin: 22, mode: 'out', value: 0, driver: 'fake' })
  t.equal((await c.req('gpio.write', { pin: 22, value: 1 })).ok, true)
  t.equal(fake.physical(22), 1, 'the pin is driven high')
  t.same((await c.req('gpio.read', { pin: 22 })).data, { pin: 22, value: 1 })
  const lowOut = await c.req('gpio.open', { pin: 24, mode: 'out', activeLow: true, initial: 1 })
  t.equal(lowOut.ok, true)
  t.equal(fake.physical(24), 0, 'active-low: logical 1 drives the pin low')

  fake.setInput(23, 0)
  const inp = await c.req('gpio.open', { pin: 23, mode: 'in', edge: 'both', debounceMs: 0 })
  t.match(inp.data, { pin: 23, mode: 'in', value: 0 })
  fake.setInput(23, 1)
  const ev = await c.waitFor(f => f.type === 'event' && f.topic === 'gpio', 'a gpio event')
  t.same(ev.data, { pin: 23, value: 1, edge: 'rising' })
  t.same((await c.req('gpio.read', { pin: 23 })).data, { pin: 23, value: 1 })
  t.equal(code(await c.req('gpio.write', { pin: 23, value: 0 })), 'GPIO', 'writing an input is refused')
  t.equal(code(await c.req('gpio.read', { pin: 5 })), 'BAD_REQUEST', 'reading a pin not opened')
  t.equal(code(await c.req('gpio.open', { pin: 40, mode: 'in' })), 'BAD_REQUEST', 'a pin the header does not have')
  t.equal(code(await c.req('gpio.open', { pin: 64, mode: 'in' })), 'BAD_REQUEST', 'a pin outside the schema')
  t.equal(code(await c.req('gpio.open', { pin: 22, mode: 'in' })), 'PIN_BUSY', 'opened twice on one connection')

  t.equal((await c.req('gpio.close', { pin: 22 })).ok, true)
  t.equal(fake.isOpen(22), false, 'closed lines are released')
  t.same(c.schemaProblems, [])
})

t.test("the agent's own pins and another client's pins are PIN_BUSY; lines are released on disconnect", async t => {
  const a = await startApiAgent(broker.url, { gpio: { driver: 'fake', statusLed: { pin: LED }, button: { pin: BUTTON } } })
  t.teardown(() => a.stop())
  const fake = await a.fake()
  const c1 = await RawClient.open(a.socket, a.token)
  const c2 = await RawClient.open(a.socket, a.token)
  t.teardown(() => c2.close())
  const led = await c1.req('gpio.open', { pin: LED, mode: 'out' })
  t.equal(code(led), 'PIN_BUSY')
  t.match((led.error as { message: string }).message, /status LED/, 'says whose pin it is')
  t.equal(code(await c1.req('gpio.open', { pin: BUTTON, mode: 'in' })), 'PIN_BUSY', 'the button pin too')
  t.equal((await c1.req('gpio.open', { pin: 5, mode: 'out', initial: 1 })).ok, true)
  t.equal((await c1.req('gpio.open', { pin: 6, mode: 'in' })).ok, true)
  t.equal(code(await c2.req('gpio.open', { pin: 5, mode: 'out' })), 'PIN_BUSY', 'held by another client')
  c1.close()
  await until(() => !fake.isOpen(5) && !fake.isOpen(6), 10_000, 'lines released when the client left')
  t.equal((await c2.req('gpio.open', { pin: 5, mode: 'out' })).ok, true, 'free for the next client')
  t.ok(fake.isOpen(LED) && fake.isOpen(BUTTON), "the agent's own lines stay open")
})

t.test('led.set overrides the agent until auto; status shows who drives it', async t => {
  const a = await startApiAgent(broker.url, { gpio: { driver: 'fake', statusLed: { pin: LED } } })
  t.teardown(() => a.stop())
  const fake = await a.fake()
  const c = new LocalApiClient({ socketPath: a.socket, token: a.token })
  t.teardown(() => c.close())
  await c.connect()
  await until(() => a.agent.link.connected, 10_000, 'online')
  await until(() => a.agent.deviceUi.light?.info().shown === 'online', 10_000, 'LED shows online')
  const on = await c.request('led.set', { pattern: 'on' })
  t.match(on, { pin: LED, shown: 'on', source: 'api', driver: 'fake' })
  t.equal(fake.physical(LED), 1, 'steady on')
  t.match(await c.request('led.set', { pattern: 'off' }), { shown: 'off', source: 'api' })
  t.equal(fake.physical(LED), 0, 'steady off')
  t.match(await c.request('led.set', { pattern: 'error' }), { shown: 'provisioning-error', source: 'api' })
  const status = await c.request('status')
  t.match(status.led, { shown: 'provisioning-error', source: 'api' }, 'status reports the override')
  t.equal(status.state, 'online', 'while the agent itself is online')
  t.match(await c.request('led.set', { pattern: 'auto' }), { shown: 'online', source: 'agent' }, 'auto hands it back')
  await t.rejects(c.request('led.set', { pattern: 'disco' as 'on' }), { code: 'BAD_REQUEST' })
})
