// The button's gestures: the pure press classifier on hand-picked times, then the
// watcher on the fake GPIO with a bouncing contact and a manual clock. What a gesture
// means is the agent's (test/agent/device-ui/button.test.ts).
import t from 'tap'
import { ButtonMachine, createFakeGpio, ManualTimers, watchButton, type ButtonGesture, type Level } from '../../hw/gpio/index.js'

const timing = { longPressMs: 3000, confirmWindowMs: 10_000 }

t.test('short press, long press, confirmation', async t => {
  const m = new ButtonMachine(timing)
  t.strictSame(m.press(0), [])
  t.strictSame(m.release(400), ['press'], 'short press')

  t.strictSame(m.press(1000), [])
  t.equal(m.deadline(), 4000)
  t.strictSame(m.tick(3999), [])
  t.strictSame(m.tick(4000), ['long-press'], 'reported at the threshold, while still held')
  t.strictSame(m.release(5000), [], 'release after a long press says nothing more')
  t.match(m.state, { kind: 'armed', until: 15_000 })

  t.strictSame(m.press(9000), [])
  t.strictSame(m.tick(12_000), ['confirmed-long-press'], 'a second long press inside the window confirms')
  t.strictSame(m.release(12_500), [])
  t.strictSame(m.state, { kind: 'idle' })
})

t.test('the window expires, or a tap cancels it', async t => {
  const m = new ButtonMachine(timing)
  m.press(0)
  t.strictSame(m.release(3500), ['long-press'], 'threshold crossed by release time is still reported')
  t.strictSame(m.tick(13_499), [])
  t.strictSame(m.tick(13_500), ['cancel'], 'no confirmation within 10 s')
  t.strictSame(m.press(20_000), [])
  t.strictSame(m.release(20_100), ['press'], 'back to normal presses')

  m.press(30_000)
  m.tick(33_000)
  m.release(33_100)
  t.strictSame(m.press(34_000), [])
  t.strictSame(m.release(34_200), ['cancel'], 'a short press inside the window cancels')
  t.strictSame(m.press(50_000), [], 'a late press after an unticked expiry…')
  t.strictSame(m.state, { kind: 'down', since: 50_000, confirming: false, longSent: false }, '…starts fresh')
})

t.test('a press that began outside the window cannot confirm', async t => {
  const m = new ButtonMachine(timing)
  m.press(0)
  m.tick(3000)
  m.release(3000)
  t.strictSame(m.press(13_000), ['cancel'], 'the window (3000-13000) closed as this press began')
  t.strictSame(m.tick(16_000), ['long-press'], 'so this is a new first long press')
})

t.test('watchButton: a bouncing active-low button on the fake GPIO', async t => {
  const timers = new ManualTimers()
  const gpio = createFakeGpio({ timers })
  gpio.setInput(4, 1) // pulled up, not pressed
  const line = await gpio.open(4, { direction: 'in', activeLow: true, debounceMs: 30 })
  const gestures: Array<[ButtonGesture, number]> = []
  const start = timers.now()
  const button = await watchButton(line, { timers, timing, onGesture: (a, at) => void gestures.push([a, at - start]) })

  const contact = async (levels: Level[], ms: number) => {
    for (const l of levels) {
      gpio.setInput(4, l)
      await timers.advance(2)
    }
    await timers.advance(ms)
  }
  await contact([0, 1, 0, 1, 0], 200) // press with bounce, held ~200 ms
  await contact([1, 0, 1], 500) // release with bounce
  t.strictSame(gestures, [['press', 214]], 'one press, stamped when the release settled (last bounce at 214 ms)')

  await contact([0, 1, 0], 3100) // held 3 s
  t.strictSame(
    gestures.map(a => a[0]),
    ['press', 'long-press'],
    'long press reported while held',
  )
  await contact([1], 2000)
  await contact([0], 3100)
  t.strictSame(
    gestures.map(a => a[0]),
    ['press', 'long-press', 'confirmed-long-press'],
  )
  await contact([1], 500)
  button.stop()
  t.equal(timers.scheduled, 0, 'nothing scheduled after stop')
})

t.test('watchButton: a button held at start is ignored until released', async t => {
  const timers = new ManualTimers()
  const gpio = createFakeGpio({ timers })
  gpio.setInput(4, 0) // held (active-low)
  const line = await gpio.open(4, { direction: 'in', activeLow: true, debounceMs: 20 })
  const gestures: ButtonGesture[] = []
  const button = await watchButton(line, { timers, timing, onGesture: a => void gestures.push(a) })
  await timers.advance(5000)
  gpio.setInput(4, 1)
  await timers.advance(100)
  t.strictSame(gestures, [], 'no long press from a button held through start-up')
  gpio.setInput(4, 0)
  await timers.advance(100)
  gpio.setInput(4, 1)
  await timers.advance(100)
  t.strictSame(gestures, ['press'])
  button.stop()
})
