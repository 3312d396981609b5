// The gpiod driver with real child processes: small stand-ins for libgpiod v2's
// tools on PATH (same arguments, output and signal handling, line state kept in
// files) check what replay cannot: that gpioset really keeps running while a line
// is held, and that close(), releaseSync() and process exit end those processes.
import { spawn } from 'node:child_process'
import { chmod, readFile, stat, writeFile } from 'node:fs/promises'
import { delimiter, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import t, { type Test } from 'tap'
import { createCommandRunner, type HwContext } from '../../hw/index.js'
import { createGpiodDriver, createProcessSpawner, probeGpiod, type GpioDriver, type GpioEvent } from '../../hw/gpio/index.js'
import { guardMs } from '../helpers/patience.js'
import { alive } from '../helpers/processes.js'

// One script answers as every tool, by the name it was called with.
const TOOL = `#!/usr/bin/env node
const fs = require('node:fs'), path = require('node:path')
const tool = path.basename(process.argv[1]), args = process.argv.slice(2), state = process.env.GPIO_STATE
const file = (k) => path.join(state, k)
const offset = () => Number(args[args.length - 1].split('=')[0])
const level = (o) => { try { return fs.readFileSync(file('level-' + o), 'utf8').trim() } catch { return '0' } }
const hold = (o) => {
  if (fs.existsSync(file('holder-' + o))) { process.stderr.write(tool + ': unable to request lines: Device or resource busy\\n'); process.exit(1) }
  fs.writeFileSync(file('holder-' + o), String(process.pid))
  process.on('SIGTERM', () => { fs.rmSync(file('holder-' + o), { force: true }); process.exit(0) })
}
if (tool === 'gpiodetect') {
  console.log(args[0] === '--version' ? 'gpiodetect (libgpiod) v2.2.1' : 'gpiochip0 [pinctrl-bcm2711] (58 lines)')
} else if (tool === 'gpioinfo') {
  console.log('gpiochip0 - 58 lines:')
  for (let i = 0; i < 58; i++) console.log('\\tline ' + String(i).padStart(3) + ':\\t' + ('"GPIO' + i + '"').padEnd(16) + '\\tinput')
} else if (tool === 'gpioget') {
  console.log(level(offset()))
} else if (tool === 'gpioset') {
  const o = offset(); hold(o)
  fs.writeFileSync(file('level-' + o), args[args.length - 1].split('=')[1])
  console.log("Setting line '" + o + "'...")
  setInterval(() => {}, 1000)
} else if (tool === 'gpiomon') {
  // the level as the line is requested, then the holder file the test waits for: a
  // change made once the test sees the holder is an edge (read after it, it was missed)
  const o = offset(); let last = level(o); hold(o)
  setInterval(() => { const now = level(o); if (now !== last) { console.log(o + ' ' + (now === '1' ? '1' : '2')); last = now } }, 5)
}
`

async function toolbox(t: Test) {
  const dir = t.testdir({ bin: {}, state: {}, root: { dev: { gpiochip0: '' } } })
  const bin = join(dir, 'bin')
  for (const name of ['gpiodetect', 'gpioinfo', 'gpioget', 'gpioset', 'gpiomon']) {
    await writeFile(join(bin, name), TOOL)
    await chmod(join(bin, name), 0o755)
  }
  const env = { ...process.env, PATH: `${bin}${delimiter}${process.env.PATH ?? ''}`, GPIO_STATE: join(dir, 'state'), LC_ALL: 'C' }
  const root = join(dir, 'root')
  // The tools are Node scripts here: give them a Node start's time on a loaded machine.
  const ctx: HwContext = { root, run: createCommandRunner({ env, timeoutMs: 120_000 }) }
  const state = (k: string) => join(dir, 'state', k)
  const holder = async (offset: number) => readFile(state(`holder-${offset}`), 'utf8').then(Number, () => undefined)
  return { ctx, env, state, holder }
}

async function until(what: string, check: () => Promise<boolean> | boolean, ms = 3000): Promise<void> {
  const end = Date.now() + guardMs(ms)
  while (!(await check())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`)
    await new Promise(r => setTimeout(r, 10))
  }
}

t.test('an output is a live gpioset; each write replaces it; close ends it', async t => {
  const box = await toolbox(t)
  const setup = await probeGpiod(box.ctx)
  if (!('chip' in setup)) throw new Error(setup.reason)
  const driver: GpioDriver = createGpiodDriver(box.ctx, setup, { spawner: createProcessSpawner(box.env), setTimeoutMs: guardMs(2000) })
  t.teardown(() => driver.close())
  const line = await driver.open(17, { direction: 'out', initial: 1 })
  const first = await box.holder(17)
  t.ok(alive(first), 'gpioset keeps running while the line is held')
  t.equal(await readFile(box.state('level-17'), 'utf8'), '1')
  await line.write(0)
  const second = await box.holder(17)
  t.not(second, first, 'a new gpioset holds the new value')
  t.notOk(alive(first), 'the old one was ended first (the chardev allows one holder)')
  t.equal(await readFile(box.state('level-17'), 'utf8'), '0')
  await line.close()
  t.equal(await box.holder(17), undefined, 'line released')
  await until('gpioset to exit', () => !alive(second))
})

t.test('a watched input is a live gpiomon; edges arrive; releaseSync ends it', async t => {
  const box = await toolbox(t)
  const setup = await probeGpiod(box.ctx)
  if (!('chip' in setup)) throw new Error(setup.reason)
  const driver = createGpiodDriver(box.ctx, setup, { spawner: createProcessSpawner(box.env), setTimeoutMs: guardMs(2000) })
  // a failure below must not leave gpiomon running (it would hold the file open until its timeout)
  t.teardown(() => driver.releaseSync())
  const line = await driver.open(27, { direction: 'in', debounceMs: 5 })
  const events: GpioEvent[] = []
  line.watch(e => events.push(e))
  await until('gpiomon to hold the line', async () => (await box.holder(27)) !== undefined)
  const pid = await box.holder(27)
  await writeFile(box.state('level-27'), '1')
  await until('a rising edge', () => events.length === 1)
  t.equal(events[0]?.edge, 'rising')
  t.equal(await line.read(), 1, 'read answers from gpiomon while it holds the line')
  driver.releaseSync()
  await until('gpiomon to exit', () => !alive(pid))
  await until('the holder file to go', async () => (await box.holder(27)) === undefined)
})

t.test('process exit releases held lines (releaseOnExit)', async t => {
  const box = await toolbox(t)
  const script = join(box.ctx.root, '..', 'hold-and-exit.ts')
  const gpio = fileURLToPath(new URL('../../hw/gpio/index.js', import.meta.url)).replace(/\.js$/, '.ts')
  const hw = fileURLToPath(new URL('../../hw/index.js', import.meta.url)).replace(/\.js$/, '.ts')
  await writeFile(
    script,
    `import { createCommandRunner } from ${JSON.stringify(hw)}
import { createGpio, createProcessSpawner, releaseOnExit } from ${JSON.stringify(gpio)}
const env = process.env
const { driver } = await createGpio({ root: ${JSON.stringify(box.ctx.root)}, run: createCommandRunner({ env, timeoutMs: 120_000 }) }, { gpiod: { spawner: createProcessSpawner(env), setTimeoutMs: ${guardMs(2000)} } })
releaseOnExit(driver)
await driver.open(22, { direction: 'out', initial: 1 })
process.stdout.write('held\\n')
process.exit(0)
`,
  )
  const child = spawn(process.execPath, ['--import', 'tsx', script], { env: box.env, stdio: ['ignore', 'pipe', 'inherit'] })
  let out = ''
  child.stdout.on('data', (d: Buffer) => (out += d.toString()))
  await new Promise(resolve => child.on('close', resolve))
  t.equal(out, 'held\n')
  await until('the gpioset child to be ended', async () => (await box.holder(22)) === undefined)
  await stat(box.state('level-22')).then(() => t.pass('the line had been set'))
})

t.test('spawner: a missing tool exits with null instead of throwing', async t => {
  const proc = createProcessSpawner().spawn('cairn-no-such-gpio-tool', [])
  const code = await new Promise(resolve => proc.onExit(c => resolve(c)))
  t.equal(code, null)
  t.notOk(proc.running)
  proc.kill() // harmless after exit
})
