// vcgencmd's throttle word, and the upstream-kernel fallback built on rpi_volt and cpufreq.
import t from 'tap'
import { decodeThrottled } from '../../hw/index.js'
import { createFixtureRunner } from '../../hw/command-runner.js'
import { accumulateFlags, readHwmonThrottle, readVcgencmdThrottle } from '../../hw/rpi-throttle.js'

const flags = (uv: boolean, cap: boolean, thr: boolean, soft: boolean) => ({
  underVoltage: uv,
  armFreqCapped: cap,
  throttled: thr,
  softTempLimit: soft,
})

t.test('decodes each bit on its own', async t => {
  const cases: Array<[string, ReturnType<typeof flags>, ReturnType<typeof flags>]> = [
    ['0x0', flags(false, false, false, false), flags(false, false, false, false)],
    ['0x1', flags(true, false, false, false), flags(false, false, false, false)],
    ['0x2', flags(false, true, false, false), flags(false, false, false, false)],
    ['0x4', flags(false, false, true, false), flags(false, false, false, false)],
    ['0x8', flags(false, false, false, true), flags(false, false, false, false)],
    ['0x10000', flags(false, false, false, false), flags(true, false, false, false)],
    ['0x20000', flags(false, false, false, false), flags(false, true, false, false)],
    ['0x40000', flags(false, false, false, false), flags(false, false, true, false)],
    ['0x80000', flags(false, false, false, false), flags(false, false, false, true)],
    ['0x50005', flags(true, false, true, false), flags(true, false, true, false)],
    ['0xE000E', flags(false, true, true, true), flags(false, true, true, true)],
  ]
  for (const [raw, now, sinceBoot] of cases) {
    t.strictSame(decodeThrottled(`throttled=${raw}\n`), { source: 'vcgencmd', raw: raw.toLowerCase(), now, sinceBoot }, raw)
  }
})

t.test('rejects what is not a throttle word', async t => {
  for (const out of ['', 'throttled=', 'throttled=50005', 'VCHI initialization failed', 'throttled=0x1\nextra', 'throttled=0xZZ']) {
    t.equal(decodeThrottled(out), undefined, JSON.stringify(out))
  }
})

t.test('vcgencmd failing (no /dev/vcio) yields nothing, so the caller falls back', async t => {
  const root = t.testdir({})
  const failing = { run: () => Promise.resolve({ code: 255, stdout: '' }) }
  t.equal(await readVcgencmdThrottle({ root, run: failing }), undefined)
  t.equal(await readVcgencmdThrottle({ root, run: createFixtureRunner({}) }), undefined)
})

function upstreamPi(alarm: string, curKhz: string) {
  return {
    sys: {
      class: { hwmon: { hwmon3: { name: 'rpi_volt\n', in0_lcrit_alarm: alarm } } },
      devices: { system: { cpu: { cpu0: { cpufreq: { scaling_cur_freq: curKhz, cpuinfo_max_freq: '1500000\n' } } } } },
    },
  }
}

t.test('hwmon fallback: under-voltage now, capping only judged when busy', async t => {
  const run = createFixtureRunner({})
  const low = { root: t.testdir(upstreamPi('1\n', '600000\n')), run }
  t.strictSame(await readHwmonThrottle(low, {}), { source: 'hwmon', now: { underVoltage: true } }, 'utilisation unknown')
  t.strictSame(await readHwmonThrottle(low, { busiestCorePercent: 40 }), { source: 'hwmon', now: { underVoltage: true } }, 'idle: a low clock is the governor')
  t.strictSame(await readHwmonThrottle(low, { busiestCorePercent: 97 }), { source: 'hwmon', now: { underVoltage: true, armFreqCapped: true } })

  const full = { root: t.testdir(upstreamPi('0\n', '1500000\n')), run }
  t.strictSame(await readHwmonThrottle(full, { busiestCorePercent: 100 }), { source: 'hwmon', now: { underVoltage: false, armFreqCapped: false } })

  const odd = { root: t.testdir(upstreamPi('2\n', '1500000\n')), run }
  t.equal(await readHwmonThrottle(odd, {}), undefined, 'an alarm is 0 or 1')
  t.equal(await readHwmonThrottle({ root: t.testdir({}), run }, {}), undefined, 'no rpi_volt device')
})

t.test('since-start record only ever gains flags', async t => {
  let seen = accumulateFlags({}, { underVoltage: false })
  t.strictSame(seen, { underVoltage: false })
  seen = accumulateFlags(seen, { underVoltage: true, armFreqCapped: false })
  seen = accumulateFlags(seen, { underVoltage: false })
  t.strictSame(seen, { underVoltage: true, armFreqCapped: false })
})
