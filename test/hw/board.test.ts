// Board detection from the device-tree model, and the generic fallback.
import t from 'tap'
import { classifyModel, createFixtureRunner, detectBoard } from '../../hw/index.js'

t.test('model strings map to board kinds', async t => {
  const table: Array<[string, string]> = [
    ['Raspberry Pi 4 Model B Rev 1.4', 'rpi4'],
    ['Raspberry Pi 4 Model B Rev 1.1', 'rpi4'],
    ['Raspberry Pi 400 Rev 1.0', 'rpi4'],
    ['Raspberry Pi Compute Module 4 Rev 1.0', 'rpi4'],
    ['Raspberry Pi 5 Model B Rev 1.0', 'rpi5'],
    ['Raspberry Pi Compute Module 5 Rev 1.0', 'rpi5'],
    ['Raspberry Pi 500 Rev 1.0', 'rpi5'],
    ['Raspberry Pi 3 Model B Plus Rev 1.3', 'generic'],
    ['NVIDIA Jetson Nano Developer Kit', 'jetson-nano'],
    ['NVIDIA Jetson Nano 2GB Developer Kit', 'jetson-nano'],
    ['NVIDIA Jetson Orin Nano Developer Kit', 'jetson-orin'],
    ['NVIDIA Jetson AGX Orin Developer Kit', 'jetson-orin'],
    ['NVIDIA Jetson Xavier NX Developer Kit', 'generic'],
    ['Pine64 RockPro64 v2.1', 'generic'],
  ]
  for (const [model, kind] of table) t.equal(classifyModel(model), kind, model)
})

t.test('NUL-terminated device-tree model, arch from uname', async t => {
  const root = t.testdir({ proc: { 'device-tree': { model: 'Raspberry Pi 5 Model B Rev 1.0\0' } } })
  const board = await detectBoard({ root, run: createFixtureRunner({ 'uname -m': 'aarch64\n' }) })
  t.strictSame(board, { kind: 'rpi5', model: 'Raspberry Pi 5 Model B Rev 1.0', arch: 'aarch64' })
})

t.test('sysfs device-tree path when /proc/device-tree is not mounted', async t => {
  const root = t.testdir({ sys: { firmware: { devicetree: { base: { model: 'NVIDIA Jetson Orin Nano Developer Kit\0' } } } } })
  const board = await detectBoard({ root, run: createFixtureRunner({ 'uname -m': 'aarch64\n' }) })
  t.equal(board.kind, 'jetson-orin')
})

t.test('generic host: arch falls back to process.arch, CPU from /proc/cpuinfo', async t => {
  const uname = ({ x64: 'x86_64', arm64: 'aarch64' } as Record<string, string>)[process.arch] ?? process.arch
  const x86 = t.testdir({ proc: { cpuinfo: 'processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD Ryzen 7 5800U with Radeon Graphics\n' } })
  t.strictSame(await detectBoard({ root: x86, run: createFixtureRunner({}) }), {
    kind: 'generic',
    model: `generic ${uname} (AMD Ryzen 7 5800U with Radeon Graphics)`,
    arch: uname,
  })
  const armv7 = t.testdir({ proc: { cpuinfo: 'processor\t: 0\nmodel name\t: ARMv7 Processor rev 5 (v7l)\n\nHardware\t: Allwinner sun8i Family\n' } })
  const b = await detectBoard({ root: armv7, run: createFixtureRunner({ 'uname -m': 'armv7l\n' }) })
  t.equal(b.model, 'generic armv7l (ARMv7 Processor rev 5 (v7l))')
})

t.test('unprintable model is treated as absent', async t => {
  const root = t.testdir({ proc: { 'device-tree': { model: Buffer.from([0xff, 0x00, 0x1b, 0x41]) } } })
  const b = await detectBoard({ root, run: createFixtureRunner({ 'uname -m': 'riscv64\n' }) })
  t.strictSame(b, { kind: 'generic', model: 'generic riscv64', arch: 'riscv64' })
})
