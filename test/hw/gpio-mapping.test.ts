// The pin-number problem itself: which chip carries the header on each board and
// kernel, what BCM 17 becomes there, and the libgpiod output parsers on the
// recorded outputs of both tool generations.
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import t from 'tap'
import { chipForBcm, gpiodCommands, parseGpiodetect, parseGpiodVersion, parseGpioget, parseGpioinfo, parseGpiomonEvent, probeGpiod, probeSysfs, sysfsChips } from '../../hw/gpio/index.js'
import { createFixtureRunner } from '../../hw/index.js'
import { GPIO_FIXTURES, gpiodContext } from './gpio-harness.js'

const sysfsRoot = (board: string) => join(GPIO_FIXTURES, 'sysfs', board, 'root')
const recorded = async (board: string) => JSON.parse(await readFile(join(GPIO_FIXTURES, 'gpiod', board, 'commands.json'), 'utf8')) as Record<string, string>

t.test('sysfs: the header chip by label, and BCM 17 as base + 17', async t => {
  const table: Array<[string, string, string, number, number]> = [
    ['pi4-kernel6.1', 'gpiochip0', 'pinctrl-bcm2711', 0, 17],
    ['pi4-kernel6.12', 'gpiochip512', 'pinctrl-bcm2711', 512, 529],
    ['pi5-kernel6.12', 'gpiochip571', 'pinctrl-rp1', 571, 588],
  ]
  for (const [board, name, label, base, gpio17] of table) {
    const probe = await probeSysfs({ root: sysfsRoot(board) })
    if (!('chip' in probe)) {
      t.fail(`${board}: ${probe.reason}`)
      continue
    }
    t.strictSame(probe.chip, { name, label, lines: label === 'pinctrl-rp1' ? 54 : 58, base }, board)
    t.equal(chipForBcm(probe.chip, 17).global, gpio17, `${board}: BCM 17 → gpio${gpio17}`)
  }
})

t.test('sysfs: on a Pi 5 the lowest-numbered chip is not the header', async t => {
  // onoff's unmerged PR #204 takes a gpiochip directory's number as the base without
  // checking its label; on this Pi 5 that is gpiochip512, a BCM2712 bank.
  const chips = await sysfsChips({ root: sysfsRoot('pi5-kernel6.12') })
  const lowest = chips.reduce((a, b) => ((a.base ?? 0) <= (b.base ?? 0) ? a : b))
  t.equal(lowest.name, 'gpiochip512')
  t.equal(lowest.label, 'gpio-brcmstb@107d517c00')
  t.equal((lowest.base ?? 0) + 17, 529, 'the number the naive lookup would export for BCM 17')
  t.strictSame(
    chips.map(c => c.label),
    ['gpio-brcmstb@107d517c00', 'gpio-brcmstb@107d517c20', 'gpio-brcmstb@107d508500', 'gpio-brcmstb@107d508520', 'pinctrl-rp1'],
  )
})

t.test('sysfs: boards without a usable header chip say why', async t => {
  const none = await probeSysfs({ root: t.testdir({}) })
  t.match(none, { reason: /no \/sys\/class\/gpio\/gpiochip\*/ })
  const other = t.testdir({ sys: { class: { gpio: { export: '', gpiochip0: { label: 'gpio-mockup-A\n', base: '0\n', ngpio: '8\n' } } } } })
  t.match(await probeSysfs({ root: other }), { reason: /no header chip .*gpio-mockup-A/ })
  const pi3 = t.testdir({ sys: { class: { gpio: { export: '', gpiochip0: { label: 'pinctrl-bcm2835\n', base: '0\n', ngpio: '54\n' } } } } })
  t.match(await probeSysfs({ root: pi3 }), { chip: { label: 'pinctrl-bcm2835', base: 0, lines: 54 } }, 'Pi 3 and older')
  t.throws(() => chipForBcm({ name: 'gpiochip0', label: 'pinctrl-bcm2835', lines: 54, base: 0 }, 54), { code: 'no-such-pin' })
})

