// One telemetry chart (uPlot: small, fast, canvas): a few metrics of one device over a
// time range, gaps where the device sent nothing, and throttling or under-voltage drawn
// as red bands behind the lines. The container carries data-points (how many samples it
// drew), which the browser tests compare with the API's answer.

import { useEffect, useRef } from 'preact/hooks'
import uPlot, { type AlignedData, type Options } from 'uplot'
import 'uplot/dist/uPlot.min.css'
import type { Metric, Series } from './api.js'
import { rate } from './format.js'

export interface Line {
  metric: Metric
  label: string
  unit: string
  colour: string
}

const BAND_FILL = 'rgba(220, 38, 38, 0.15)'

export function Chart(props: { title: string; series: Series; lines: Line[]; bands?: boolean }) {
  const box = useRef<HTMLDivElement>(null)
  const plot = useRef<uPlot | null>(null)
  const { series, lines } = props
  const pts = series.points
  const data: AlignedData = [pts.map(p => p.ts / 1000), ...lines.map(l => pts.map(p => p.values[l.metric]))]
  // a band wherever the board said it was throttled or short of power
  const flags = pts.map(p => (p.values.throttled ?? 0) > 0 || (p.values.underVoltage ?? 0) > 0)

  useEffect(() => {
    const el = box.current
    if (!el) return
    const opts: Options = {
      width: Math.max(320, el.clientWidth),
      height: 220,
      scales: { x: { time: true, range: [series.from / 1000, series.to / 1000] } },
      axes: [{}, { size: 76, values: (_u, ticks) => ticks.map(v => axisLabel(v, lines[0]?.unit ?? '')) }],
      series: [
        {},
        ...lines.map(l => ({ label: `${l.label}`, stroke: l.colour, width: 1.5, spanGaps: false, value: (_u: uPlot, v: number | null) => (v === null ? '–' : `${v.toFixed(1)} ${l.unit}`) })),
      ],
      hooks: props.bands
        ? {
            drawClear: [
              u => {
                const ctx = u.ctx
                ctx.save()
                ctx.fillStyle = BAND_FILL
                const xs = u.data[0]
                for (let i = 0; i < xs.length; i++) {
                  if (!flags[i]) continue
                  let j = i
                  while (j + 1 < xs.length && flags[j + 1]) j++
                  const x0 = u.valToPos(xs[i]!, 'x', true)
                  const x1 = u.valToPos(xs[Math.min(j + 1, xs.length - 1)]!, 'x', true)
                  ctx.fillRect(x0, u.bbox.top, Math.max(2, x1 - x0), u.bbox.height)
                  i = j
                }
                ctx.restore()
              },
            ],
          }
        : {},
    }
    plot.current?.destroy()
    plot.current = new uPlot(opts, data, el)
    const resize = () => plot.current?.setSize({ width: Math.max(320, el.clientWidth), height: 220 })
    window.addEventListener('resize', resize)
    return () => {
      window.removeEventListener('resize', resize)
      plot.current?.destroy()
      plot.current = null
    }
  }, [series])

  return (
    <figure class="chart">
      <figcaption>{props.title}</figcaption>
      <div ref={box} data-points={pts.length} data-metrics={lines.map(l => l.metric).join(',')} />
    </figure>
  )
}

function axisLabel(v: number, unit: string): string {
  if (unit === 'B/s') return rate(v)
  return `${+v.toPrecision(4)}${unit === '%' || unit === '°C' ? unit : ''}`
}
