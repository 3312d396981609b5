// Driver selection at start-up: sysfs when the header chip is exportable, else
// the libgpiod tools, else the fake, each fallback with its reason logged; and the
// exit hook that releases lines.
import { EventEmitter } from 'node:events'
import { cp } from 'node:fs/promises'
import { join } from 'node:path'
import t from 'tap'
import { createFixtureRunner } from '../../hw/index.js'
import { createFakeGpio, createGpio, releaseOnExit, type GpioLog } from '../../hw/gpio/index.js'
import { GPIO_FIXTURES, gpiodContext } from './gpio-harness.js'

function recordingLog(): GpioLog & { lines: Array<[string, object, string]> } {
  const lines: Array<[string, object, string]> = []
  return {
    lines,
    info: (obj, msg) => void lines.push(['info', obj, msg]),
    warn: (obj, msg) => void lines.push(['warn', obj, msg]),
  }
}

t.test('sysfs first when the header chip is there', async t => {
  const root = t.testdir()
  await cp(join(GPIO_FIXTURES, 'sysfs', 'pi5-kernel6.12', 'root'), root, { recursive: true })
  const log = recordingLog()
  const { driver, reasons } = await createGpio({ root, run: createFixtureRunner({}) }, { log })
  t.equal(driver.name, 'sysfs')
  t.strictSame(reasons, [])
  t.match(log.lines, [['info', { driver: 'sysfs', chip: { name: 'gpiochip571', base: 571 } }, 'gpio driver selected']])
})

t.test('the libgpiod tools when sysfs has no GPIO (kernels without CONFIG_GPIO_SYSFS)', async t => {
  const { ctx } = await gpiodContext(t, 'pi5-libgpiod2.2-kernel6.12')
  const log = recordingLog()
  const { driver, reasons } = await createGpio(ctx, { log })
  t.equal(driver.name, 'gpiod')
  t.match(reasons, [/^sysfs: no \/sys\/class\/gpio\/gpiochip\*/])
  t.match(log.lines, [['info', { driver: 'gpiod', libgpiod: 2, chip: { name: 'gpiochip0', label: 'pinctrl-rp1' } }]])
  await driver.close()
})

t.test('the fake, with every reason, on a machine without GPIO', async t => {
  const log = recordingLog()
  const { driver, reasons } = await createGpio({ root: t.testdir({}), run: createFixtureRunner({}) }, { log })
  t.equal(driver.name, 'fake')
  t.match(reasons, [/^sysfs: /, /^gpiod: no \/dev\/gpiochip\*/])
  t.match(log.lines, [['warn', { driver: 'fake', reasons }, 'no usable GPIO; using the in-memory fake']])
})

t.test('a configured driver skips detection; an unusable one falls back loudly', async t => {
  const root = t.testdir()
  await cp(join(GPIO_FIXTURES, 'sysfs', 'pi4-kernel6.12', 'root'), root, { recursive: true })
  const ctx = { root, run: createFixtureRunner({}) }
  const fake = await createGpio(ctx, { driver: 'fake' })
  t.equal(fake.driver.name, 'fake', 'fake on request even where sysfs works')
  const log = recordingLog()
  const gpiod = await createGpio(ctx, { driver: 'gpiod', log })
  t.equal(gpiod.driver.name, 'fake')
  t.match(log.lines, [['warn', { wanted: 'gpiod' }, /unusable/]])
})

t.test('releaseOnExit releases every line on process exit', async t => {
  const proc = new EventEmitter()
  const driver = createFakeGpio()
  await driver.open(17, { direction: 'out', initial: 1 })
  const remove = releaseOnExit(driver, proc as unknown as NodeJS.Process)
  t.ok(driver.isOpen(17))
  proc.emit('exit', 0)
  t.notOk(driver.isOpen(17), 'released by the exit handler')
  remove()
  t.equal(proc.listenerCount('exit'), 0, 'the remover detaches it')
})
