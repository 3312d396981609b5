// The status LED and button driven by a real agent on a real Mosquitto, with the fake
// GPIO standing in for the header: the LED follows the broker going away and coming
// back, a provisioning error and an update; a short press is an MQTT event; a long press
// and its confirmation run the re-provision command; every line is released on stop.

import t from 'tap'
import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { startBroker } from '../../helpers/broker.js'
import { Consumer, tmp, until } from '../../helpers/agent.js'
import { hasNetwork } from '../../../agent/device-ui/device-ui.js'
import { PROVISION_ERROR_FILE } from '../../../protocol/state-files.js'
import { RawClient, startApiAgent } from '../local-api/helpers.js'

const LED = 17
const BUTTON = 27

t.test('the LED follows the broker going away and coming back, a provisioning error and an update', async t => {
  const broker = await startBroker()
  t.teardown(() => broker.close())
  const a = await startApiAgent(broker.url, { gpio: { driver: 'fake', statusLed: { pin: LED } } })
  t.teardown(() => a.stop())
  const fake = await a.fake()
  const shown = () => a.agent.deviceUi.light?.info().shown
  const c = await RawClient.open(a.socket, a.token)
  t.teardown(() => c.close())
  await c.req('subscribe', { topics: ['status'] })
  await until(() => shown() === 'online', 10_000, 'LED online')
  // 'online' is on with a short wink: the line really toggles.
  await until(() => fake.physical(LED) === 1, 5000, 'LED lit')

  await broker.stop()
  await until(() => shown() === 'broker-unreachable', 10_000, 'LED shows broker unreachable')
  const down = await c.waitFor(f => f.topic === 'status' && (f.data as { state: string }).state === 'broker-unreachable', 'status event')
  t.same(down.data, { connected: false, state: 'broker-unreachable' })
  // Two quick flashes then a long pause: both levels appear within one 2 s loop.
  await until(() => fake.physical(LED) === 0, 5000, 'dark phase')
  await until(() => fake.physical(LED) === 1, 5000, 'flash phase')

  await broker.start()
  await until(() => shown() === 'online', 20_000, 'LED back to online')
  const downAt = c.frames.indexOf(down)
  const up = await c.waitFor(f => c.frames.indexOf(f) > downAt && f.topic === 'status' && (f.data as { connected: boolean }).connected === true, 'status event: connected again')
  t.same(up.data, { connected: true, state: 'online' })

  const marker = join(a.stateDir, PROVISION_ERROR_FILE)
  writeFileSync(marker, 'cairn.yaml: broker.url is missing\n')
  await until(() => shown() === 'provisioning-error', 5000, 'provisioning error shown')
  rmSync(marker)
  await until(() => shown() === 'online', 5000, 'cleared')

  a.agent.publishEvent('ota.staged', { version: '9.9.9', slot: 'b' })
  await until(() => shown() === 'updating', 5000, 'updating shown on an OTA event')
  a.agent.publishEvent('ota.failed', { step: 'switching', reason: 'test' })
  await until(() => shown() === 'online', 5000, 'back to online after the update ends')
  t.same(c.schemaProblems, [])

  await a.stop()
  t.equal(fake.isOpen(LED), false, 'the LED line is released on stop')
  t.equal(fake.physical(LED), 0, 'and left dark')
})

