// Every kernel thermal zone with its type name as the board names it
// (Pi "cpu-thermal", Jetson Nano "CPU-therm", Orin "tj-thermal", x86 "x86_pkg_temp").
import { listDir, readInt, readValue, type HwContext } from './context.js'

export interface ThermalSample {
  zone: string
  type: string
  celsius: number
}

// Zones for powered-down blocks report sentinels such as -256 °C (Orin cv*-thermal);
// outside this range a reading is not a temperature.
const MIN_PLAUSIBLE_C = -60
const MAX_PLAUSIBLE_C = 200

export async function readThermal(ctx: HwContext): Promise<ThermalSample[]> {
  const out: ThermalSample[] = []
  for (const zone of await listDir(ctx, '/sys/class/thermal')) {
    if (!/^thermal_zone\d+$/.test(zone)) continue
    const type = await readValue(ctx, `/sys/class/thermal/${zone}/type`)
    const milli = await readInt(ctx, `/sys/class/thermal/${zone}/temp`)
    if (type === undefined || milli === undefined) continue
    const celsius = milli / 1000
    if (celsius < MIN_PLAUSIBLE_C || celsius > MAX_PLAUSIBLE_C) continue
    out.push({ zone, type, celsius })
  }
  return out
}
