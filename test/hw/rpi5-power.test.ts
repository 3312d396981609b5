// Pi 5 PMIC rail parsing from `vcgencmd pmic_read_adc`.
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import t from 'tap'
import { parsePmicAdc } from '../../hw/index.js'
import { FIXTURES } from './fixture/open-board.js'

t.test('fixture output: pairs rails, sums watts, reports EXT5V as input', async t => {
  const commands = JSON.parse(await readFile(join(FIXTURES, 'rpi5', 'commands.json'), 'utf8')) as Record<string, string>
  const s = parsePmicAdc(commands['vcgencmd pmic_read_adc'] ?? '')
  t.equal(s?.source, 'pmic')
  t.equal(s?.rails.filter(r => r.watts !== undefined).length, 12)
  t.equal(s?.totalWatts, 2.141)
  t.equal(s?.inputVolts, 5.15766)
  t.strictSame(
    s?.rails.find(r => r.name === 'BATT'),
    { name: 'BATT', volts: 0 },
  )
  t.strictSame(
    s?.rails.find(r => r.name === 'HDMI'),
    { name: 'HDMI', amps: 0.0232, volts: 5.135531, watts: 0.1191 },
  )
})

t.test('the three lines quoted in the BRIEF', async t => {
  const s = parsePmicAdc('  VDD_CORE_A current(7)=0.81262990A\n  VDD_CORE_V volt(15)=0.72000000V\n     EXT5V_V volt(24)=5.15766000V\n')
  t.strictSame(s, {
    source: 'pmic',
    rails: [
      { name: 'VDD_CORE', amps: 0.8126299, volts: 0.72, watts: 0.5851 },
      { name: 'EXT5V', volts: 5.15766 },
    ],
    totalWatts: 0.585,
    inputVolts: 5.15766,
  })
})

t.test('terse "NAME=valueV" lines without the ADC channel', async t => {
  const s = parsePmicAdc('VDD_CORE_V=0.8750V\nVDD_CORE_A=1.2340A\n')
  t.equal(s?.totalWatts, 1.08)
})

t.test('no rails: error text, unit mismatch, empty', async t => {
  t.equal(parsePmicAdc('error=1 error_msg="Command not registered"'), undefined)
  t.equal(parsePmicAdc('VDD_CORE_A current(7)=0.8V'), undefined, 'an _A rail must be in amps')
  t.equal(parsePmicAdc(''), undefined)
  t.strictSame(parsePmicAdc('EXT5V_V volt(24)=5.1V'), { source: 'pmic', rails: [{ name: 'EXT5V', volts: 5.1 }], inputVolts: 5.1 }, 'no pair, no total')
})
