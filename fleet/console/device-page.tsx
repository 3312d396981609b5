// One device: identity and state, its alerts, its outbox backlog, GPIO lines and status
// LED (as its newest telemetry reported them), its commands (signed in this browser,
// commands.tsx), telemetry charts over a chosen range (an hour to a year; the API picks
// raw samples, minutes or hours for the range), its uptime score per epoch and its task
// receipts (proofs.tsx), its presence history and its events.
// Charts of what the board does not report (network, GPU, power, fan) are left out. Reloads when the live stream names this device.

import { useState } from 'preact/hooks'
import * as api from './api.js'
import { Chart, type Line } from './chart.js'
import { CommandPanel } from './commands.js'
import { ProofPanel } from './proofs.js'
import { ago, num, rate, size, time } from './format.js'
import { useLive } from './live.js'
import { Problem, useLoad } from './ui.js'

const RANGES: Array<[string, number]> = [
  ['1 h', 3_600_000],
  ['6 h', 6 * 3_600_000],
  ['24 h', 86_400_000],
  ['7 d', 7 * 86_400_000],
  ['30 d', 30 * 86_400_000],
  ['1 y', 365 * 86_400_000],
]

const CHARTS: Array<{ title: string; lines: Line[]; bands?: boolean }> = [
  {
    title: 'CPU, memory, disk (%)',
    bands: true,
    lines: [
      { metric: 'cpuPercent', label: 'CPU', unit: '%', colour: '#2563eb' },
      { metric: 'memPercent', label: 'memory', unit: '%', colour: '#7c3aed' },
      { metric: 'diskPercent', label: 'disk', unit: '%', colour: '#a16207' },
    ],
  },
  { title: 'Temperature (°C), throttling and under-voltage as red bands', bands: true, lines: [{ metric: 'tempC', label: 'hottest sensor', unit: '°C', colour: '#dc2626' }] },
  { title: 'Load (1 min)', lines: [{ metric: 'load1', label: 'load', unit: '', colour: '#0891b2' }] },
]
const OPTIONAL: Array<{ title: string; lines: Line[] }> = [
  {
    title: 'Network (bytes/s)',
    lines: [
      { metric: 'rxBps', label: 'received', unit: 'B/s', colour: '#059669' },
      { metric: 'txBps', label: 'sent', unit: 'B/s', colour: '#d97706' },
    ],
  },
  { title: 'GPU (%)', lines: [{ metric: 'gpuPercent', label: 'GPU', unit: '%', colour: '#9333ea' }] },
  { title: 'Power (W)', lines: [{ metric: 'powerW', label: 'power', unit: 'W', colour: '#ea580c' }] },
  { title: 'Fan (rpm)', lines: [{ metric: 'fanRpm', label: 'fan', unit: 'rpm', colour: '#64748b' }] },
]

