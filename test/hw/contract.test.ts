// One suite run against every fixture board: each sample must validate against the
// published schema, and each board must yield the values its files encode.
import { Value } from '@sinclair/typebox/value'
import t, { type Test } from 'tap'
import { TelemetrySampleSchema, type TelemetrySample } from '../../hw/index.js'
import { BOARDS, openBoard, type FixtureBoard } from './fixture/open-board.js'

const KIB = 1024

interface Expected {
  board: TelemetrySample['board']
  uptimeS: number
  load: [number, number, number]
  memory: NonNullable<TelemetrySample['memory']>
  thermal: Array<[string, number]>
  corePercents: number[]
  cpuPercent: number
  net: Record<string, [number, number]>
  first?: (s: TelemetrySample, t: Test) => void
  second?: (s: TelemetrySample, t: Test) => void
}

const mem = (total: number, avail: number, used: number, swap?: [number, number, number?]) => {
  const m: NonNullable<TelemetrySample['memory']> = { totalBytes: total * KIB, availableBytes: avail * KIB, usedPercent: used }
  if (swap !== undefined) {
    m.swapTotalBytes = swap[0] * KIB
    m.swapFreeBytes = swap[1] * KIB
    if (swap[2] !== undefined) m.swapUsedPercent = swap[2]
  }
  return m
}

const allFalse = { underVoltage: false, armFreqCapped: false, throttled: false, softTempLimit: false }

const EXPECTED: Record<FixtureBoard, Expected> = {
  rpi4: {
    board: { kind: 'rpi4', model: 'Raspberry Pi 4 Model B Rev 1.4', arch: 'aarch64' },
    uptimeS: 352811.48,
    load: [0.42, 0.31, 0.25],
    memory: mem(3885508, 3152336, 18.9, [102396, 102396, 0]),
    thermal: [['cpu-thermal', 48.686]],
    corePercents: [37, 12, 8, 23],
    cpuPercent: 20,
    net: { eth0: [125000, 48000], wlan0: [0, 0] },
    first(s, t) {
      // throttled=0x50005: bits 0 and 2 now, bits 16 and 18 since boot.
      t.strictSame(s.throttle, {
        source: 'vcgencmd',
        raw: '0x50005',
        now: { underVoltage: true, armFreqCapped: false, throttled: true, softTempLimit: false },
        sinceBoot: { underVoltage: true, armFreqCapped: false, throttled: true, softTempLimit: false },
      })
      t.strictSame(
        s.cpu?.cores?.map(c => c.mhz),
        [1800, 1800, 1800, 1800],
      )
      t.strictSame(s.accelerators, [{ kind: 'coral-tpu', name: 'Coral Edge TPU, USB (2-1)', source: '/sys/bus/usb/devices/2-1' }])
      t.equal(s.fan, undefined)
      t.equal(s.power, undefined, 'pmic_read_adc is a Pi 5 command')
    },
  },
  'rpi4-debian': {
    board: { kind: 'rpi4', model: 'Raspberry Pi 4 Model B Rev 1.4', arch: 'aarch64' },
    uptimeS: 148561.92,
    load: [3.91, 2.12, 1.04],
    memory: mem(3876140, 3521044, 9.2, [0, 0]),
    thermal: [['cpu-thermal', 51.121]],
    corePercents: [100, 99, 100, 95],
    cpuPercent: 98.5,
    net: { end0: [2048, 1024] },
    first(s, t) {
      // No vcgencmd: under-voltage from rpi_volt; capping unknown until utilisation is.
      t.strictSame(s.throttle, { source: 'hwmon', now: { underVoltage: true }, sinceStart: { underVoltage: true } })
    },
    second(s, t) {
      // Fully busy at 600 of 1500 MHz: the capping heuristic fires.
      t.strictSame(s.throttle, {
        source: 'hwmon',
        now: { underVoltage: true, armFreqCapped: true },
        sinceStart: { underVoltage: true, armFreqCapped: true },
      })
    },
  },
  rpi5: {
    board: { kind: 'rpi5', model: 'Raspberry Pi 5 Model B Rev 1.0', arch: 'aarch64' },
    uptimeS: 186402.77,
    load: [1.12, 0.88, 0.71],
    memory: mem(4143200, 3407872, 17.7, [524272, 511984, 2.3]),
    thermal: [['cpu-thermal', 58.05]],
    corePercents: [50, 25, 75, 10],
    cpuPercent: 40,
    net: { eth0: [250000, 12500], wlan0: [0, 0] },
    first(s, t) {
      t.strictSame(s.throttle, { source: 'vcgencmd', raw: '0x0', now: allFalse, sinceBoot: allFalse })
      t.strictSame(s.fan, { rpm: 2871, pwm: 102, percent: 40 })
      t.equal(s.power?.totalWatts, 2.141)
      t.equal(s.power?.inputVolts, 5.15766)
      t.equal(s.power?.rails.length, 14, '12 paired rails plus EXT5V and BATT voltages')
      t.strictSame(
        s.power?.rails.find(r => r.name === 'VDD_CORE'),
        { name: 'VDD_CORE', amps: 0.8126299, volts: 0.72, watts: 0.5851 },
      )
      t.strictSame(
        s.power?.rails.find(r => r.name === 'EXT5V'),
        { name: 'EXT5V', volts: 5.15766 },
      )
      t.strictSame(s.accelerators, [{ kind: 'hailo', name: 'Hailo accelerator (hailo0)', source: '/dev/hailo0' }])
    },
  },
  'jetson-nano': {
    board: { kind: 'jetson-nano', model: 'NVIDIA Jetson Nano Developer Kit', arch: 'aarch64' },
    uptimeS: 98123.41,
    load: [0.61, 0.48, 0.39],
    memory: mem(4050072, 2381204, 41.2, [2025032, 2025032, 0]),
    thermal: [
      ['AO-therm', 38],
      ['CPU-therm', 31.5],
      ['GPU-therm', 30.5],
      ['PLL-therm', 29],
      ['PMIC-Die', 100],
      ['thermal-fan-est', 31],
    ],
    corePercents: [12, 9, 7, 4],
    cpuPercent: 8,
    net: { dummy0: [0, 0], eth0: [64000, 3200], l4tbr0: [0, 0], rndis0: [0, 0], usb0: [0, 0] },
    first(s, t) {
      t.strictSame(s.gpu, { name: '57000000.gpu', source: 'devfreq', loadPercent: 31.2, freqMhz: 921.6, celsius: 30.5 })
      t.strictSame(s.accelerators, [{ kind: 'nvidia-gpu', name: 'NVIDIA Jetson Nano Developer Kit integrated GPU', source: '/sys/class/devfreq/57000000.gpu' }])
      t.equal(s.throttle, undefined)
    },
  },
  'jetson-orin': {
    board: { kind: 'jetson-orin', model: 'NVIDIA Jetson Orin Nano Developer Kit', arch: 'aarch64' },
    uptimeS: 61234.56,
    load: [0.18, 0.22, 0.19],
    memory: mem(7802520, 5365084, 31.2, [3901248, 3675072, 5.8]),
    // cv0..cv2 read -256 °C (powered-down CV clusters) and are left out.
    thermal: [
      ['cpu-thermal', 54.937],
      ['gpu-thermal', 55.468],
      ['soc0-thermal', 56.156],
      ['soc1-thermal', 56.656],
      ['soc2-thermal', 55.562],
      ['tj-thermal', 56.656],
    ],
    corePercents: [5, 3, 2, 4, 1, 3],
    cpuPercent: 3,
    net: { can0: [0, 0], docker0: [0, 0], eth0: [1000000, 20000], l4tbr0: [0, 0], usb0: [0, 0], usb1: [0, 0], wlan0: [0, 0] },
    first(s, t) {
      t.strictSame(s.gpu, { name: '17000000.gpu', source: 'devfreq', loadPercent: 45.7, freqMhz: 624.75, celsius: 55.468 })
      t.equal(s.accelerators?.length, 1)
      t.equal(s.accelerators?.[0]?.source, '/sys/class/devfreq/17000000.gpu', 'the vic devfreq node is not the GPU')
    },
  },
  x86: {
    board: { kind: 'generic', model: 'generic x86_64 (Intel(R) Core(TM) Ultra 7 155H)', arch: 'x86_64' },
    uptimeS: 412345.67,
    load: [0.84, 0.92, 0.88],
    memory: mem(32498708, 27154312, 16.4, [8388604, 8388604, 0]),
    thermal: [
      ['acpitz', 27.8],
      ['INT3400 Thermal', 20],
      ['x86_pkg_temp', 46],
    ],
    corePercents: [54, ...Array<number>(21).fill(10)],
    cpuPercent: 12,
    net: { enp86s0: [3500000, 150000], wlp0s20f3: [0, 0], docker0: [0, 0] },
    first(s, t) {
      t.equal(s.cpu?.cores?.[0]?.mhz, 3800.1)
      t.strictSame(s.accelerators, [
        { kind: 'nvidia-gpu', name: 'NVIDIA GeForce RTX 4060 Laptop GPU', source: '/proc/driver/nvidia/gpus/0000:01:00.0/information' },
        { kind: 'accel', name: 'intel_vpu (accel0)', source: '/sys/class/accel/accel0' },
      ])
      t.equal(s.throttle, undefined)
      t.equal(s.gpu, undefined)
    },
  },
}