t.test('button: a short press is an MQTT event; long press + confirmation runs the re-provision command', async t => {
  const broker = await startBroker()
  t.teardown(() => broker.close())
  const dir = tmp()
  const done = join(dir, 'reprovisioned')
  const a = await startApiAgent(broker.url, {
    gpio: { driver: 'fake', statusLed: { pin: LED, activeLow: true }, button: { pin: BUTTON, debounceMs: 0, longPressMs: 300, confirmWindowMs: 5000 } },
    system: { reprovisionCommand: [process.execPath, '-e', `require('fs').writeFileSync(${JSON.stringify(done)}, 'yes')`] },
  })
  t.teardown(() => a.stop())
  const fake = await a.fake()
  const mq = await Consumer.connect(broker.url, `cairn/v1/test/${a.agent.deviceId}/event`)
  t.teardown(() => mq.close())
  const kinds = () => mq.messages.map(m => m.json?.kind as string)
  // Wired to GND with a pull-up: released reads high. The fake starts low ("held"), which
  // the agent ignores until released.
  fake.setInput(BUTTON, 1)
  fake.setInput(BUTTON, 0)
  fake.setInput(BUTTON, 1)
  const press = await mq.waitFor(m => m.find(x => x.json?.kind === 'button.press'), 10_000, 'button.press over MQTT')
  t.same((press.json as { data: unknown }).data, { pin: BUTTON })
  t.equal(press.topic, `cairn/v1/test/${a.agent.deviceId}/event`)

  fake.setInput(BUTTON, 0) // hold
  await mq.waitFor(m => m.find(x => x.json?.kind === 'button.long-press'), 10_000, 'button.long-press')
  t.notOk(existsSync(done), 'one long press alone does nothing')
  fake.setInput(BUTTON, 1)
  fake.setInput(BUTTON, 0) // hold again inside the window
  await mq.waitFor(m => m.find(x => x.json?.kind === 'button.reprovision'), 10_000, 'button.reprovision')
  fake.setInput(BUTTON, 1)
  await until(() => existsSync(done), 10_000, 'the re-provision command ran')
  t.equal(readFileSync(done, 'utf8'), 'yes')
  t.same(
    kinds().filter(k => k.startsWith('button.')),
    ['button.press', 'button.long-press', 'button.reprovision'],
    'events in order, the event before the command',
  )
  await a.stop()
  t.ok(!fake.isOpen(LED) && !fake.isOpen(BUTTON), 'both lines released on stop')
  t.equal(fake.physical(LED), 1, 'an active-low LED is left dark (pin high)')
})

t.test('a failing re-provision command is reported as an event, and the agent carries on', async t => {
  const broker = await startBroker()
  t.teardown(() => broker.close())
  const a = await startApiAgent(broker.url, {
    gpio: { driver: 'fake', button: { pin: BUTTON, debounceMs: 0, longPressMs: 200, confirmWindowMs: 5000 } },
    system: { reprovisionCommand: ['/nonexistent/cairn-reprovision'] },
  })
  t.teardown(() => a.stop())
  const fake = await a.fake()
  const mq = await Consumer.connect(broker.url, `cairn/v1/test/${a.agent.deviceId}/event`)
  t.teardown(() => mq.close())
  fake.setInput(BUTTON, 1)
  fake.setInput(BUTTON, 0)
  await mq.waitFor(m => m.find(x => x.json?.kind === 'button.long-press'), 10_000, 'long press')
  fake.setInput(BUTTON, 1)
  fake.setInput(BUTTON, 0)
  const failed = await mq.waitFor(m => m.find(x => x.json?.kind === 'system.reprovision-failed'), 10_000, 'failure event')
  t.match((failed.json as { data: { message: string } }).data.message, /ENOENT/)
  t.equal(a.agent.link.connected, true, 'still connected')
})

t.test('a broken GPIO setting does not stop the agent', async t => {
  const broker = await startBroker()
  t.teardown(() => broker.close())
  // LED and button on the same pin: the second open fails.
  const a = await startApiAgent(broker.url, { gpio: { driver: 'fake', statusLed: { pin: 4 }, button: { pin: 4 } } })
  t.teardown(() => a.stop())
  await until(() => a.agent.link.connected, 10_000, 'connected')
  t.ok(
    a.logs.some(l => l.includes('button not started')),
    'the failure is logged',
  )
  t.ok(a.agent.deviceUi.light, 'the LED still works')
})

t.test('network detection: a loopback broker needs none; link-local addresses do not count', async t => {
  const iface = (address: string, family: 'IPv4' | 'IPv6', internal = false) => ({ address, family, internal, netmask: '', mac: '', cidr: null }) as never
  t.equal(
    hasNetwork('mqtt://127.0.0.1:1883', () => ({})),
    true,
  )
  t.equal(
    hasNetwork('mqtt://broker.example:1883', () => ({ lo: [iface('127.0.0.1', 'IPv4', true)] })),
    false,
  )
  t.equal(
    hasNetwork('mqtt://broker.example:1883', () => ({ eth0: [iface('169.254.3.4', 'IPv4'), iface('fe80::1', 'IPv6')] })),
    false,
  )
  t.equal(
    hasNetwork('mqtts://broker.example:8883', () => ({ wlan0: [iface('192.168.1.20', 'IPv4')] })),
    true,
  )
  t.equal(
    hasNetwork('mqtt://[2001:db8::1]:1883', () => ({ eth0: [iface('2001:db8::2', 'IPv6')] })),
    true,
  )
})
