// The status LED's policy: one distinct, looping pattern per agent state, the state
// priority, and the local API's list of states agreeing with it. Each pattern is then
// played through hw/gpio's LedPlayer on the fake GPIO to show it reaches the pin as written.
import t from 'tap'
import { createFakeGpio, describeSteps, LedPlayer, ManualTimers } from '../../../hw/gpio/index.js'
import { LED_PATTERNS, LED_STATES, ledStateFor, type LedState } from '../../../agent/device-ui/led-patterns.js'
import { AGENT_STATES } from '../../../agent/local-api/protocol.js'
import type { LedShown } from '../../../agent/device-ui/status-light.js'
import { schemaErrors } from '../../helpers/schemas.js'

const STATES = Object.keys(LED_PATTERNS) as LedState[]

/** What an eye counts over one loop: the lengths of the on-flashes, and the period. */
const signature = (s: LedState) => {
  const steps = LED_PATTERNS[s].steps
  return JSON.stringify([steps.filter(x => x.on).map(x => x.ms), steps.reduce((a, x) => a + x.ms, 0)])
}

t.test('every state has its own pattern, alternating on/off, 2-3 s loops', async t => {
  t.strictSame([...STATES].sort(), ['broker-unreachable', 'disk-full', 'no-network', 'online', 'provisioning-error', 'updating'])
  t.strictSame([...STATES].sort(), [...LED_STATES].sort(), 'LED_STATES lists every patterned state')
  t.equal(new Set(STATES.map(signature)).size, STATES.length, 'no two patterns look alike')
  for (const s of STATES) {
    const steps = LED_PATTERNS[s].steps
    t.ok(
      steps.every((x, i) => x.on === (i % 2 === 0)),
      `${s}: starts on and alternates`,
    )
    t.ok(
      steps.every(x => x.ms >= 100),
      `${s}: no step under 100 ms (visible, and cheap for the gpiod driver)`,
    )
    const period = steps.reduce((a, x) => a + x.ms, 0)
    t.ok(period <= 3000, `${s}: loops within 3 s (${describeSteps(steps)})`)
  }
})

t.test('the most urgent condition wins', async t => {
  const ok = { provisioningError: false, updating: false, network: true, broker: true }
  t.equal(ledStateFor(ok), 'online')
  t.equal(ledStateFor({ ...ok, broker: false }), 'broker-unreachable')
  t.equal(ledStateFor({ ...ok, broker: false, network: false }), 'no-network')
  t.equal(ledStateFor({ ...ok, network: false, updating: true }), 'updating')
  t.equal(ledStateFor({ ...ok, network: false, updating: true, diskFull: true }), 'disk-full', 'a full disk before an update')
  t.equal(ledStateFor({ ...ok, network: false, updating: true, diskFull: true, provisioningError: true }), 'provisioning-error')
  t.strictSame(AGENT_STATES, LED_STATES, 'the local API lists the same states, most urgent first')
})

t.test('each pattern reaches the pin as written', async t => {
  for (const s of STATES) {
    const timers = new ManualTimers()
    const gpio = createFakeGpio({ timers })
    const led = new LedPlayer(await gpio.open(17, { direction: 'out' }), { timers })
    led.play(LED_PATTERNS[s].steps)
    await timers.advance(0)
    const seen: Array<{ on: boolean; ms: number }> = []
    for (const step of LED_PATTERNS[s].steps) {
      seen.push({ on: gpio.physical(17) === 1, ms: step.ms })
      await timers.advance(step.ms)
    }
    t.strictSame(seen, LED_PATTERNS[s].steps, s)
    await led.stop()
  }
})

t.test("whatever the LED shows fits telemetry's io.led.shown", async t => {
  // Every state plus the two steady levels led.set gives: all that LedShown allows (checked by the compiler).
  const all = [...LED_STATES, 'on', 'off'] as const satisfies readonly LedShown[]
  const complete: [Exclude<LedShown, (typeof all)[number]>] extends [never] ? true : false = true
  t.ok(complete)
  const msg = {
    v: 1,
    id: '0mwvr3wua-VgU_KZe0OzM',
    device: 'd'.repeat(52),
    ts: 1_700_000_000_000,
    sample: { board: { kind: 'rpi5', model: 'Raspberry Pi 5', arch: 'aarch64' }, uptimeS: 1, load: [0, 0, 0] },
  }
  for (const shown of all) t.equal(schemaErrors('telemetry', { ...msg, io: { led: { pin: 17, shown, source: 'agent' }, lines: [] } }), null, shown)
})
