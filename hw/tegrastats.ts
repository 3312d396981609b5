// Parser for one line of NVIDIA's `tegrastats`, for logs an operator captured and
// for tests. Cairn does not spawn tegrastats: it streams until killed, so a one-shot
// run can only end by timeout, and the same GPU and thermal figures are read from
// devfreq and thermal zones directly (jetson.ts, thermal.ts).
//
// Formats seen on real boards (all handled):
//   Nano, L4T 32:  CPU [12%@1479,off,...] EMC_FREQ 0% GR3D_FREQ 0%@76 CPU@31.5C POM_5V_IN 2164/2164
//   Orin, JP 6:    <date> RAM 2272/7620MB (lfb 4x4MB) ... GR3D_FREQ 0% cpu@54.937C VDD_IN 4673mW/4673mW
//   Orin, JP 7:    GR3D_FREQ 12%@[1300,1300] ... gpu@47.625C/47.625C VDD_GPU_SOC 5139mW/5139mW/5139mW
//   Thor:          GR3D_FREQ @[1000,1000,1000]  (clock array without utilisation)

export interface TegrastatsSnapshot {
  ram?: { usedMb: number; totalMb: number }
  swap?: { usedMb: number; totalMb: number; cachedMb?: number }
  /** One entry per core; null for a core tegrastats reports as "off". */
  cpu?: Array<{ percent: number; mhz?: number } | null>
  emc?: { loadPercent: number; freqMhz?: number }
  gpu?: { loadPercent?: number; freqMhz?: number }
  /** Temperatures by the name tegrastats prints ("CPU", "gpu", "tj" …); sentinels such as -256 dropped. */
  celsius: Record<string, number>
  /** Power rails: the first figure is instantaneous, the second the running average. */
  rails: Record<string, { milliwatts: number; avgMilliwatts?: number }>
}

export function parseTegrastats(line: string): TegrastatsSnapshot {
  const out: TegrastatsSnapshot = { celsius: {}, rails: {} }

  const ram = /\bRAM (\d+)\/(\d+)MB\b/.exec(line)
  if (ram?.[1] !== undefined && ram[2] !== undefined) out.ram = { usedMb: Number(ram[1]), totalMb: Number(ram[2]) }

  const swap = /\bSWAP (\d+)\/(\d+)MB(?: ?\(cached (\d+)MB\))?/.exec(line)
  if (swap?.[1] !== undefined && swap[2] !== undefined) {
    out.swap = { usedMb: Number(swap[1]), totalMb: Number(swap[2]) }
    if (swap[3] !== undefined) out.swap.cachedMb = Number(swap[3])
  }

  const cpu = /\bCPU \[([^\]]*)\](?:@(\d+))?/.exec(line)
  if (cpu?.[1] !== undefined) out.cpu = parseCpuList(cpu[1], cpu[2])

  const emc = /\bEMC_FREQ (\d+)%(?:@(\d+))?/.exec(line)
  if (emc?.[1] !== undefined) {
    out.emc = { loadPercent: Number(emc[1]) }
    if (emc[2] !== undefined) out.emc.freqMhz = Number(emc[2])
  }

  const gr3d = /\bGR3D_FREQ (?:(\d+)%)?(?:@(?:\[([\d,]+)\]|(\d+)))?/.exec(line)
  if (gr3d !== null && (gr3d[1] !== undefined || gr3d[2] !== undefined || gr3d[3] !== undefined)) {
    out.gpu = {}
    if (gr3d[1] !== undefined) out.gpu.loadPercent = Number(gr3d[1])
    // One clock per GPC on multi-GPC parts; they move together, report the highest.
    const clocks = (gr3d[2] ?? gr3d[3] ?? '')
      .split(',')
      .filter(s => s !== '')
      .map(Number)
    if (clocks.length > 0) out.gpu.freqMhz = Math.max(...clocks)
  }

  for (const m of line.matchAll(/\b([A-Za-z][A-Za-z0-9_]*)@(-?\d+(?:\.\d+)?)C\b/g)) {
    if (m[1] === undefined || m[2] === undefined) continue
    const c = Number(m[2])
    if (c > -60 && c < 200) out.celsius[m[1]] = c
  }

  // "POM_5V_IN 2164/2164" (L4T 32, mW implied), "VDD_IN 4673mW/4673mW" (JP 5/6),
  // "VDD_GPU_SOC 5139mW/5139mW/5139mW" (JP 7: a third figure whose meaning we have
  // not found documented, so it is not reported).
  for (const m of line.matchAll(/\b([A-Z][A-Z0-9_]*) (\d+)(?:mW)?\/(\d+)(?:mW)?(?:\/\d+(?:mW)?)?(?![\w/])/g)) {
    if (m[1] === undefined || m[2] === undefined || m[3] === undefined) continue
    if (m[1] === 'RAM' || m[1] === 'SWAP' || m[1] === 'IRAM') continue
    out.rails[m[1]] = { milliwatts: Number(m[2]), avgMilliwatts: Number(m[3]) }
  }
  return out
}

function parseCpuList(list: string, sharedMhz: string | undefined): Array<{ percent: number; mhz?: number } | null> {
  return list.split(',').map(item => {
    const m = /^\s*(\d+)%(?:@(\d+))?\s*$/.exec(item)
    if (m?.[1] === undefined) return null
    const core: { percent: number; mhz?: number } = { percent: Number(m[1]) }
    // TX1-era lines give one clock for all cores after the bracket: "CPU [5%,3%]@204".
    const mhz = m[2] ?? sharedMhz
    if (mhz !== undefined) core.mhz = Number(mhz)
    return core
  })
}
