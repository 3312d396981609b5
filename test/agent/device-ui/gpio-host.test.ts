// What the agent's GPIO host knows of the lines it holds (agent/device-ui/gpio-host.ts),
// on the fake GPIO and a manual clock: each line opened through it is listed by pin with
// its holder and direction, its value follows writes, reads and reported edges (and not
// failed calls), and closed lines leave the list. The status LED and the button list
// theirs through the same host.

import t, { type Test } from 'tap'
import { createFixtureRunner } from '../../../hw/index.js'
import { ManualTimers, type FakeGpio } from '../../../hw/gpio/index.js'
import { createLogger } from '../../../protocol/log.js'
import { GpioHost } from '../../../agent/device-ui/gpio-host.js'
import { StatusLight } from '../../../agent/device-ui/status-light.js'
import { AgentButton } from '../../../agent/device-ui/button-actions.js'

const log = createLogger({ level: 'fatal', out: { write: () => true } })

function host(t: Test, reserved = new Map<number, string>()) {
  const timers = new ManualTimers()
  const h = new GpioHost({ hw: { root: '/nonexistent', run: createFixtureRunner({}) }, driver: 'fake', log, reserved, timers })
  t.teardown(() => h.close())
  return { host: h, timers, fake: async () => (await h.driver()) as FakeGpio }
}

t.test('lines by holder and pin: outputs from their initial level and writes, inputs from reads and edges', async t => {
  const { host: h, timers, fake: getFake } = host(t)
  t.same(h.lines(), [], 'nothing held')
  t.equal(await h.driverName(), undefined, 'listing creates no driver')
  const fake = await getFake()

  // Opened out of pin order; listed by pin.
  fake.setInput(23, 1)
  const input = await h.open('local-api', 23, { direction: 'in', edge: 'both', debounceMs: 0 })
  const output = await h.open('local-api', 22, { direction: 'out', activeLow: true, initial: 1 })
  const plain = await h.open('led', 4, { direction: 'out' })
  t.same(
    h.lines(),
    [
      { pin: 4, holder: 'led', direction: 'out', value: 0 },
      { pin: 22, holder: 'local-api', direction: 'out', value: 1 },
      { pin: 23, holder: 'local-api', direction: 'in' },
    ],
    'outputs at their initial level (default 0; logical, so active-low 1 is listed as 1), an input unknown until seen',
  )
  t.equal(fake.physical(22), 0, 'the active-low output really drives the pin low')

  await output.write(0)
  t.match(h.lines()[1], { pin: 22, value: 0 }, 'a write')
  t.equal(fake.physical(22), 1)

  t.equal(await input.read(), 1)
  t.match(h.lines()[2], { pin: 23, direction: 'in', value: 1 }, 'a read')

  const events: number[] = []
  const unwatch = input.watch(ev => events.push(ev.value))
  fake.setInput(23, 0)
  await timers.advance(1)
  t.same(events, [0], 'the watcher still gets its event')
  t.match(h.lines()[2], { pin: 23, value: 0 }, 'an edge')
  unwatch()

  await t.rejects(input.write(1), { code: 'direction' }, 'writing an input fails')
  t.match(h.lines()[2], { pin: 23, value: 0 }, 'and changes nothing')

  await output.close()
  t.same(
    h.lines().map(l => l.pin),
    [4, 23],
    'a closed line leaves the list',
  )
  await output.close()
  const again = await h.open('button', 22, { direction: 'in' })
  await output.close() // the old handle again: must not drop the new holder's line
  t.same(h.lines()[1], { pin: 22, holder: 'button', direction: 'in' }, 'the pin opened again, by another holder')

  await t.rejects(h.open('local-api', 4, { direction: 'in' }), { code: 'busy' }, 'a pin already held')
  await t.rejects(h.open('local-api', 40, { direction: 'in' }), { code: 'no-such-pin' })
  t.same(
    h.lines().map(l => [l.pin, l.holder]),
    [
      [4, 'led'],
      [22, 'button'],
      [23, 'local-api'],
    ],
    'failed opens list nothing',
  )

  await plain.close()
  await again.close()
  await input.close()
  t.same(h.lines(), [])

  await h.open('local-api', 5, { direction: 'out' })
  await h.close()
  t.same(h.lines(), [], 'closing the host releases (and unlists) every line')
})

t.test('an input watched for one edge keeps the level it last saw (nothing is polled)', async t => {
  const { host: h, timers, fake: getFake } = host(t)
  const fake = await getFake()
  const line = await h.open('local-api', 6, { direction: 'in', edge: 'rising' })
  line.watch(() => undefined)
  fake.setInput(6, 1)
  await timers.advance(1)
  t.match(h.lines()[0], { pin: 6, value: 1 }, 'the rising edge')
  fake.setInput(6, 0)
  await timers.advance(1)
  t.match(h.lines()[0], { pin: 6, value: 1 }, 'the falling edge is not reported, so not seen')
  t.equal(await line.read(), 0)
  t.match(h.lines()[0], { pin: 6, value: 0 }, 'until a read')
})

t.test('the status LED and the button list their lines through the host', async t => {
  const LED = 17
  const BUTTON = 27
  const { host: h, timers, fake: getFake } = host(t)
  const fake = await getFake()
  fake.setInput(BUTTON, 1) // pulled up: released
  const light = new StatusLight({ host: h, pin: LED, activeLow: false, log, initial: 'online' })
  await light.start()
  const events: string[] = []
  const button = new AgentButton({
    host: h,
    pin: BUTTON,
    activeLow: true,
    debounceMs: 0,
    longPressMs: 3000,
    confirmWindowMs: 10_000,
    reprovisionCommand: ['true'],
    publishEvent: kind => void events.push(kind),
    settle: async () => undefined,
    log,
  })
  await button.start()
  await timers.advance(0)
  t.same(
    h.lines(),
    [
      { pin: LED, holder: 'led', direction: 'out', value: 1 },
      { pin: BUTTON, holder: 'button', direction: 'in', value: 0 },
    ],
    "the LED lit at the start of 'online'; the button released (logical 0), read as it started",
  )
  // 'online' is on 2850 ms, then a 150 ms wink: the blink player's writes are followed.
  await timers.advance(2850)
  t.match(h.lines()[0], { pin: LED, value: 0 }, 'the wink')
  await timers.advance(150)
  t.match(h.lines()[0], { pin: LED, value: 1 }, 'lit again')
  t.equal(fake.physical(LED), 1)

  await light.set('off')
  t.match(h.lines()[0], { pin: LED, value: 0 }, 'the LED set off')
  await light.set('on')
  t.match(h.lines()[0], { pin: LED, value: 1 }, 'and on')

  fake.setInput(BUTTON, 0) // pressed
  await timers.advance(10)
  t.match(h.lines()[1], { pin: BUTTON, value: 1 }, 'a press, from its edge')
  fake.setInput(BUTTON, 1)
  await timers.advance(10)
  t.match(h.lines()[1], { pin: BUTTON, value: 0 }, 'released')
  t.same(events, ['button.press'])

  await button.stop()
  await light.stop()
  t.same(h.lines(), [], 'both released on stop')
})
