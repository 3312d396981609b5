// The device table: server-side search, filters, sort and paging (the API bounds every
// page), so it is as quick with 10,000 devices as with 10. Its state is the URL's query:
// a filtered, sorted view can be bookmarked and shared.

import { useEffect, useState } from 'preact/hooks'
import * as api from './api.js'
import type { Device } from './api.js'
import { ago, num, shortId } from './format.js'
import { useLive } from './live.js'
import { deviceHref, devicesHref } from './route.js'
import { Problem, useLoad } from './ui.js'

const PAGE = 50
const COLUMNS: Array<{ key: string; label: string; sort?: string; cell: (d: Device, now: number) => preact.ComponentChild }> = [
  {
    key: 'id',
    label: 'Device',
    sort: 'id',
    cell: d => (
      <a href={deviceHref(d.id)} title={d.id} class="mono">
        {shortId(d.id)}
      </a>
    ),
  },
  { key: 'state', label: 'State', sort: 'state', cell: d => <span class={`state ${d.state}`}>{d.state}</span> },
  { key: 'board', label: 'Board', sort: 'board', cell: d => d.board },
  { key: 'version', label: 'Agent', sort: 'version', cell: d => d.version },
  { key: 'tempC', label: 'Temp', sort: 'tempC', cell: d => num(d.latest?.tempC, 1, ' °C') },
  { key: 'load1', label: 'Load', sort: 'load1', cell: d => num(d.latest?.load1, 2) },
  { key: 'disk', label: 'Disk', cell: d => num(d.latest?.diskPercent, 0, ' %') },
  { key: 'lastSeen', label: 'Last seen', sort: 'lastSeen', cell: (d, now) => ago(d.lastSeen, now) },
  {
    key: 'labels',
    label: 'Labels',
    cell: d =>
      Object.entries(d.labels).map(([k, v]) => (
        <span key={k} class="label">
          {k}={v}
        </span>
      )),
  },
  {
    key: 'alerts',
    label: 'Alerts',
    cell: d =>
      d.alerts.map(a => (
        <span key={a} class={`badge a-${a}`}>
          {a}
        </span>
      )),
  },
]

export function DeviceTable(props: { query: URLSearchParams }) {
  const q = Object.fromEntries(props.query) as Record<string, string>
  const offset = Math.max(0, Number(q.offset ?? 0) || 0)
  const sort = q.sort ?? 'id'
  const order = q.order === 'desc' ? 'desc' : 'asc'
  const tick = useLive(n => n.presence || n.more > 0 || n.devices.length > 0)
  const key = props.query.toString()
  const page = useLoad(() => api.devices({ search: q.search, state: q.state, board: q.board, version: q.version, label: q.label, alert: q.alert, sort, order, offset, limit: PAGE }), [key, tick])
  const go = (change: Record<string, string | number | undefined>) => {
    location.hash = devicesHref({ ...q, offset: undefined, ...change })
  }
  // the search box types into local state and asks the server 250 ms after the last key
  const [search, setSearch] = useState(q.search ?? '')
  useEffect(() => setSearch(q.search ?? ''), [q.search])
  useEffect(() => {
    if (search === (q.search ?? '')) return
    const timer = setTimeout(() => go({ search: search || undefined }), 250)
    return () => clearTimeout(timer)
  }, [search])
  const p = page.value
  const now = Date.now()
  return (
    <section class="devices">
      <h1>Devices</h1>
      <form class="filters" onSubmit={e => e.preventDefault()}>
        <input
          type="search"
          name="search"
          placeholder="Search id, board, model, version, label"
          value={search}
          maxLength={100}
          onInput={e => setSearch((e.target as HTMLInputElement).value)}
          aria-label="search"
        />
        <select name="state" value={q.state ?? ''} onChange={e => go({ state: (e.target as HTMLSelectElement).value || undefined })} aria-label="state">
          <option value="">any state</option>
          <option value="online">online</option>
          <option value="offline">offline</option>
        </select>
        <select name="alert" value={q.alert ?? ''} onChange={e => go({ alert: (e.target as HTMLSelectElement).value || undefined })} aria-label="alert">
          <option value="">any alert or none</option>
          <option value="any">alerting</option>
          {api.ALERTS.map(a => (
            <option key={a} value={a}>
              {a}
            </option>
          ))}
        </select>
        <input name="board" placeholder="board (exact)" value={q.board ?? ''} maxLength={64} onChange={e => go({ board: (e.target as HTMLInputElement).value || undefined })} aria-label="board" />
        <input
          name="version"
          placeholder="agent version (exact)"
          value={q.version ?? ''}
          maxLength={64}
          onChange={e => go({ version: (e.target as HTMLInputElement).value || undefined })}
          aria-label="version"
        />
        <input
          name="label"
          placeholder="label key or key=value"
          value={q.label ?? ''}
          maxLength={200}
          onChange={e => go({ label: (e.target as HTMLInputElement).value || undefined })}
          aria-label="label"
        />
      </form>
      <Problem error={page.error} />
      {p && (
        <>
          <p class="count" data-total={p.total}>
            {p.total === 0 ? 'No device matches.' : `${p.offset + 1}–${p.offset + p.items.length} of ${p.total}`}
          </p>
          <table class={`grid device-table${page.loading ? ' loading' : ''}`}>
            <thead>
              <tr>
                {COLUMNS.map(c => (
                  <th key={c.key} aria-sort={c.sort === sort ? (order === 'asc' ? 'ascending' : 'descending') : undefined}>
                    {c.sort ? (
                      <a href={devicesHref({ ...q, offset: undefined, sort: c.sort, order: c.sort === sort && order === 'asc' ? 'desc' : 'asc' })} data-sort={c.sort}>
                        {c.label}
                        {c.sort === sort ? (order === 'asc' ? ' ▲' : ' ▼') : ''}
                      </a>
                    ) : (
                      c.label
                    )}
                  </th>
                ))}
              </tr>
            </thead>
            <tbody>
              {p.items.map(d => (
                <tr key={d.id} data-device={d.id}>
                  {COLUMNS.map(c => (
                    <td key={c.key} class={`c-${c.key}`}>
                      {c.cell(d, now)}
                    </td>
                  ))}
                </tr>
              ))}
            </tbody>
          </table>
          <nav class="pager">
            {p.offset > 0 && <a href={devicesHref({ ...q, offset: Math.max(0, p.offset - PAGE) || undefined })}>← previous</a>}
            {p.offset + p.items.length < p.total && (
              <a href={devicesHref({ ...q, offset: p.offset + PAGE })} rel="next">
                next →
              </a>
            )}
          </nav>
        </>
      )}
    </section>
  )
}