for (const name of BOARDS) {
  t.test(name, async t => {
    const fx = await openBoard(t, name)
    const want = EXPECTED[name]

    const first = await fx.telemetry.sample()
    t.ok(Value.Check(TelemetrySampleSchema, first), `sample validates: ${JSON.stringify([...Value.Errors(TelemetrySampleSchema, first)].slice(0, 3))}`)
    t.strictSame(first.board, want.board)
    t.strictSame(await fx.telemetry.board(), want.board)
    t.equal(first.uptimeS, want.uptimeS)
    t.strictSame(first.load, want.load)
    t.strictSame(first.memory, want.memory)
    t.strictSame(
      first.thermal?.map(z => [z.type, z.celsius]),
      want.thermal,
    )
    t.equal(first.cpu?.percent, undefined, 'utilisation needs two snapshots')
    t.ok(
      first.net?.every(n => n.rxBytesPerS === undefined && n.txBytesPerS === undefined),
      'no rates on the first sample',
    )
    t.notOk(
      first.net?.some(n => n.iface === 'lo'),
      'loopback is left out',
    )
    t.equal(first.disk?.[0]?.path, fx.dir)
    t.ok((first.disk?.[0]?.totalBytes ?? 0) > 0)
    want.first?.(first, t)

    await fx.advance(1000)
    const second = await fx.telemetry.sample()
    t.ok(Value.Check(TelemetrySampleSchema, second), 'second sample validates')
    t.equal(second.cpu?.percent, want.cpuPercent)
    t.strictSame(
      second.cpu?.cores?.map(c => c.percent),
      want.corePercents,
    )
    const rates = Object.fromEntries((second.net ?? []).map(n => [n.iface, [n.rxBytesPerS, n.txBytesPerS]]))
    t.strictSame(rates, want.net)
    want.second?.(second, t)
  })
}
