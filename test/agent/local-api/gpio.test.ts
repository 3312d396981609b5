// GPIO and the LED through the local API of a real agent (fake GPIO driver, real
// Mosquitto): lend lines, read, write, edge events, refuse the agent's own pins and
// pins another client holds, release on disconnect, led.set and 'auto'; the agent's
// telemetry reports the LED and every line held (io).

import t from 'tap'
import { startBroker, type TestBroker } from '../../helpers/broker.js'
import { Consumer, until } from '../../helpers/agent.js'
import { schemaErrors } from '../../helpers/schemas.js'
import type { TelemetryMessage } from '../../../protocol/messages.js'
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

t.test('telemetry reports the LED, the button and the lines a client opened, wrote and saw', async t => {
  const a = await startApiAgent(broker.url, { telemetry: { periodS: 1 }, gpio: { driver: 'fake', statusLed: { pin: LED }, button: { pin: BUTTON } } })
  t.teardown(() => a.stop())
  const fake = await a.fake()
  const mq = await Consumer.connect(broker.url, `cairn/v1/test/${a.agent.deviceId}/telemetry`)
  t.teardown(() => mq.close())
  const samples = () => mq.messages.map(m => m.json as unknown as TelemetryMessage)
  /** The first sample, from now on, whose io passes `pred`. */
  const next = async (pred: (io: NonNullable<TelemetryMessage['io']>) => boolean, what: string): Promise<TelemetryMessage> => {
    const from = mq.messages.length
    return mq.waitFor(
      () =>
        samples()
          .slice(from)
          .find(m => m.io && pred(m.io)),
      10_000,
      what,
    )
  }
  const line = (io: TelemetryMessage['io'], pin: number) => io?.lines.find(l => l.pin === pin)

  fake.setInput(BUTTON, 1) // pulled up: released (the fake starts low, "held")
  await until(() => a.agent.deviceUi.light?.info().shown === 'online', 10_000, 'LED online')
  const c = await RawClient.open(a.socket, a.token)
  t.teardown(() => c.close())
  t.equal((await c.req('gpio.open', { pin: 22, mode: 'out', initial: 0 })).ok, true)
  t.equal((await c.req('gpio.write', { pin: 22, value: 1 })).ok, true)
  fake.setInput(23, 0)
  t.equal((await c.req('gpio.open', { pin: 23, mode: 'in', edge: 'both', debounceMs: 0 })).ok, true)
  fake.setInput(23, 1) // an edge the agent sees (no client subscribed to gpio events)

  const held = await next(io => line(io, 22)?.value === 1 && line(io, 23)?.value === 1 && line(io, BUTTON)?.value === 0, 'a sample with both lent lines')
  t.same(held.io!.led, { pin: LED, shown: 'online', source: 'agent' }, "the LED showing the agent's state")
  t.same(
    held.io!.lines.map(({ value: _value, ...l }) => l),
    [
      { pin: LED, holder: 'led', direction: 'out' },
      { pin: 22, holder: 'local-api', direction: 'out' },
      { pin: 23, holder: 'local-api', direction: 'in' },
      { pin: BUTTON, holder: 'button', direction: 'in' },
    ],
    'every line held, by pin, with its holder and direction',
  )
  t.ok(line(held.io, LED)!.value === 0 || line(held.io, LED)!.value === 1, "the LED line's level as it blinks")
  t.same(line(held.io, 22), { pin: 22, holder: 'local-api', direction: 'out', value: 1 }, 'the level the client wrote')
  t.same(line(held.io, 23), { pin: 23, holder: 'local-api', direction: 'in', value: 1 }, 'the level of the edge the agent saw')
  t.same(line(held.io, BUTTON), { pin: BUTTON, holder: 'button', direction: 'in', value: 0 }, 'the button released')

  t.match((await c.req('led.set', { pattern: 'on' })).data, { shown: 'on', source: 'api' })
  fake.setInput(BUTTON, 0) // pressed
  const lit = await next(io => io.led?.source === 'api' && line(io, BUTTON)?.value === 1, 'a sample with the LED set by a client and the button pressed')
  t.same(lit.io!.led, { pin: LED, shown: 'on', source: 'api' })
  t.same(line(lit.io, LED), { pin: LED, holder: 'led', direction: 'out', value: 1 }, 'steady on')
  fake.setInput(BUTTON, 1)

  t.equal((await c.req('gpio.close', { pin: 22 })).ok, true)
  const closed = await next(io => !line(io, 22), 'a sample without the closed line')
  t.ok(line(closed.io, 23), 'the other lent line stays')
  c.close()
  const left = await next(io => io.lines.every(l => l.holder !== 'local-api'), 'a sample after the client left')
  t.same(
    left.io!.lines.map(l => l.pin),
    [LED, BUTTON],
    "only the agent's own lines are left",
  )
  for (const m of samples()) t.equal(schemaErrors('telemetry', m), null, 'matches docs/schemas/telemetry.json')
})

t.test('an agent with GPIO but no LED sends no io until a client opens a line', async t => {
  const a = await startApiAgent(broker.url, { telemetry: { periodS: 1 } })
  t.teardown(() => a.stop())
  const mq = await Consumer.connect(broker.url, `cairn/v1/test/${a.agent.deviceId}/telemetry`)
  t.teardown(() => mq.close())
  const samples = () => mq.messages.map(m => m.json as unknown as TelemetryMessage)
  await mq.waitFor(() => samples().length >= 1, 10_000, 'a sample')
  t.equal(samples()[0]!.io, undefined, 'nothing held: no io')
  const c = await RawClient.open(a.socket, a.token)
  t.teardown(() => c.close())
  t.equal((await c.req('gpio.open', { pin: 5, mode: 'in' })).ok, true)
  const from = samples().length
  const m = await mq.waitFor(
    () =>
      samples()
        .slice(from)
        .find(x => x.io),
    10_000,
    'a sample with io',
  )
  t.same(m.io, { lines: [{ pin: 5, holder: 'local-api', direction: 'in', value: 0 }] }, 'no led; the input as gpio.open read it')
  t.equal(schemaErrors('telemetry', m), null)
})