t.test('gpiod: libgpiod version and header chip on each recorded board', async t => {
  const table: Array<[Parameters<typeof gpiodContext>[1], 1 | 2, string]> = [
    ['pi4-libgpiod1.6', 1, 'gpiochip0'],
    ['pi4-libgpiod2.2', 2, 'gpiochip0'],
    ['pi5-libgpiod1.6-kernel6.6.20', 1, 'gpiochip4'],
    ['pi5-libgpiod2.2-kernel6.12', 2, 'gpiochip0'],
  ]
  for (const [board, version, chip] of table) {
    const { ctx } = await gpiodContext(t, board)
    const probe = await probeGpiod(ctx)
    t.match(probe, { version, chip: { name: chip } }, board)
    if ('chip' in probe) t.strictSame(chipForBcm(probe.chip, 17), { chip: probe.chip, offset: 17 }, `${board}: offset 17`)
  }
})

t.test('gpiod: an unknown label falls back to the chip with GPIO<n> line names', async t => {
  const v2 = await recorded('pi5-libgpiod2.2-kernel6.12')
  const run = createFixtureRunner({
    'gpiodetect --version': v2['gpiodetect --version'] ?? '',
    gpiodetect: 'gpiochip0 [gpio-brcmstb@107d508500] (32 lines)\ngpiochip1 [pinctrl-rp1-next] (54 lines)\n',
    'gpioinfo -c gpiochip0': '\tnot a chip header\n',
    'gpioinfo -c gpiochip1': (v2['gpioinfo -c gpiochip0'] ?? '').replace('gpiochip0 - ', 'gpiochip1 - '),
  })
  const root = t.testdir({ dev: { gpiochip0: '', gpiochip1: '' } })
  t.match(await probeGpiod({ root, run }), { version: 2, chip: { name: 'gpiochip1', label: 'pinctrl-rp1-next' } })
})

t.test('gpiod: reasons when the character device cannot be used', async t => {
  t.match(await probeGpiod({ root: t.testdir({}), run: createFixtureRunner({}) }), { reason: 'no /dev/gpiochip*' })
  const dev = t.testdir({ dev: { gpiochip0: '' } })
  t.match(await probeGpiod({ root: dev, run: createFixtureRunner({}) }), { reason: /apt install gpiod/ })
  const noHeader = createFixtureRunner({ 'gpiodetect --version': 'gpiodetect (libgpiod) v2.2.1\n', gpiodetect: 'gpiochip0 [gpio-mockup-A] (8 lines)\n' })
  t.match(await probeGpiod({ root: dev, run: noHeader }), { reason: /no header chip among gpiochip0 \[gpio-mockup-A\]/ })
})

t.test("gpiod: command lines in each generation's syntax", async t => {
  const v2 = gpiodCommands(2, 'gpiochip0')
  t.strictSame(v2.get(17, false), ['gpioget', '-c', 'gpiochip0', '-C', 'cairn', '--numeric', '17'])
  t.strictSame(v2.set(17, 1, true), ['gpioset', '--banner', '-c', 'gpiochip0', '-C', 'cairn', '-l', '17=1'])
  t.strictSame(v2.mon(17, false), ['gpiomon', '-c', 'gpiochip0', '-C', 'cairn', '-e', 'both', '-F', '%o %e', '17'])
  t.strictSame(v2.info(), ['gpioinfo', '-c', 'gpiochip0'])
  const v1 = gpiodCommands(1, 'gpiochip4')
  t.strictSame(v1.get(17, true), ['gpioget', '-l', 'gpiochip4', '17'])
  t.strictSame(v1.set(17, 0, false), ['gpioset', '--mode=signal', 'gpiochip4', '17=0'])
  t.strictSame(v1.mon(17, false), ['gpiomon', '-b', '-F', '%o %e', 'gpiochip4', '17'])
  t.strictSame(v1.info(), ['gpioinfo', 'gpiochip4'])
})

