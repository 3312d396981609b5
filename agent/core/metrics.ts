// A small metrics registry rendered in the Prometheus text format for /metrics.

type Labels = Record<string, string>

const key = (name: string, labels?: Labels) =>
  labels && Object.keys(labels).length
    ? `${name}{${Object.entries(labels)
        .map(([k, v]) => `${k}="${v.replace(/["\\\n]/g, '_')}"`)
        .join(',')}}`
    : name

export class Metrics {
  private readonly counters = new Map<string, number>()
  private readonly gauges = new Map<string, number>()
  private readonly help = new Map<string, string>()

  describe(name: string, help: string): void {
    this.help.set(name, help)
  }

  inc(name: string, labels?: Labels, by = 1): void {
    const k = key(name, labels)
    this.counters.set(k, (this.counters.get(k) ?? 0) + by)
  }

  set(name: string, value: number, labels?: Labels): void {
    this.gauges.set(key(name, labels), value)
  }

  /** Drops every series of a gauge family (before re-filling per-zone values). */
  clear(name: string): void {
    for (const k of [...this.gauges.keys()]) if (k === name || k.startsWith(name + '{')) this.gauges.delete(k)
  }

  get(name: string, labels?: Labels): number | undefined {
    const k = key(name, labels)
    return this.counters.get(k) ?? this.gauges.get(k)
  }

  render(): string {
    const lines: string[] = []
    const emit = (map: Map<string, number>, type: string) => {
      const families = new Map<string, string[]>()
      for (const [k, v] of map) {
        const fam = k.includes('{') ? k.slice(0, k.indexOf('{')) : k
        if (!families.has(fam)) families.set(fam, [])
        families.get(fam)!.push(`${k} ${Number.isFinite(v) ? v : 'NaN'}`)
      }
      for (const [fam, series] of [...families].sort(([a], [b]) => a.localeCompare(b))) {
        const help = this.help.get(fam)
        if (help) lines.push(`# HELP ${fam} ${help}`)
        lines.push(`# TYPE ${fam} ${type}`, ...series)
      }
    }
    emit(this.counters, 'counter')
    emit(this.gauges, 'gauge')
    return lines.join('\n') + '\n'
  }
}
