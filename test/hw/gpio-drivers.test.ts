// Behaviour specific to one driver, beyond the shared contract: sysfs export
// edge cases (already exported, refused, udev lag), gpiod's view of lines other
// consumers hold, and the edge filter on its own.
import { cp, readFile, writeFile, mkdir } from 'node:fs/promises'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import { createGpiodDriver, createSysfsDriver, EdgeFilter, GpioError, ManualTimers, nodeSysfsFiles, probeGpiod, type GpioEvent, type GpioLog, type SysfsFiles } from '../../hw/gpio/index.js'
import { GPIO_FIXTURES, gpiodContext } from './gpio-harness.js'

const PI4 = { name: 'gpiochip512', label: 'pinctrl-bcm2711', lines: 58, base: 512 }

async function pi4Root(t: Test): Promise<string> {
  const root = t.testdir()
  await cp(join(GPIO_FIXTURES, 'sysfs', 'pi4-kernel6.12', 'root'), root, { recursive: true })
  return root
}

const errno = (code: string) => Object.assign(new Error(code), { code })

/** Steps the manual clock until `p` settles, letting real fs work finish between steps. */
async function drive<T>(timers: ManualTimers, p: Promise<T>, stepMs = 5): Promise<T> {
  let settled = false
  const watched = p.finally(() => {
    settled = true
  })
  for (let i = 0; i < 200 && !settled; i++) {
    await timers.advance(stepMs)
    await new Promise(r => setTimeout(r, 1))
  }
  return watched
}

t.test('sysfs: a line someone else exported is reused and left exported', async t => {
  const root = await pi4Root(t)
  const dir = join(root, 'sys/class/gpio/gpio529')
  await mkdir(dir)
  for (const [f, v] of [
    ['value', '1\n'],
    ['direction', 'in\n'],
    ['active_low', '0\n'],
  ] as const)
    await writeFile(join(dir, f), v)
  const infos: string[] = []
  const log: GpioLog = { info: (_o, m) => void infos.push(m), warn() {} }
  const driver = createSysfsDriver({ root }, PI4, { timers: new ManualTimers(), log })
  const line = await driver.open(17, { direction: 'in' })
  t.equal(await line.read(), 1)
  await line.close()
  t.equal(await readFile(join(root, 'sys/class/gpio/unexport'), 'utf8'), '', 'not unexported by us')
  t.match(infos, [/already exported/])
})

t.test('sysfs: the kernel refusing an export is a typed error', async t => {
  const root = await pi4Root(t)
  for (const [code, want] of [
    ['EBUSY', 'busy'],
    ['EINVAL', 'no-such-pin'],
    ['EACCES', 'io'],
  ] as const) {
    const files: SysfsFiles = {
      ...nodeSysfsFiles({ root }),
      write: async path => {
        if (path.endsWith('/export')) throw errno(code)
      },
    }
    const driver = createSysfsDriver({ root }, PI4, { timers: new ManualTimers(), files })
    await t.rejects(driver.open(17, { direction: 'out' }), { code: want }, code)
  }
})

t.test('sysfs: waits for udev to make a fresh gpioN writable, then gives up', async t => {
  const root = await pi4Root(t)
  const timers = new ManualTimers()
  const plain = nodeSysfsFiles({ root })
  const lagging: SysfsFiles = {
    ...plain,
    write: async (path, data) => {
      await plain.write(path, data)
      if (path.endsWith('/export')) {
        // udev applies group permissions a little after the kernel creates the directory
        timers.setTimeout(async () => {
          const dir = join(root, `sys/class/gpio/gpio${data}`)
          await mkdir(dir, { recursive: true })
          for (const f of ['value', 'direction', 'active_low']) await writeFile(join(dir, f), '0\n')
        }, 35)
      }
    },
  }
  const driver = createSysfsDriver({ root }, PI4, { timers, files: lagging })
  const started = timers.now()
  const line = await drive(timers, driver.open(17, { direction: 'out' }))
  t.ok(timers.now() - started >= 35, 'not before the files appeared')
  t.equal(line.location.line, 529, 'opened once the files appeared')

  // The default node:fs files on a tree where nothing ever creates gpioN.
  const never = createSysfsDriver({ root }, PI4, { timers, exportWaitMs: 30 })
  const caught = await drive(
    timers,
    never.open(5, { direction: 'out' }).catch((e: unknown) => e),
  )
  t.match(caught, { code: 'io', message: /did not become writable/ })
  t.equal(await readFile(join(root, 'sys/class/gpio/unexport'), 'utf8'), '517', 'the half-done export is undone')
})

t.test('gpiod: a line held by another consumer is refused up front', async t => {
  const { ctx } = await gpiodContext(t, 'pi4-libgpiod1.6')
  const setup = await probeGpiod(ctx)
  if (!('chip' in setup)) throw new Error(setup.reason)
  const { sim } = await gpiodContext(t, 'pi4-libgpiod1.6')
  const driver = createGpiodDriver(ctx, setup, { timers: new ManualTimers(), spawner: sim.spawner })
  await t.rejects(driver.open(7, { direction: 'out' }), { code: 'busy', message: /used by "spi0 CS1"/ })
})

t.test('gpiod: gpiomon dying is logged and reads fall back to gpioget', async t => {
  const { ctx, sim } = await gpiodContext(t, 'pi5-libgpiod2.2-kernel6.12')
  const setup = await probeGpiod(ctx)
  if (!('chip' in setup)) throw new Error(setup.reason)
  const warnings: string[] = []
  const spawned: Array<{ kill(): void }> = []
  const spawner = {
    spawn: (cmd: string, args: readonly string[]) => {
      const p = sim.spawner.spawn(cmd, args)
      spawned.push(p)
      return p
    },
  }
  const log: GpioLog = { info() {}, warn: (_o, m) => void warnings.push(m) }
  const driver = createGpiodDriver(ctx, setup, { timers: new ManualTimers(), spawner, log })
  const line = await driver.open(23, { direction: 'in' })
  line.watch(() => undefined)
  await new Promise(r => setImmediate(r))
  t.equal(spawned.length, 1, 'gpiomon started')
  spawned[0]?.kill() // someone else ends our gpiomon
  await new Promise(r => setImmediate(r))
  t.match(warnings, [/gpiomon exited/])
  sim.setPhysical(23, 1)
  t.equal(await line.read(), 1, 'answered by gpioget now that nothing holds the line')
  t.match(sim.commands.at(-1), /^gpioget -c gpiochip0 -C cairn --numeric 23$/)
  await driver.close()
})

t.test('edge filter: debounce, edge selection, a throwing subscriber', async t => {
  const timers = new ManualTimers()
  const f = new EdgeFilter({ edge: 'rising', debounceMs: 10, timers, initial: 0 })
  const seen: GpioEvent[] = []
  f.subscribe(() => {
    throw new Error('subscriber bug')
  })
  f.subscribe(e => seen.push(e))
  f.sample(1)
  f.sample(1) // repeats are not changes
  await timers.advance(9)
  t.equal(seen.length, 0)
  await timers.advance(1)
  t.match(seen, [{ edge: 'rising', value: 1 }])
  f.sample(0)
  await timers.advance(20)
  t.equal(seen.length, 1, 'falling filtered out')
  t.equal(f.level, 0, 'but tracked')
  f.stop()
  t.equal(f.size, 0)
  t.ok(new GpioError('io', 'x') instanceof Error)
})
