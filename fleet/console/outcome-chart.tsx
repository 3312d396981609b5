// One release over time (uPlot): how many of its updates had ended committed, rolled back
// or failed by each moment of the range (running totals, counting those before the range,
// so the last column is the table's total), and its rollout percentage in one channel as
// the signed metadata said, stepped, on a second axis. The
// container carries the totals it drew (data-committed, …), which the browser tests
// compare with the API's answer.

import { useEffect, useRef } from 'preact/hooks'
import uPlot, { type AlignedData, type Options } from 'uplot'
import 'uplot/dist/uPlot.min.css'
import type { Outcomes } from './api.js'

const LINES = [
  { key: 'committed', label: 'committed', colour: '#15803d' },
  { key: 'rolledBack', label: 'rolled back', colour: '#d97706' },
  { key: 'failed', label: 'failed', colour: '#dc2626' },
] as const

/** The chart's columns: each moment something changed, the totals by then and the rollout then. */
function outcomeColumns(o: Outcomes, channel: string): { xs: number[]; totals: Record<(typeof LINES)[number]['key'], number[]>; rollout: Array<number | null> } {
  const history = o.rollout.filter(r => r.channel === channel).flatMap(r => r.history)
  const times = new Set<number>([o.from, o.to, ...o.items.map(i => i.ts), ...history.filter(h => h.ts > o.from && h.ts < o.to).map(h => h.ts)])
  const xs = [...times].sort((a, b) => a - b)
  const totals = { committed: [] as number[], rolledBack: [] as number[], failed: [] as number[] }
  const rollout: Array<number | null> = []
  let i = 0
  let h = 0
  const sum = { ...o.before }
  let pct: number | null = null
  for (const x of xs) {
    while (i < o.items.length && o.items[i]!.ts <= x) {
      const b = o.items[i++]!
      sum.committed += b.committed
      sum.rolledBack += b.rolledBack
      sum.failed += b.failed
    }
    // a withdrawn release's row has rollout 0
    while (h < history.length && history[h]!.ts <= x) pct = history[h++]!.rollout
    for (const l of LINES) totals[l.key].push(sum[l.key])
    rollout.push(pct)
  }
  return { xs, totals, rollout }
}

export function OutcomeChart(props: { title: string; outcomes: Outcomes; channel: string }) {
  const box = useRef<HTMLDivElement>(null)
  const o = props.outcomes
  const cols = outcomeColumns(o, props.channel)
  const last = (k: (typeof LINES)[number]['key']) => cols.totals[k][cols.totals[k].length - 1] ?? 0

  useEffect(() => {
    const el = box.current
    if (!el) return
    const data: AlignedData = [cols.xs.map(x => x / 1000), ...LINES.map(l => cols.totals[l.key]), cols.rollout]
    const opts: Options = {
      width: Math.max(320, el.clientWidth),
      height: 220,
      scales: { x: { time: true, range: [o.from / 1000, o.to / 1000] }, pct: { range: [0, 100] } },
      axes: [{}, { size: 56, label: 'devices' }, { scale: 'pct', side: 1, size: 56, values: (_u, ticks) => ticks.map(v => `${v}%`), grid: { show: false } }],
      series: [
        {},
        ...LINES.map(l => ({ label: l.label, stroke: l.colour, width: 1.5, paths: uPlot.paths.stepped!({ align: 1 }) })),
        {
          label: 'rollout',
          scale: 'pct',
          stroke: '#2563eb',
          dash: [6, 4],
          width: 1.5,
          paths: uPlot.paths.stepped!({ align: 1 }),
          value: (_u: uPlot, v: number | null) => (v === null ? '–' : `${v} %`),
        },
      ],
    }
    const plot = new uPlot(opts, data, el)
    const resize = () => plot.setSize({ width: Math.max(320, el.clientWidth), height: 220 })
    window.addEventListener('resize', resize)
    return () => {
      window.removeEventListener('resize', resize)
      plot.destroy()
    }
  }, [o, props.channel])

  return (
    <figure class="chart outcomes">
      <figcaption>{props.title}</figcaption>
      <div ref={box} data-committed={last('committed')} data-rolled-back={last('rolledBack')} data-failed={last('failed')} data-rollout={cols.rollout[cols.rollout.length - 1] ?? ''} />
    </figure>
  )
}