t.test('parsers: recorded gpiodetect and gpioinfo, v1 and v2', async t => {
  const pi5v1 = await recorded('pi5-libgpiod1.6-kernel6.6.20')
  t.strictSame(
    parseGpiodetect(pi5v1.gpiodetect ?? '').map(c => [c.name, c.label, c.lines]),
    [
      ['gpiochip0', 'gpio-brcmstb@107d508500', 32],
      ['gpiochip1', 'gpio-brcmstb@107d508520', 4],
      ['gpiochip2', 'gpio-brcmstb@107d517c00', 17],
      ['gpiochip3', 'gpio-brcmstb@107d517c20', 6],
      ['gpiochip4', 'pinctrl-rp1', 54],
    ],
  )
  const [v1] = parseGpioinfo(pi5v1['gpioinfo gpiochip4'] ?? '')
  t.equal(v1?.chip, 'gpiochip4')
  t.equal(v1?.lines.length, 54)
  t.strictSame(v1?.lines[17], { offset: 17, direction: 'input', activeLow: false, name: 'GPIO17' })
  t.strictSame(v1?.lines[32], { offset: 32, direction: 'output', activeLow: true, name: 'ETH_RST_N', consumer: 'phy-reset' })
  t.strictSame(v1?.lines[36]?.name, 'RP1_PCIE_CLKREQ_N', 'an overflowing name column')

  const pi4v1 = await recorded('pi4-libgpiod1.6')
  const [p4] = parseGpioinfo(pi4v1['gpioinfo gpiochip0'] ?? '')
  t.strictSame(p4?.lines[7], { offset: 7, direction: 'output', activeLow: true, name: 'GPIO7', consumer: 'spi0 CS1' })

  const pi5v2 = await recorded('pi5-libgpiod2.2-kernel6.12')
  const [v2] = parseGpioinfo(pi5v2['gpioinfo -c gpiochip0'] ?? '')
  t.equal(v2?.lines.length, 54)
  t.strictSame(v2?.lines[17], { offset: 17, direction: 'input', activeLow: false, name: 'GPIO17' })
  t.strictSame(v2?.lines[44], { offset: 44, direction: 'output', activeLow: true, name: 'RP1_STAT_LED', consumer: 'PWR' })
  t.strictSame(v2?.lines[42], { offset: 42, direction: 'output', activeLow: false, name: 'USB_VBUS_EN' })
  t.strictSame(parseGpioinfo('gpiochip9 - 1 lines:\n\tline   0:\tunnamed         \tinput consumer=kernel\n')[0]?.lines[0], {
    offset: 0,
    direction: 'input',
    activeLow: false,
    consumer: 'kernel',
  })
})

t.test('parsers: version, gpioget and gpiomon lines', async t => {
  t.equal(parseGpiodVersion('gpiodetect (libgpiod) v1.6.3\nCopyright (C) 2017-2018 Bartosz Golaszewski\nLicense: LGPLv2.1\n'), 1)
  t.equal(parseGpiodVersion('gpiodetect (libgpiod) v2.2.1\n'), 2)
  t.equal(parseGpiodVersion('gpiodetect 0.1'), undefined)
  for (const [text, level] of [
    ['1\n', 1],
    ['0', 0],
    ['"17"=active\n', 1],
    ['17=inactive', 0],
    ['"GPIO17"=inactive', 0],
  ] as const) {
    t.equal(parseGpioget(text), level, JSON.stringify(text))
  }
  t.equal(parseGpioget('error'), undefined)
  t.strictSame(parseGpiomonEvent('17 1', 2), { offset: 17, level: 1 })
  t.strictSame(parseGpiomonEvent('17 2', 2), { offset: 17, level: 0 })
  t.strictSame(parseGpiomonEvent('17 0', 1), { offset: 17, level: 0 })
  t.equal(parseGpiomonEvent('17 0', 2), undefined, 'v2 has no type 0')
  t.equal(parseGpiomonEvent("Monitoring line '17'...", 2), undefined)
})
