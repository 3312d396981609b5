// tegrastats lines in each format NVIDIA has shipped. The first two are the
// BRIEF's; the others follow lines published from real boards (see docs/hardware.md)
// with the numbers changed.
import t from 'tap'
import { parseTegrastats } from '../../hw/index.js'

t.test('Jetson Nano, JetPack 4 (L4T 32): mW implied, per-core clocks', async t => {
  const s = parseTegrastats(
    'RAM 1542/3956MB (lfb 218x4MB) SWAP 0/1978MB (cached 0MB) CPU [12%@1479,3%@1479,off,off] EMC_FREQ 0% GR3D_FREQ 0% ' +
      'PLL@29C CPU@31.5C PMIC@100C GPU@30.5C AO@38C thermal@31C POM_5V_IN 2164/2164 POM_5V_GPU 0/0 POM_5V_CPU 403/403',
  )
  t.strictSame(s.ram, { usedMb: 1542, totalMb: 3956 })
  t.strictSame(s.swap, { usedMb: 0, totalMb: 1978, cachedMb: 0 })
  t.strictSame(s.cpu, [{ percent: 12, mhz: 1479 }, { percent: 3, mhz: 1479 }, null, null])
  t.strictSame(s.emc, { loadPercent: 0 })
  t.strictSame(s.gpu, { loadPercent: 0 })
  t.strictSame(s.celsius, { PLL: 29, CPU: 31.5, PMIC: 100, GPU: 30.5, AO: 38, thermal: 31 })
  t.strictSame(s.rails, {
    POM_5V_IN: { milliwatts: 2164, avgMilliwatts: 2164 },
    POM_5V_GPU: { milliwatts: 0, avgMilliwatts: 0 },
    POM_5V_CPU: { milliwatts: 403, avgMilliwatts: 403 },
  })
})

t.test('Orin, JetPack 6 fragment from the BRIEF', async t => {
  const s = parseTegrastats('RAM 4722/7844MB (lfb 1x512kB) EMC_FREQ 2%@1866 GR3D_FREQ 10%@1300 APE 150')
  t.strictSame(s.ram, { usedMb: 4722, totalMb: 7844 })
  t.strictSame(s.emc, { loadPercent: 2, freqMhz: 1866 })
  t.strictSame(s.gpu, { loadPercent: 10, freqMhz: 1300 })
  t.equal(s.cpu, undefined)
  t.strictSame(s.rails, {})
})

t.test('Orin Nano, JetPack 6: date prefix, lowercase zones, mW units', async t => {
  const s = parseTegrastats(
    '03-14-2025 09:26:53 RAM 2310/7620MB (lfb 6x4MB) SWAP 12/3810MB (cached 0MB) ' +
      'CPU [3%@729,1%@729,0%@729,2%@1036,0%@729,1%@729] GR3D_FREQ 0% cpu@48.5C soc2@47.781C soc0@48.343C ' +
      'gpu@47.968C tj@48.5C soc1@48.093C VDD_IN 4871mW/4902mW VDD_CPU_GPU_CV 601mW/622mW VDD_SOC 1402mW/1410mW',
  )
  t.strictSame(s.ram, { usedMb: 2310, totalMb: 7620 })
  t.equal(s.cpu?.length, 6)
  t.strictSame(s.cpu?.[3], { percent: 2, mhz: 1036 })
  t.strictSame(s.gpu, { loadPercent: 0 }, 'no clock printed on this release')
  t.equal(s.celsius['gpu'], 47.968)
  t.equal(s.celsius['tj'], 48.5)
  t.strictSame(s.rails['VDD_IN'], { milliwatts: 4871, avgMilliwatts: 4902 })
  t.strictSame(Object.keys(s.rails), ['VDD_IN', 'VDD_CPU_GPU_CV', 'VDD_SOC'])
})

