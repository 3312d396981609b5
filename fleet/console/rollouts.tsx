// The rollouts page: the fleet by agent version, each release's devices by where their
// update stands (from their newest ota.* event), the devices that moved last, and the
// fleet-wide brake: a pause-updates (or resume) signed here with the operator's key,
// which the service publishes retained on the release topic for every device to verify.

import { useState } from 'preact/hooks'
import { OTA_PHASES } from '../service/fleet-store.js'
import * as api from './api.js'
import { ago, time } from './format.js'
import { KeyBox } from './key-box.js'
import { useLive } from './live.js'
import { deviceHref } from './route.js'
import { signCommand, type OperatorKey } from './signer.js'
import { Problem, useLoad } from './ui.js'

/** How long a pause stands before it lapses (devices drop an expired one); resume sooner. */
const PAUSE_TTL_MS = 86_400_000

export function RolloutsPage() {
  const [key, setKey] = useState<OperatorKey | null>(null)
  const [sent, setSent] = useState(0)
  const [busy, setBusy] = useState(false)
  const [error, setError] = useState<string>()
  const tick = useLive()
  const data = useLoad(() => api.rollouts(), [tick, sent])
  const fleet = useLoad(() => api.fleet(), [])
  const r = data.value
  const pause = r?.pause && !r.pause.expired ? r.pause : null

  const setPaused = async (paused: boolean) => {
    const f = fleet.value?.fleet
    if (!key || !f) return
    if (paused && !window.confirm('Pause updates on every device of the fleet?')) return
    setBusy(true)
    setError(undefined)
    try {
      await api.pauseUpdates(await signCommand(key, { fleet: f, device: '*', name: 'pause-updates', body: { paused }, ttlMs: PAUSE_TTL_MS }))
      setSent(n => n + 1)
    } catch (err) {
      setError(err instanceof Error ? err.message : String(err))
    } finally {
      setBusy(false)
    }
  }

  return (
    <section class="rollouts">
      <h1>Rollouts</h1>
      <div class={`pause ${pause?.paused ? 'on' : 'off'}`} data-paused={pause?.paused ? 'yes' : 'no'}>
        {pause?.paused ? (
          <p>
            <b>Updates are paused</b> fleet-wide, signed by <span class="mono">{pause.by.slice(0, 12)}…</span> at {time(pause.iat)}, until {time(pause.exp)}.
          </p>
        ) : (
          <p>Updates are not paused{pause ? ` (resumed ${ago(pause.iat)} by ${pause.by.slice(0, 12)}…)` : ''}.</p>
        )}
        <KeyBox onKey={setKey} />
        {key && api.mayOperate() && (
          <p>
            {pause?.paused ? (
              <button type="button" data-action="resume" disabled={busy} onClick={() => void setPaused(false)}>
                Resume updates
              </button>
            ) : (
              <button type="button" data-action="halt" disabled={busy} onClick={() => void setPaused(true)}>
                Pause updates fleet-wide
              </button>
            )}{' '}
            <small class="quiet">Signed here, published retained on the release topic; each device checks the signature against its own operator keys.</small>
          </p>
        )}
        <Problem error={error ?? fleet.error} />
      </div>
      <Problem error={data.error} />
      {r && (
        <>
          <h2>Agent versions</h2>
          <table class="grid versions">
            <thead>
              <tr>
                <th>Version</th>
                <th>Devices</th>
                <th>Online</th>
              </tr>
            </thead>
            <tbody>
              {r.versions.map(v => (
                <tr key={v.version} data-version={v.version}>
                  <td class="mono">{v.version}</td>
                  <td class="n">{v.devices}</td>
                  <td class="n">{v.online}</td>
                </tr>
              ))}
            </tbody>
          </table>
          <h2>Releases being installed</h2>
          {r.releases.length === 0 ? (
            <p class="quiet">No update seen yet (devices report theirs as ota.* events).</p>
          ) : (
            <table class="grid releases">
              <thead>
                <tr>
                  <th>Release</th>
                  <th>Devices</th>
                  {OTA_PHASES.map(p => (
                    <th key={p}>{p}</th>
                  ))}
                  <th>Why not</th>
                </tr>
              </thead>
              <tbody>
                {r.releases.map(rel => (
                  <tr key={rel.version} data-release={rel.version}>
                    <td class="mono">{rel.version}</td>
                    <td class="n">{rel.devices}</td>
                    {OTA_PHASES.map(p => (
                      <td key={p} class={`n phase-${p}`} data-phase={p}>
                        {rel.phases[p] || ''}
                      </td>
                    ))}
                    <td>
                      {Object.entries(rel.reasons)
                        .map(([why, n]) => `${why} ×${n}`)
                        .join(', ')}
                    </td>
                  </tr>
                ))}
              </tbody>
            </table>
          )}
          {r.recent.length > 0 && (
            <>
              <h2>Latest moves</h2>
              <table class="grid recent">
                <tbody>
                  {r.recent.map(m => (
                    <tr key={m.device}>
                      <td>{time(m.ts)}</td>
                      <td class="mono">
                        <a href={deviceHref(m.device)} title={m.device}>
                          {m.device.slice(0, 16)}…
                        </a>
                      </td>
                      <td class={`phase-${m.phase}`}>{m.phase}</td>
                      <td class="mono">
                        {m.from ? `${m.from} → ` : ''}
                        {m.version ?? ''}
                      </td>
                      <td>{m.reason ?? ''}</td>
                    </tr>
                  ))}
                </tbody>
              </table>
            </>
          )}
        </>
      )}
    </section>
  )
}
