// Which gpiochip carries the 40-pin header, and how a BCM pin number maps onto
// it. The header chip is found by its label, never by position or number: a Pi 5
// has five chips and the RP1 (header) one is neither the first nor the lowest
// numbered, and kernels >= 6.6 moved every sysfs base from 0 to 512 and up.
import { listDir, readInt, readValue, type HwContext } from '../context.js'
import { checkBcm } from './types.js'

export interface GpioChip {
  /** sysfs: "gpiochip571" (named after its base); gpiod: "gpiochip0" (the /dev node). */
  name: string
  label: string
  /** Number of lines. */
  lines: number
  /** sysfs only: the global number of line 0. */
  base?: number
}

/**
 * Labels of the chips whose line N is BCM GPIO N, best first. pinctrl-rp1: Pi 5
 * and CM5 (RP1 south bridge); pinctrl-bcm2711: Pi 4, 400, CM4; pinctrl-bcm2835:
 * Pi 1-3 and Zero (upstream kernels also label the Pi 4 chip this way when the
 * bcm2711 compatible is missing). Expanders such as raspberrypi-exp-gpio and the
 * Pi 5's own gpio-brcmstb@… banks are not the header.
 */
export const HEADER_CHIP_LABELS: readonly string[] = ['pinctrl-rp1', 'pinctrl-bcm2711', 'pinctrl-bcm2835']

export function headerChip(chips: readonly GpioChip[]): GpioChip | undefined {
  for (const label of HEADER_CHIP_LABELS) {
    const chip = chips.find(c => c.label === label)
    if (chip !== undefined) return chip
  }
  return undefined
}

export interface ChipLine {
  chip: GpioChip
  /** Offset within the chip: what gpioget/gpioset/gpiomon take. */
  offset: number
  /** sysfs global number: what /sys/class/gpio/export takes (base + offset). */
  global?: number
}

/** BCM pin → chip line. Throws GpioError('no-such-pin') outside the chip. */
export function chipForBcm(chip: GpioChip, bcm: number): ChipLine {
  checkBcm(bcm, chip.lines)
  return chip.base === undefined ? { chip, offset: bcm } : { chip, offset: bcm, global: chip.base + bcm }
}

/** Every chip under <root>/sys/class/gpio with a readable label, base and ngpio. */
export async function sysfsChips(ctx: Pick<HwContext, 'root'>): Promise<GpioChip[]> {
  const chips: GpioChip[] = []
  for (const entry of await listDir(ctx, '/sys/class/gpio')) {
    if (!/^gpiochip\d+$/.test(entry)) continue
    const dir = `/sys/class/gpio/${entry}`
    const label = await readValue(ctx, `${dir}/label`)
    const base = await readInt(ctx, `${dir}/base`)
    const ngpio = await readInt(ctx, `${dir}/ngpio`)
    if (label === undefined || base === undefined || ngpio === undefined || base < 0 || ngpio <= 0) continue
    chips.push({ name: entry, label, lines: ngpio, base })
  }
  return chips
}
