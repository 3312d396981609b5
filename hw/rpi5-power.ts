// Raspberry Pi 5 power rails from the PMIC's ADC (`vcgencmd pmic_read_adc`).
// The sum of V×A over the PMIC's own rails is what the board's regulators deliver;
// it leaves out conversion losses and USB/PCIe loads fed straight from 5 V, so it
// reads below wall power. It is reported as measured, without a fudge factor.
import { round, type HwContext } from './context.js'

interface PowerRail {
  name: string
  volts?: number
  amps?: number
  watts?: number
}

export interface PowerSample {
  source: 'pmic'
  rails: PowerRail[]
  totalWatts?: number
  /** USB-C input (EXT5V_V): the number to watch for a weak supply. */
  inputVolts?: number
}

// "  VDD_CORE_A current(7)=0.81262990A" / "     EXT5V_V volt(24)=5.15766000V"
const LINE = /^([A-Z0-9_]{1,32})_([AV])(?:\s+(?:current|volt)\(\d{1,3}\))?\s*=\s*(\d{1,6}(?:\.\d{1,12})?)([AV])$/

export function parsePmicAdc(stdout: string): PowerSample | undefined {
  const rails = new Map<string, PowerRail>()
  for (const raw of stdout.split('\n')) {
    const m = LINE.exec(raw.trim())
    if (m?.[1] === undefined || m[3] === undefined || m[2] !== m[4]) continue
    const rail = rails.get(m[1]) ?? { name: m[1] }
    if (m[2] === 'A') rail.amps = Number(m[3])
    else rail.volts = Number(m[3])
    rails.set(m[1], rail)
  }
  if (rails.size === 0) return undefined
  let total = 0
  let paired = 0
  for (const rail of rails.values()) {
    if (rail.volts === undefined || rail.amps === undefined) continue
    const w = rail.volts * rail.amps
    rail.watts = round(w, 4)
    total += w
    paired++
  }
  const sample: PowerSample = { source: 'pmic', rails: [...rails.values()] }
  if (paired > 0) sample.totalWatts = round(total, 3)
  const input = rails.get('EXT5V')?.volts
  if (input !== undefined) sample.inputVolts = input
  return sample
}

export async function readPmicPower(ctx: HwContext): Promise<PowerSample | undefined> {
  const res = await ctx.run.run('vcgencmd', ['pmic_read_adc'])
  return res?.code === 0 ? parsePmicAdc(res.stdout) : undefined
}
