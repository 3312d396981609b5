// What the button's gestures mean to the agent, on the fake GPIO and a manual clock: a
// press, a long press and a cancel are events; only a confirmed long press (a second one
// inside the window) publishes button.reprovision and runs the re-provision command.
import t from 'tap'
import { existsSync, mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createFixtureRunner } from '../../../hw/index.js'
import { ManualTimers, type FakeGpio } from '../../../hw/gpio/index.js'
import { createLogger } from '../../../protocol/log.js'
import { AgentButton, BUTTON_ACTIONS } from '../../../agent/device-ui/button-actions.js'
import { GpioHost } from '../../../agent/device-ui/gpio-host.js'
import { until } from '../../helpers/agent.js'

const PIN = 27

t.test('only a confirmed long press re-provisions', async t => {
  t.strictSame(
    Object.entries(BUTTON_ACTIONS).filter(([, action]) => action === 'reprovision'),
    [['confirmed-long-press', 'reprovision']],
  )
})

t.test('gestures become events; the confirmed long press runs the command after the event', async t => {
  const timers = new ManualTimers()
  const log = createLogger({ level: 'fatal', out: { write: () => true } })
  const host = new GpioHost({ hw: { root: '/nonexistent', run: createFixtureRunner({}) }, driver: 'fake', log, reserved: new Map(), timers })
  t.teardown(() => host.close())
  const fake = (await host.driver()) as FakeGpio
  fake.setInput(PIN, 1) // pulled up, released
  const done = join(mkdtempSync(join(tmpdir(), 'cairn-button-')), 'reprovisioned')
  const events: Array<[string, Record<string, unknown>]> = []
  let settled = 0
  const button = new AgentButton({
    host,
    pin: PIN,
    activeLow: true,
    debounceMs: 0,
    longPressMs: 3000,
    confirmWindowMs: 10_000,
    reprovisionCommand: [process.execPath, '-e', `require('fs').writeFileSync(${JSON.stringify(done)}, 'yes')`],
    publishEvent: (kind, data) => void events.push([kind, data]),
    settle: async () => void settled++,
    log,
  })
  await button.start()
  const press = async (ms: number) => {
    fake.setInput(PIN, 0)
    await timers.advance(ms)
    fake.setInput(PIN, 1)
    await timers.advance(100)
  }

  await press(200)
  await press(3100)
  t.strictSame(
    events.map(e => e[0]),
    ['button.press', 'button.long-press'],
  )
  t.strictSame(events[1]![1], { pin: PIN, confirmWindowMs: 10_000 })
  await timers.advance(10_000)
  t.strictSame(
    events.map(e => e[0]),
    ['button.press', 'button.long-press', 'button.cancel'],
    'the window closed unconfirmed',
  )
  t.notOk(existsSync(done), 'one long press alone never re-provisions')

  await press(3100)
  await press(3100)
  t.strictSame(
    events.slice(3).map(e => e[0]),
    ['button.long-press', 'button.reprovision'],
  )
  t.match(events[4]![1], { pin: PIN, command: [process.execPath] })
  await until(() => existsSync(done), 10_000, 'the re-provision command ran')
  t.equal(settled, 1, 'after letting the event reach the broker')
  await button.stop()
})