t.test('AGX Orin, JetPack 7: per-GPC clock array, two-figure temperatures, three-figure rails', async t => {
  const s = parseTegrastats(
    '07-25-2026 09:08:28 RAM 20642/62817MB (lfb 1x2MB) CPU [23%@2201,10%@2201,4%@2201,14%@2201] EMC_FREQ 3%@3199 ' +
      'GR3D_FREQ 12%@[1300,1300] NVENC0 off NVDEC0 off VIC off APE 174 cpu@52.968C/52.968C gpu@47.625C/47.625C ' +
      'VDD_GPU_SOC 5139mW/5139mW/5139mW VDD_CPU_CV 3268mW/3268mW/3268mW VIN_SYS_5V0 5500mW/5500mW/5500mW',
  )
  t.strictSame(s.gpu, { loadPercent: 12, freqMhz: 1300 })
  t.strictSame(s.celsius, { cpu: 52.968, gpu: 47.625 })
  t.strictSame(s.rails['VDD_GPU_SOC'], { milliwatts: 5139, avgMilliwatts: 5139 })
  t.equal(Object.keys(s.rails).length, 3)
})

t.test('AGX Orin, JetPack 5: powered-down CV clusters read -256C and are dropped', async t => {
  const s = parseTegrastats(
    'RAM 4410/62801MB (lfb 1702x4MB) SWAP 0/31400MB (cached 0MB) CPU [1%@729,0%@729,off,off] EMC_FREQ 0%@2133 ' +
      'GR3D_FREQ 0%@[0,0] VIC_FREQ 729 APE 174 CV0@-256C CPU@45.1C Tboard@33C SOC2@41.2C GPU@-256C tj@45.1C ' +
      'VDD_GPU_SOC 2410mW/2410mW VDD_CPU_CV 402mW/402mW VIN_SYS_5V0 4101mW/4101mW NC 0mW/0mW',
  )
  t.strictSame(s.celsius, { CPU: 45.1, Tboard: 33, SOC2: 41.2, tj: 45.1 })
  t.strictSame(s.gpu, { loadPercent: 0, freqMhz: 0 })
  t.strictSame(s.rails['NC'], { milliwatts: 0, avgMilliwatts: 0 })
})

t.test('Thor: clock array without utilisation', async t => {
  const s = parseTegrastats('RAM 4722/7844MB (lfb 1x512kB) EMC_FREQ 2%@1866 GR3D_FREQ @[1000,1000,1000] APE 150')
  t.strictSame(s.gpu, { freqMhz: 1000 })
})

t.test('JetPack 4 boards: IRAM block and MTS are not rails, rails without units', async t => {
  const s = parseTegrastats(
    'RAM 3121/7859MB (lfb 5x4MB) SWAP 0/3930MB (cached 0MB) IRAM 0/252kB(lfb 252kB) CPU [30%@1190,28%@1190] ' +
      'EMC_FREQ 1%@1600 GR3D_FREQ 0%@114 APE 150 MTS fg 1% bg 1% GPU@39.5C VDD_SYS_GPU 182/190 VDD_IN 5297/5301',
  )
  t.strictSame(s.rails, {
    VDD_SYS_GPU: { milliwatts: 182, avgMilliwatts: 190 },
    VDD_IN: { milliwatts: 5297, avgMilliwatts: 5301 },
  })
  t.strictSame(s.gpu, { loadPercent: 0, freqMhz: 114 })
})

t.test('TX1-era shared clock after the bracket', async t => {
  t.strictSame(parseTegrastats('RAM 1/2MB (lfb 1x4MB) CPU [5%,3%,off,off]@204').cpu, [{ percent: 5, mhz: 204 }, { percent: 3, mhz: 204 }, null, null])
})

t.test('not a tegrastats line', async t => {
  t.strictSame(parseTegrastats('tegrastats: command not found'), { celsius: {}, rails: {} })
  t.strictSame(parseTegrastats(''), { celsius: {}, rails: {} })
})
