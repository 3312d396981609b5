// The rollouts page: the releases the repository publishes (with --release-url: each
// one's rollout, running devices and ended updates, and over time in a chart), the fleet
// by agent version, each release's devices by where their update stands (from their
// newest ota.* event), the devices that moved last, and the brakes: a fleet-wide
// pause-updates (or resume) signed here with the operator's key, which the service
// publishes retained on the release topic for every device to verify; and for one
// release, a halt: that pause now, and the rollout cut to 0 in the signed metadata by
// whoever holds the targets key (the service holds no release key).

import { useState } from 'preact/hooks'
import { OTA_PHASES } from '../service/fleet-store.js'
import * as api from './api.js'
import { OutcomeChart } from './outcome-chart.js'
import { ago, shellWord, time } from './format.js'
import { KeyBox } from './key-box.js'
import { useLive } from './live.js'
import { deviceHref } from './route.js'
import { signCommand, type OperatorKey } from './signer.js'
import { Problem, useLoad } from './ui.js'

/** How long a pause stands before it lapses (devices drop an expired one); resume sooner. */
const PAUSE_TTL_MS = 86_400_000
/** A halt signs a fresh pause when the one in force lapses sooner than this. */
const PAUSE_RENEW_MS = 6 * 3_600_000

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

  const [selected, setSelected] = useState<string | null>(null)
  const [halting, setHalting] = useState<api.Published | null>(null)
  const published = r?.published ?? []
  // the release picked, else the newest one devices have updated to (or tried to), else the newest
  const live = published.filter(p => !p.withdrawn)
  const shown = published.find(p => releaseId(p) === selected) ?? live.find(p => p.committed + p.rolledBack + p.failed > 0) ?? live[0] ?? null

  const setPaused = async (paused: boolean, question = 'Pause updates on every device of the fleet?'): Promise<boolean> => {
    const f = fleet.value?.fleet
    if (!key || !f) return false
    if (paused && !window.confirm(question)) return false
    setBusy(true)
    setError(undefined)
    try {
      await api.pauseUpdates(await signCommand(key, { fleet: f, device: '*', name: 'pause-updates', body: { paused }, ttlMs: PAUSE_TTL_MS }))
      setSent(n => n + 1)
      return true
    } catch (err) {
      setError(err instanceof Error ? err.message : String(err))
      return false
    } finally {
      setBusy(false)
    }
  }
  const halt = async (p: api.Published) => {
    // a pause in force for a while yet stands; one about to lapse is signed again
    const standing = pause?.paused === true && pause.exp - Date.now() > PAUSE_RENEW_MS
    if (standing || (await setPaused(true, `Halt ${p.version}: pause updates on every device of the fleet now?`))) setHalting(p)
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
          <h2>Published releases</h2>
          <Repository repo={r.repository} />
          {halting && <HaltSteps release={published.find(p => releaseId(p) === releaseId(halting)) ?? halting} paused={pause?.paused === true} onDone={() => setHalting(null)} />}
          {published.length > 0 && (
            <table class="grid published">
              <thead>
                <tr>
                  <th>Release</th>
                  <th>Kind</th>
                  <th>Channel</th>
                  <th>Rollout</th>
                  <th>Targets</th>
                  <th>Running</th>
                  <th>Committed</th>
                  <th>Rolled back</th>
                  <th>Failed</th>
                  <th>Published</th>
                  <th />
                </tr>
              </thead>
              <tbody>
                {published.map(p => (
                  <tr
                    key={releaseId(p)}
                    data-published={p.version}
                    data-kind={p.kind}
                    class={`${p === shown ? 'selected' : ''} ${p.withdrawn ? 'withdrawn' : ''}`}
                    onClick={() => setSelected(releaseId(p))}
                  >
                    <td class="mono">{p.version}</td>
                    <td>{p.kind}</td>
                    <td>{p.channel}</td>
                    <td class="rollout" data-rollout={p.rollout}>
                      {p.withdrawn ? (
                        'withdrawn'
                      ) : (
                        <>
                          <span class="bar">
                            <span style={{ width: `${p.rollout}%` }} />
                          </span>{' '}
                          {p.rollout} %
                        </>
                      )}
                    </td>
                    <td title={[p.arch ? `arch ${p.arch.join(', ')}` : 'any arch', p.boards ? `boards ${p.boards.join(', ')}` : 'any board'].join('; ')}>{p.targets}</td>
                    <td class="n">{p.running}</td>
                    <td class="n phase-committed" data-outcome="committed">
                      {p.committed}
                    </td>
                    <td class="n phase-rolled-back" data-outcome="rolled-back">
                      {p.rolledBack}
                    </td>
                    <td class="n phase-failed" data-outcome="failed">
                      {p.failed}
                    </td>
                    <td>{ago(p.firstSeen)}</td>
                    <td>
                      {key && api.mayOperate() && !p.withdrawn && p.rollout > 0 && (
                        <button
                          type="button"
                          data-action="halt-release"
                          disabled={busy}
                          onClick={e => {
                            e.stopPropagation()
                            void halt(p)
                          }}
                        >
                          Halt
                        </button>
                      )}
                    </td>
                  </tr>
                ))}
              </tbody>
            </table>
          )}
          {shown && <ReleaseHistory release={shown} />}
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

const releaseId = (p: { kind: string; version: string; channel: string }) => `${p.kind} ${p.version} ${p.channel}`

/** Where the releases come from, and whether its metadata verified the last time. */
function Repository(props: { repo: api.Rollouts['repository'] }) {
  const repo = props.repo
  if (!repo)
    return (
      <p class="quiet repository" data-repository="none">
        The service follows no release repository: start it with <span class="mono">--release-url URL --release-root root.json</span> (the devices' own settings) to list what it publishes, verified as
        a device verifies it.
      </p>
    )
  return (
    <p class={`repository ${repo.ok ? 'ok' : 'bad'}`} data-repository={repo.ok ? 'ok' : repo.checkedAt === null ? 'unread' : 'refused'}>
      From <span class="mono">{repo.url}</span>
      {repo.verifiedAt !== null && (
        <>
          : targets metadata version {repo.targetsVersion}, verified {ago(repo.verifiedAt)} against the pinned root, expires {repo.expires ? time(Date.parse(repo.expires)) : '?'}
        </>
      )}
      {repo.checkedAt === null ? ' (not read yet).' : '.'}
      {!repo.ok && repo.error && (
        <>
          {' '}
          <b>Last read {repo.checkedAt !== null ? ago(repo.checkedAt) : ''} failed:</b> <span class="error-text">{repo.error}</span>
        </>
      )}
    </p>
  )
}

/** What a halt takes: the pause (signed here, at once) and the rollout cut to 0 in the
 * signed metadata (the targets key's holder), each ticked off as the service sees it. */
function HaltSteps(props: { release: api.Published; paused: boolean; onDone: () => void }) {
  const p = props.release
  const cut = p.rollout === 0 || p.withdrawn
  return (
    <div class="halt" data-halt={p.version} data-halted={props.paused && cut ? 'yes' : 'no'}>
      <p>
        <b>Halting {p.version}</b> ({p.kind}, {p.channel}):
      </p>
      <ol>
        <li data-step="pause" class={props.paused ? 'done' : ''}>
          {props.paused ? '✓ ' : ''}Updates paused fleet-wide: connected devices stop before downloading or switching (signed here).
        </li>
        <li data-step="rollout" class={cut ? 'done' : ''}>
          {cut ? '✓ rollout 0 % in the signed metadata: ' : 'Cut its rollout to 0 in the signed metadata, where the targets key is kept, so devices that missed the pause refuse it too: '}
          <code>
            cairn release set-rollout --repo DIR --version {shellWord(p.version)} --pct 0 --channel {shellWord(p.channel)} --kind {p.kind}
          </code>
        </li>
      </ol>
      <button type="button" data-action="halt-done" onClick={props.onDone}>
        Close
      </button>
    </div>
  )
}

/** One release over time: its ended updates and its rollout, from its first sight (at most 30 days back). */
function ReleaseHistory(props: { release: api.Published }) {
  const p = props.release
  const data = useLoad(() => {
    const to = Date.now()
    const from = Math.max(Math.min(p.firstSeen, ...p.history.map(h => h.ts)) - 60_000, to - 30 * 86_400_000)
    return api.outcomes(p.kind, p.version, Math.min(from, to - 3_600_000), to)
    // again when the rollout changes or another update ends, not at every live notice
  }, [p.kind, p.version, p.changed, p.committed, p.rolledBack, p.failed])
  return (
    <div class="release-history" data-history={p.version}>
      <Problem error={data.error} />
      {data.value && <OutcomeChart title={`${p.version} (${p.kind}, ${p.channel}): ended updates and rollout since it was published`} outcomes={data.value} channel={p.channel} />}
    </div>
  )
}
