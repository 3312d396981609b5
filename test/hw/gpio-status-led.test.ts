// Status LED: the pattern table (distinct, looping, active-low inversion), the
// state priority, and the player stepping on a manual clock.
import t from 'tap'
import {
  createFakeGpio,
  describeSteps,
  LED_PATTERNS,
  ledFrames,
  ledStateFor,
  ManualTimers,
  StatusLed,
  type GpioLine,
  type Level,
  type LedState,
} from '../../hw/gpio/index.js'

const STATES = Object.keys(LED_PATTERNS) as LedState[]

/** What an eye counts over one loop: the lengths of the on-flashes, and the period. */
const signature = (s: LedState) => {
  const steps = LED_PATTERNS[s].steps
  return JSON.stringify([steps.filter((x) => x.on).map((x) => x.ms), steps.reduce((a, x) => a + x.ms, 0)])
}

t.test('every state has its own pattern, alternating on/off, 2-3 s loops', async (t) => {
  t.strictSame(STATES.sort(), ['broker-unreachable', 'no-network', 'online', 'provisioning-error', 'updating'])
  t.equal(new Set(STATES.map(signature)).size, STATES.length, 'no two patterns look alike')
  for (const s of STATES) {
    const steps = LED_PATTERNS[s].steps
    t.ok(steps.every((x, i) => x.on === (i % 2 === 0)), `${s}: starts on and alternates`)
    t.ok(steps.every((x) => x.ms >= 100), `${s}: no step under 100 ms (visible, and cheap for the gpiod driver)`)
    const period = steps.reduce((a, x) => a + x.ms, 0)
    t.ok(period <= 3000, `${s}: loops within 3 s (${describeSteps(steps)})`)
  }
})

t.test('active-low wiring inverts every frame', async (t) => {
  t.strictSame(ledFrames('no-network'), [
    { level: 1, ms: 1000 },
    { level: 0, ms: 1000 },
  ])
  t.strictSame(ledFrames('no-network', true), [
    { level: 0, ms: 1000 },
    { level: 1, ms: 1000 },
  ])
})

t.test('the most urgent condition wins', async (t) => {
  const ok = { provisioningError: false, updating: false, network: true, broker: true }
  t.equal(ledStateFor(ok), 'online')
  t.equal(ledStateFor({ ...ok, broker: false }), 'broker-unreachable')
  t.equal(ledStateFor({ ...ok, broker: false, network: false }), 'no-network')
  t.equal(ledStateFor({ ...ok, network: false, updating: true }), 'updating')
  t.equal(ledStateFor({ ...ok, network: false, updating: true, provisioningError: true }), 'provisioning-error')
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

t.test('the player loops the pattern on the pin and switches cleanly', async (t) => {
  const timers = new ManualTimers()
  const gpio = createFakeGpio({ timers })
  const line = await gpio.open(17, { direction: 'out' })
  const led = new StatusLed(line, { timers })
  led.show('broker-unreachable')
  await timers.advance(0)
  t.strictSame(await trace(timers, () => gpio.physical(17), 4000), [
    [1, 150], [0, 150], [1, 150], [0, 1550],
    [1, 150], [0, 150], [1, 150], [0, 1550],
  ])
  led.show('broker-unreachable')
  t.equal(led.state, 'broker-unreachable', 'same state: the loop keeps its phase')
  led.show('online')
  await timers.advance(0)
  t.strictSame(await trace(timers, () => gpio.physical(17), 6000), [[1, 2850], [0, 150], [1, 2850], [0, 150]])
  await led.stop()
  t.equal(gpio.physical(17), 0, 'dark after stop')
  t.equal(timers.scheduled, 0, 'no timer left')
  led.show('updating')
  t.equal(timers.scheduled, 0, 'a stopped LED stays stopped')
})

t.test('active-low LED: lit is low, stop leaves the pin high', async (t) => {
  const timers = new ManualTimers()
  const gpio = createFakeGpio({ timers })
  const led = new StatusLed(await gpio.open(17, { direction: 'out', initial: 1 }), { timers, activeLow: true })
  led.show('no-network')
  await timers.advance(0)
  t.strictSame(await trace(timers, () => gpio.physical(17), 4000, 100), [[0, 1000], [1, 1000], [0, 1000], [1, 1000]])
  await led.stop()
  t.equal(gpio.physical(17), 1)
})

t.test('a failing line is logged once and does not stop the loop', async (t) => {
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
  const led = new StatusLed(broken, { timers, log: { info() {}, warn: (_o, msg) => void warnings.push(msg) } })
  led.show('updating')
  await timers.advance(1000)
  t.ok(writes >= 6, `kept stepping (${writes} writes)`)
  t.strictSame(warnings, ['status LED write failed'])
})
