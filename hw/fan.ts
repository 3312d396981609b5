// Cooling fan speed and drive from hwmon. The kernel's pwm-fan driver registers
// itself as "pwmfan" (on a Pi 5 under /sys/devices/platform/cooling_fan); some
// overlays and tools call it "cooling_fan". Both are matched by name, never by the
// hwmonN number, which changes between boots.
import { findHwmon, readInt, round, type HwContext } from './context.js'

export interface FanSample {
  rpm?: number
  /** Drive level 0–255 as written to pwm1. */
  pwm?: number
  percent?: number
}

const FAN_HWMON_NAMES = ['pwmfan', 'cooling_fan']

export async function readFan(ctx: HwContext): Promise<FanSample | undefined> {
  const dir = await findHwmon(ctx, FAN_HWMON_NAMES)
  if (dir === undefined) return undefined
  const fan: FanSample = {}
  const rpm = await readInt(ctx, `${dir}/fan1_input`)
  if (rpm !== undefined && rpm >= 0) fan.rpm = rpm
  const pwm = await readInt(ctx, `${dir}/pwm1`)
  if (pwm !== undefined && pwm >= 0 && pwm <= 255) {
    fan.pwm = pwm
    fan.percent = round((pwm / 255) * 100, 1)
  }
  return fan.rpm === undefined && fan.pwm === undefined ? undefined : fan
}
