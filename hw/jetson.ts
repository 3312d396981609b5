// Jetson integrated-GPU load and clock from devfreq, which needs no helper process
// and no root. The GPU's devfreq node is named after its device-tree node:
// 57000000.gpu (Nano, L4T 32), 17000000.gv11b (Xavier), 17000000.ga10b (Orin,
// JetPack 5) or 17000000.gpu (Orin, JetPack 6); `device/load` is in tenths of a
// percent and `cur_freq` in Hz.
import { listDir, readInt, readValue, round, type HwContext } from './context.js'
import type { ThermalSample } from './thermal.js'

export interface GpuSample {
  /** The devfreq node, e.g. "17000000.gpu". */
  name: string
  source: 'devfreq'
  loadPercent?: number
  freqMhz?: number
  celsius?: number
}

const GPU_NODE_NAMES = ['gpu', 'gm20b', 'gp10b', 'gv11b', 'ga10b']

export async function findGpuDevfreq(ctx: HwContext): Promise<string | undefined> {
  for (const entry of await listDir(ctx, '/sys/class/devfreq')) {
    const suffix = /^[0-9a-f]+\.([a-z0-9]+)$/.exec(entry)?.[1]
    if (suffix !== undefined && GPU_NODE_NAMES.includes(suffix)) return entry
    // Fall back to the device-tree node name (NUL-terminated) for renamed nodes.
    const ofName = await readValue(ctx, `/sys/class/devfreq/${entry}/device/of_node/name`)
    if (ofName !== undefined && GPU_NODE_NAMES.includes(ofName)) return entry
  }
  return undefined
}

export async function readJetsonGpu(ctx: HwContext, thermal: readonly ThermalSample[]): Promise<GpuSample | undefined> {
  const name = await findGpuDevfreq(ctx)
  if (name === undefined) return undefined
  const base = `/sys/class/devfreq/${name}`
  const gpu: GpuSample = { name, source: 'devfreq' }
  const load = await readInt(ctx, `${base}/device/load`)
  if (load !== undefined && load >= 0 && load <= 1000) gpu.loadPercent = load / 10
  const hz = await readInt(ctx, `${base}/cur_freq`)
  if (hz !== undefined && hz > 0) gpu.freqMhz = round(hz / 1e6, 2)
  // Nano names its zone "GPU-therm", Orin "gpu-thermal".
  const zone = thermal.find(z => /^gpu[-_]?therm/i.test(z.type))
  if (zone !== undefined) gpu.celsius = zone.celsius
  return gpu.loadPercent === undefined && gpu.freqMhz === undefined ? undefined : gpu
}
