// How the console writes times, sizes and numbers. Everything a device sent is shown as
// text (Preact escapes it); nothing here builds HTML.

export function ago(ms: number, now = Date.now()): string {
  const s = Math.round((now - ms) / 1000)
  if (s < 0) return 'in the future'
  if (s < 90) return `${s} s ago`
  if (s < 90 * 60) return `${Math.round(s / 60)} min ago`
  if (s < 36 * 3600) return `${Math.round(s / 3600)} h ago`
  return `${Math.round(s / 86400)} d ago`
}

export function time(ms: number): string {
  const d = new Date(ms)
  const p = (n: number) => String(n).padStart(2, '0')
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`
}

export function num(v: number | null | undefined, digits = 1, unit = ''): string {
  return v === null || v === undefined ? '–' : `${v.toFixed(digits)}${unit}`
}

export function rate(bps: number | null | undefined): string {
  return scaled(bps, ['B/s', 'kB/s', 'MB/s', 'GB/s'])
}

export function size(bytes: number | null | undefined): string {
  return scaled(bytes, ['B', 'kB', 'MB', 'GB'])
}

function scaled(n: number | null | undefined, units: readonly string[]): string {
  if (n === null || n === undefined) return '–'
  let v = n
  let i = 0
  while (v >= 1000 && i < units.length - 1) {
    v /= 1000
    i++
  }
  return `${v.toFixed(v < 10 && i > 0 ? 1 : 0)} ${units[i]}`
}

/** A device id is 52 characters: the console shows its start, the whole in a title. */
export function shortId(id: string): string {
  return id.length > 14 ? `${id.slice(0, 12)}…` : id
}

/** A word as a POSIX shell reads it back unchanged: text from release metadata (a
 * channel) lands in a command the operator pastes into a shell. */
export function shellWord(s: string): string {
  return /^[A-Za-z0-9._+-]+$/.test(s) ? s : `'${s.replaceAll("'", `'\\''`)}'`
}
