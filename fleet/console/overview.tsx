// The overview: how many devices are online, offline and alerting, each alert kind with
// its count (a link to the table filtered by it), and the devices that need attention
// now, each linking to its page.

import * as api from './api.js'
import { ago, shortId } from './format.js'
import { useLive } from './live.js'
import { deviceHref, devicesHref } from './route.js'
import { Problem, useLoad } from './ui.js'

export function Overview() {
  const tick = useLive()
  const fleet = useLoad(() => api.fleet(), [tick])
  const alerting = useLoad(() => api.devices({ alert: 'any', sort: 'lastSeen', order: 'desc', limit: 50 }), [tick])
  const f = fleet.value
  return (
    <section class="overview">
      <h1>Overview</h1>
      <Problem error={fleet.error ?? alerting.error} />
      {f && (
        <>
          <div class="cards">
            <a class="card" href="#/devices" data-count="devices">
              <b>{f.counts.devices}</b> devices
            </a>
            <a class="card ok" href={devicesHref({ state: 'online' })} data-count="online">
              <b>{f.counts.online}</b> online
            </a>
            <a class="card off" href={devicesHref({ state: 'offline' })} data-count="offline">
              <b>{f.counts.offline}</b> offline
            </a>
            <a class="card warn" href={devicesHref({ alert: 'any' })} data-count="alerting">
              <b>{f.alerts.any}</b> alerting
            </a>
            <a class="card" href="#/rollouts" data-count="updating">
              <b>{f.counts.updating}</b> updating
            </a>
          </div>
          <h2>Alerts</h2>
          <ul class="alert-kinds">
            {api.ALERTS.map(k => (
              <li key={k}>
                <a href={devicesHref({ alert: k })} title={f.alertText[k]} data-alert={k}>
                  <span class={`badge a-${k}`}>{k}</span> <b>{f.alerts[k]}</b>
                </a>{' '}
                <small>{f.alertText[k]}</small>
              </li>
            ))}
          </ul>
          <p class="rules">
            Rules: offline for more than {f.alertRules.offlineMs < 120_000 ? `${Math.round(f.alertRules.offlineMs / 1000)} s` : `${Math.round(f.alertRules.offlineMs / 60_000)} min`}, hot from{' '}
            {f.alertRules.hotC} °C, disk from {f.alertRules.diskPercent} %, uptime score below {f.alertRules.scoreBelow / 10_000} %.
          </p>
        </>
      )}
      {alerting.value && (
        <>
          <h2>Needing attention {alerting.value.total > alerting.value.items.length ? `(the ${alerting.value.items.length} most recently seen of ${alerting.value.total})` : ''}</h2>
          {alerting.value.items.length === 0 ? (
            <p class="quiet">Nothing: every device is well.</p>
          ) : (
            <table class="grid attention">
              <thead>
                <tr>
                  <th>Device</th>
                  <th>Board</th>
                  <th>Alerts</th>
                  <th>Last seen</th>
                </tr>
              </thead>
              <tbody>
                {alerting.value.items.map(d => (
                  <tr key={d.id}>
                    <td>
                      <a href={deviceHref(d.id)} title={d.id} class="mono">
                        {shortId(d.id)}
                      </a>
                    </td>
                    <td>{d.board}</td>
                    <td>
                      {d.alerts.map(a => (
                        <span key={a} class={`badge a-${a}`}>
                          {a}
                        </span>
                      ))}
                    </td>
                    <td>{ago(d.lastSeen, f?.now)}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          )}
        </>
      )}
    </section>
  )
}
