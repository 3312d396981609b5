// The LED pattern player: frames (active-low inversion), looping a pattern of on/off
// durations on a pin with a manual clock, keeping phase for the same pattern, switching
// cleanly, and surviving a failing line. What the patterns mean is the agent's
// (test/agent/device-ui/led-patterns.test.ts).
import t from 'tap'
import { createFakeGpio, describeSteps, ledFrames, LedPlayer, ManualTimers, type GpioLine, type Level, type LedStep } from '../../hw/gpio/index.js'

const on = (ms: number): LedStep => ({ on: true, ms })
const off = (ms: number): LedStep => ({ on: false, ms })
const SLOW = [on(1000), off(1000)]
const DOUBLE = [on(150), off(150), on(150), off(1550)]
const WINK = [on(2850), off(150)]

t.test('active-low wiring inverts every frame', async t => {
  t.strictSame(ledFrames(SLOW), [
    { level: 1, ms: 1000 },
    { level: 0, ms: 1000 },
  ])
  t.strictSame(ledFrames(SLOW, true), [
    { level: 0, ms: 1000 },
    { level: 1, ms: 1000 },
  ])
  t.equal(describeSteps(DOUBLE), 'on 150, off 150, on 150, off 1550')
})

/** Samples the pin every `step` ms for `ms`, as a run-length list [level, ms]. */
async function trace(timers: ManualTimers, read: () => Level, ms: number, step = 50): Promise<Array<[Level, number]>> {
  const out: Array<[Level, number]> = []
  for (let at = 0; at < ms; at += step) {
    const level = read()
    const last = out[out.length - 1]
    if (last !== undefined && last[0] === level) last[1] += step
    else out.push([level, step])
    await timers.advance(step)
  }
  return out
}

t.test('the player loops the pattern on the pin and switches cleanly', async t => {
  const timers = new ManualTimers()
  const gpio = createFakeGpio({ timers })
  const line = await gpio.open(17, { direction: 'out' })
  const led = new LedPlayer(line, { timers })
  led.play(DOUBLE)
  await timers.advance(0)
  t.strictSame(await trace(timers, () => gpio.physical(17), 4000), [
    [1, 150],
    [0, 150],
    [1, 150],
    [0, 1550],
    [1, 150],
    [0, 150],
    [1, 150],
    [0, 1550],
  ])
  await timers.advance(150) // into the first dark step of the third loop
  led.play(DOUBLE.map(s => ({ ...s })))
  t.equal(led.playing, DOUBLE, 'an equal pattern is the one already playing')
  await timers.advance(0)
  t.strictSame(
    await trace(timers, () => gpio.physical(17), 2000),
    [
      [0, 150],
      [1, 150],
      [0, 1550],
      [1, 150],
    ],
    'and keeps its phase',
  )
  led.play(WINK)
  await timers.advance(0)
  t.strictSame(
    await trace(timers, () => gpio.physical(17), 6000),
    [
      [1, 2850],
      [0, 150],
      [1, 2850],
      [0, 150],
    ],
    'a new pattern starts at its first step',
  )
  await led.stop()
  t.equal(gpio.physical(17), 0, 'dark after stop')
  t.equal(timers.scheduled, 0, 'no timer left')
  led.play(SLOW)
  t.equal(timers.scheduled, 0, 'a stopped player stays stopped')
})

t.test('a pattern with no steps, or a step of no length, is refused', async t => {
  const timers = new ManualTimers()
  const gpio = createFakeGpio({ timers })
  const led = new LedPlayer(await gpio.open(17, { direction: 'out' }), { timers })
  t.throws(() => led.play([]), RangeError)
  t.throws(() => led.play([on(100), off(0)]), RangeError)
  t.equal(timers.scheduled, 0)
})

t.test('active-low LED: lit is low, stop leaves the pin high', async t => {
  const timers = new ManualTimers()
  const gpio = createFakeGpio({ timers })
  const led = new LedPlayer(await gpio.open(17, { direction: 'out', initial: 1 }), { timers, activeLow: true })
  led.play(SLOW)
  await timers.advance(0)
  t.strictSame(await trace(timers, () => gpio.physical(17), 4000, 100), [
    [0, 1000],
    [1, 1000],
    [0, 1000],
    [1, 1000],
  ])
  await led.stop()
  t.equal(gpio.physical(17), 1)
})

t.test('a failing line is logged once and does not stop the loop', async t => {
  const timers = new ManualTimers()
  const warnings: string[] = []
  let writes = 0
  const broken: GpioLine = {
    bcm: 17,
    location: { driver: 'fake', chip: 'fake', line: 17 },
    read: async () => 0,
    write: async () => {
      writes++
      throw new Error('EIO')
    },
    watch: () => () => undefined,
    close: async () => undefined,
  }
  const led = new LedPlayer(broken, { timers, log: { info() {}, warn: (_o, msg) => void warnings.push(msg) } })
  led.play([on(150), off(150)])
  await timers.advance(1000)
  t.ok(writes >= 6, `kept stepping (${writes} writes)`)
  t.strictSame(warnings, ['LED write failed'])
})
