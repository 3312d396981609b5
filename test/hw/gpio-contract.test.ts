// One suite, every GPIO implementation: the fake, sysfs on each fixture board's
// tree, and the libgpiod tools on each recorded board. A driver that passes here
// maps BCM 17 to the right line, round-trips levels (active-high and -low),
// debounces edges identically, and releases what it holds.
import t, { type Test } from 'tap'
import { GpioError, type GpioEvent, type GpioLine } from '../../hw/gpio/index.js'
import { HARNESSES, type Harness } from './gpio-harness.js'

async function rejectsWith(t: Test, p: Promise<unknown>, code: string, what: string): Promise<void> {
  try {
    await p
    t.fail(`${what}: expected GpioError ${code}`)
  } catch (err) {
    t.ok(err instanceof GpioError, `${what}: a GpioError`)
    t.equal((err as GpioError).code, code, what)
  }
}

function collect(line: GpioLine): { events: GpioEvent[]; stop: () => void } {
  const events: GpioEvent[] = []
  const stop = line.watch(e => events.push(e))
  return { events, stop }
}

for (const [name, make] of HARNESSES) {
  t.test(name, async t => {
    const setup = async (t: Test): Promise<Harness> => {
      const h = await make(t)
      t.teardown(() => h.driver.close())
      return h
    }

    t.test('BCM 17 resolves to the header chip line for this board and kernel', async t => {
      const h = await setup(t)
      const line = await h.driver.open(17, { direction: 'out' })
      t.strictSame(line.location, h.bcm17)
      t.equal(line.bcm, 17)
    })

    t.test('output: write then read round-trips, and drives the pin', async t => {
      const h = await setup(t)
      const line = await h.driver.open(17, { direction: 'out' })
      t.equal(await h.physical(17), 0, 'opens low by default')
      await line.write(1)
      t.equal(await line.read(), 1)
      t.equal(await h.physical(17), 1)
      await line.write(0)
      t.equal(await line.read(), 0)
      t.equal(await h.physical(17), 0)
    })

    t.test('output: active-low inverts the pin, initial level honoured', async t => {
      const h = await setup(t)
      const line = await h.driver.open(17, { direction: 'out', activeLow: true, initial: 1 })
      t.equal(await h.physical(17), 0, 'logical 1 = pin low')
      await line.write(0)
      t.equal(await h.physical(17), 1)
      t.equal(await line.read(), 0)
    })

    t.test('input: read follows the pin, active-low inverted', async t => {
      const h = await setup(t)
      await h.setPhysical(17, 1)
      const high = await h.driver.open(17, { direction: 'in' })
      t.equal(await high.read(), 1)
      await h.setPhysical(17, 0)
      t.equal(await high.read(), 0)
      await high.close()
      const low = await h.driver.open(17, { direction: 'in', activeLow: true })
      t.equal(await low.read(), 1, 'pin low reads as logical 1')
    })

    t.test('edges: contact bounce inside debounceMs is one event', async t => {
      const h = await setup(t)
      const line = await h.driver.open(17, { direction: 'in', debounceMs: 20 })
      const { events } = collect(line)
      await h.timers.advance(5)
      const t0 = h.timers.now()
      for (const level of [1, 0, 1, 0, 1] as const) {
        await h.setPhysical(17, level)
        await h.timers.advance(3)
      }
      t.equal(events.length, 0, 'nothing before the level has held for 20 ms')
      await h.timers.advance(30)
      t.equal(events.length, 1, 'one rising event for the whole burst')
      t.equal(events[0]?.edge, 'rising')
      t.equal(events[0]?.value, 1)
      const at = events[0]?.atMs ?? 0
      t.ok(at >= t0 + 12 && at <= t0 + 13, `stamped when the level settled (${at - t0} ms)`)
      for (const level of [0, 1, 0] as const) {
        await h.setPhysical(17, level)
        await h.timers.advance(4)
      }
      await h.timers.advance(30)
      t.strictSame(
        events.map(e => e.edge),
        ['rising', 'falling'],
      )
      await h.setPhysical(17, 1)
      await h.timers.advance(5)
      await h.setPhysical(17, 0)
      await h.timers.advance(40)
      t.equal(events.length, 2, 'a 5 ms glitch is no event at all')
    })

    t.test('edges: only the requested direction, active-low flips the sense', async t => {
      const h = await setup(t)
      const line = await h.driver.open(17, { direction: 'in', edge: 'falling', activeLow: true })
      const { events } = collect(line)
      await h.timers.advance(2)
      await h.setPhysical(17, 1) // logical 0: falling
      await h.timers.advance(5)
      await h.setPhysical(17, 0) // logical 1: rising, filtered out
      await h.timers.advance(5)
      t.strictSame(
        events.map(e => [e.edge, e.value]),
        [['falling', 0]],
      )
    })

    t.test('close releases the line; later use fails with "closed"', async t => {
      const h = await setup(t)
      const out = await h.driver.open(17, { direction: 'out' })
      await out.write(1)
      t.notOk(await h.released(17), 'held while open')
      await out.close()
      t.ok(await h.released(17), 'released after close')
      await out.close() // idempotent
      await rejectsWith(t, out.write(1), 'closed', 'write after close')
      await rejectsWith(t, out.read(), 'closed', 'read after close')

      const input = await h.driver.open(18, { direction: 'in' })
      const { stop } = collect(input)
      await h.timers.advance(2)
      stop()
      await input.close()
      await h.timers.advance(5)
      t.ok(await h.released(18), 'a watched input is released too')
      t.equal(h.timers.scheduled, 0, 'no timers left running')
      const again = await h.driver.open(17, { direction: 'out' })
      t.ok(again, 'the pin can be opened again')
    })

    t.test('driver.close() and releaseSync() release every open line', async t => {
      const h = await setup(t)
      await h.driver.open(17, { direction: 'out', initial: 1 })
      const input = await h.driver.open(27, { direction: 'in' })
      collect(input)
      await h.timers.advance(1)
      await h.driver.close()
      t.ok((await h.released(17)) && (await h.released(27)), 'close()')
      await h.driver.open(22, { direction: 'out', initial: 1 })
      h.driver.releaseSync()
      await h.timers.advance(1)
      t.ok(await h.released(22), 'releaseSync()')
    })

    t.test('misuse is a typed error', async t => {
      const h = await setup(t)
      const out = await h.driver.open(17, { direction: 'out' })
      await rejectsWith(t, h.driver.open(17, { direction: 'in' }), 'busy', 'same pin twice')
      await rejectsWith(t, h.driver.open(99, { direction: 'in' }), 'no-such-pin', 'BCM 99')
      await rejectsWith(t, h.driver.open(-1, { direction: 'in' }), 'no-such-pin', 'BCM -1')
      t.throws(() => out.watch(() => undefined), { code: 'direction' }, 'watch on an output')
      const input = await h.driver.open(18, { direction: 'in' })
      await rejectsWith(t, input.write(1), 'direction', 'write on an input')
    })
  })
}
