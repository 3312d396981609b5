// Inventory of AI accelerators a task could be scheduled on. Detection only looks
// for device nodes and driver files (no helper process), except nvidia-smi as a
// last resort on hosts whose NVIDIA driver exposes no /proc information.
import { isJetson, type Board } from './board.js'
import { listDir, readText, readValue, type HwContext } from './context.js'
import { findGpuDevfreq } from './jetson.js'

export type AcceleratorKind = 'nvidia-gpu' | 'hailo' | 'coral-tpu' | 'accel'

export interface Accelerator {
  kind: AcceleratorKind
  name: string
  /** The file or command the detection rests on. */
  source: string
  memoryBytes?: number
}

export async function accelerators(ctx: HwContext, board?: Board): Promise<Accelerator[]> {
  const found: Accelerator[] = []
  const jetsonGpu = board === undefined || isJetson(board) ? await jetsonGpuAccelerator(ctx, board) : undefined
  if (jetsonGpu !== undefined) found.push(jetsonGpu)
  else found.push(...(await discreteNvidia(ctx)))
  found.push(...(await hailo(ctx)))
  found.push(...(await coral(ctx)))
  found.push(...(await accelClass(ctx)))
  return found
}

async function jetsonGpuAccelerator(ctx: HwContext, board: Board | undefined): Promise<Accelerator | undefined> {
  const model = board?.model ?? (await readValue(ctx, '/proc/device-tree/model'))
  if (model === undefined || !/\bJetson\b/.test(model)) return undefined
  const name = `NVIDIA ${model.replace(/^NVIDIA /, '')} integrated GPU`
  const devfreq = await findGpuDevfreq(ctx)
  if (devfreq !== undefined) return { kind: 'nvidia-gpu', name, source: `/sys/class/devfreq/${devfreq}` }
  const node = (await listDir(ctx, '/dev')).find(e => /^nvhost-(ctrl-)?gpu$/.test(e))
  if (node !== undefined) return { kind: 'nvidia-gpu', name, source: `/dev/${node}` }
  return undefined
}

async function discreteNvidia(ctx: HwContext): Promise<Accelerator[]> {
  const out: Accelerator[] = []
  for (const bus of await listDir(ctx, '/proc/driver/nvidia/gpus')) {
    const path = `/proc/driver/nvidia/gpus/${bus}/information`
    const model = /^Model:\s*(.+)$/m.exec((await readText(ctx, path)) ?? '')?.[1]?.trim()
    if (model !== undefined && model.length > 0 && /^[\x20-\x7e]+$/.test(model)) {
      out.push({ kind: 'nvidia-gpu', name: model, source: path })
    }
  }
  if (out.length > 0) return out
  const res = await ctx.run.run('nvidia-smi', ['--query-gpu=name,memory.total', '--format=csv,noheader'])
  if (res?.code !== 0) return out
  for (const line of res.stdout.split('\n')) {
    // "NVIDIA GeForce RTX 3060, 12288 MiB"
    const m = /^([\x20-\x2b\x2d-\x7e]+),\s*(\d+) MiB\s*$/.exec(line.trim())
    if (m?.[1] === undefined || m[2] === undefined) continue
    out.push({ kind: 'nvidia-gpu', name: m[1].trim(), source: 'nvidia-smi', memoryBytes: Number(m[2]) * 1024 * 1024 })
  }
  return out
}

async function hailo(ctx: HwContext): Promise<Accelerator[]> {
  const nodes = (await listDir(ctx, '/dev')).filter(e => /^hailo\d+$/.test(e))
  return nodes.map(n => ({ kind: 'hailo', name: `Hailo accelerator (${n})`, source: `/dev/${n}` }))
}

// USB Edge TPUs have no /dev node: they show up as 1a6e:089a before the runtime
// loads their firmware and as 18d1:9302 after.
const CORAL_USB_IDS = new Set(['1a6e:089a', '18d1:9302'])

async function coral(ctx: HwContext): Promise<Accelerator[]> {
  const out: Accelerator[] = []
  for (const n of (await listDir(ctx, '/dev')).filter(e => /^apex_\d+$/.test(e))) {
    out.push({ kind: 'coral-tpu', name: `Coral Edge TPU, PCIe (${n})`, source: `/dev/${n}` })
  }
  for (const dev of await listDir(ctx, '/sys/bus/usb/devices')) {
    const base = `/sys/bus/usb/devices/${dev}`
    const vendor = await readValue(ctx, `${base}/idVendor`)
    const product = await readValue(ctx, `${base}/idProduct`)
    if (vendor !== undefined && product !== undefined && CORAL_USB_IDS.has(`${vendor}:${product}`)) {
      out.push({ kind: 'coral-tpu', name: `Coral Edge TPU, USB (${dev})`, source: base })
    }
  }
  return out
}

// The kernel's compute-accelerator class (Intel NPU, AMD XDNA, Habana …).
async function accelClass(ctx: HwContext): Promise<Accelerator[]> {
  const out: Accelerator[] = []
  for (const entry of await listDir(ctx, '/sys/class/accel')) {
    if (!/^accel\d+$/.test(entry)) continue
    const base = `/sys/class/accel/${entry}`
    const uevent = (await readText(ctx, `${base}/device/uevent`)) ?? ''
    const driver = /^DRIVER=([\w.-]{1,64})$/m.exec(uevent)?.[1]
    const devNumber = await readValue(ctx, `${base}/dev`)
    if (driver === undefined && (devNumber === undefined || !/^\d+:\d+$/.test(devNumber))) continue
    out.push({ kind: 'accel', name: driver === undefined ? entry : `${driver} (${entry})`, source: base })
  }
  return out
}