export function DevicePage(props: { id: string }) {
  const id = props.id
  const tick = useLive(n => n.more > 0 || n.devices.includes(id))
  const [rangeMs, setRange] = useState(3_600_000)
  const device = useLoad(() => api.device(id), [id, tick])
  const series = useLoad(() => {
    const to = Date.now()
    return api.telemetry(id, to - rangeMs, to)
  }, [id, rangeMs, tick])
  const history = useLoad(async () => {
    const to = Date.now()
    const [events, presence] = await Promise.all([api.events(id, to - 30 * 86_400_000, to), api.presence(id, to - 30 * 86_400_000, to)])
    return { events: events.items, presence: presence.items }
  }, [id, tick])
  const d = device.value
  const s = series.value
  return (
    <section class="device">
      <p>
        <a href="#/devices">← devices</a>
      </p>
      <h1 class="mono" title={id}>
        {id}
      </h1>
      <Problem error={device.error} />
      {d && (
        <div class="identity">
          <dl>
            <dt>State</dt>
            <dd>
              <span class={`state ${d.state}`}>{d.state}</span> since {time(d.stateSince)} ({ago(d.stateSince)}){d.reason ? ` · ${d.reason}` : ''}
            </dd>
            <dt>Board</dt>
            <dd class="board">
              {d.board} · {d.model}
            </dd>
            <dt>Agent</dt>
            <dd>
              {d.version}
              {d.slot ? ` (slot ${d.slot})` : ''}
            </dd>
            <dt>OS</dt>
            <dd>{d.osVersion ? `${d.osVersion} (slot ${d.osSlot ?? '?'})` : '–'}</dd>
            <dt>Update</dt>
            <dd data-ota={d.ota?.phase ?? 'none'}>{d.ota ? `${d.ota.phase}${d.ota.version ? ` ${d.ota.version}` : ''} (${ago(d.ota.at)})` : '–'}</dd>
            <dt>Uptime score</dt>
            <dd data-score={d.score?.ppm ?? 'none'}>{d.score ? `${(d.score.ppm / 10_000).toFixed(1)} % (epoch ${d.score.epoch})` : '–'}</dd>
            <dt>Outbox</dt>
            <dd class="outbox" data-queued={d.outbox?.queued ?? 'none'}>
              {d.outbox
                ? d.outbox.queued === 0
                  ? 'empty'
                  : `${d.outbox.queued} waiting (${size(d.outbox.bytes)})${d.outbox.oldestTs !== null && d.telemetryTs !== null ? `, the oldest ${ago(d.outbox.oldestTs, d.telemetryTs).replace(/ ago$/, '')} old` : ''}`
                : '–'}
            </dd>
            <dt>First seen</dt>
            <dd>{time(d.firstSeen)}</dd>
            <dt>Last seen</dt>
            <dd>
              {time(d.lastSeen)} ({ago(d.lastSeen)})
            </dd>
            <dt>Labels</dt>
            <dd class="labels">
              {Object.keys(d.labels).length === 0
                ? '–'
                : Object.entries(d.labels).map(([k, v]) => (
                    <span key={k} class="label">
                      {k}={v}
                    </span>
                  ))}
            </dd>
            <dt>Problems</dt>
            <dd class="problems">{d.problems.length === 0 ? '–' : d.problems.join(', ')}</dd>
            <dt>Alerts</dt>
            <dd>
              {d.alerts.length === 0
                ? '–'
                : d.alerts.map(a => (
                    <span key={a} class={`badge a-${a}`}>
                      {a}
                    </span>
                  ))}
            </dd>
          </dl>
          {d.latest && (
            <dl class="latest">
              <dt>CPU</dt>
              <dd>{num(d.latest.cpuPercent, 0, ' %')}</dd>
              <dt>Temperature</dt>
              <dd>{num(d.latest.tempC, 1, ' °C')}</dd>
              <dt>Memory</dt>
              <dd>{num(d.latest.memPercent, 0, ' %')}</dd>
              <dt>Disk</dt>
              <dd>{num(d.latest.diskPercent, 0, ' %')}</dd>
              <dt>Network</dt>
              <dd>
                ↓ {rate(d.latest.rxBps)} ↑ {rate(d.latest.txBps)}
              </dd>
              <dt>Throttled</dt>
              <dd>{d.latest.throttled === null ? '–' : d.latest.throttled > 0 ? 'yes' : 'no'}</dd>
              <dt>Under-voltage</dt>
              <dd>{d.latest.underVoltage === null ? '–' : d.latest.underVoltage > 0 ? 'yes' : 'no'}</dd>
            </dl>
          )}
          {d.io && <IoState io={d.io} />}
        </div>
      )}
      <CommandPanel id={id} />
      <h2>Telemetry</h2>
      <div class="ranges" role="group" aria-label="time range">
        {RANGES.map(([label, ms]) => (
          <button key={label} type="button" class={ms === rangeMs ? 'on' : ''} aria-pressed={ms === rangeMs} data-range={label} onClick={() => setRange(ms)}>
            {label}
          </button>
        ))}
        {s && (
          <span class="resolution" data-resolution={s.resolution}>
            {s.points.length} points, {s.resolution === 'raw' ? 'as sent' : s.resolution === '1m' ? 'per minute' : 'per hour'}
          </span>
        )}
      </div>
      <Problem error={series.error} />
      {s && (
        <div class="charts">
          {CHARTS.map(c => (
            <Chart key={c.title} title={c.title} series={s} lines={c.lines} {...(c.bands ? { bands: true } : {})} />
          ))}
          {OPTIONAL.filter(c => s.points.some(p => c.lines.some(l => p.values[l.metric] !== null))).map(c => (
            <Chart key={c.title} title={c.title} series={s} lines={c.lines} />
          ))}
        </div>
      )}
      <ProofPanel id={id} />
      <Problem error={history.error} />
      {history.value && (
        <div class="history">
          <div>
            <h2>Presence (30 days)</h2>
            <table class="grid presence">
              <tbody>
                {[...history.value.presence].reverse().map((p, i) => (
                  <tr key={i}>
                    <td>{time(p.at)}</td>
                    <td>
                      <span class={`state ${p.state}`}>{p.state}</span>
                    </td>
                    <td>{p.reason ?? ''}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
          <div>
            <h2>Events (30 days)</h2>
            {history.value.events.length === 0 ? (
              <p class="quiet">None.</p>
            ) : (
              <table class="grid events">
                <tbody>
                  {history.value.events.map(e => (
                    <tr key={e.id}>
                      <td>{time(e.ts)}</td>
                      <td>{e.kind}</td>
                      <td class="mono data">{JSON.stringify(e.data)}</td>
                    </tr>
                  ))}
                </tbody>
              </table>
            )}
          </div>
        </div>
      )}
    </section>
  )
}

/** The GPIO lines the agent holds and its status LED, as its newest telemetry reported them. */
function IoState(props: { io: NonNullable<api.Device['io']> }) {
  const { led, lines } = props.io
  return (
    <div class="io">
      <p class="led" data-led={led?.shown ?? 'none'}>
        {led ? (
          <>
            Status LED on BCM {led.pin}: <b>{led.shown}</b> {led.source === 'api' ? '(set by a local client)' : "(the agent's state)"}
          </>
        ) : (
          'No status LED.'
        )}
      </p>
      {lines.length > 0 && (
        <table class="grid gpio">
          <thead>
            <tr>
              <th>BCM</th>
              <th>Held by</th>
              <th>Direction</th>
              <th>Level</th>
            </tr>
          </thead>
          <tbody>
            {lines.map(l => (
              <tr key={l.pin} data-pin={l.pin}>
                <td class="n">{l.pin}</td>
                <td>{l.holder}</td>
                <td>{l.direction}</td>
                <td class="level">{l.value === undefined ? '–' : l.value === 1 ? 'high' : 'low'}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </div>
  )
}
