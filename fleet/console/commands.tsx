// A device's commands: sign one in this browser with the operator's key (signer.ts),
// hand it to the service, and watch the audit log for the device's signed answer. The
// service relays and records; the device decides, by its own list of trusted keys.

import { useState } from 'preact/hooks'
import type { Json } from '../../protocol/canonical.js'
import * as api from './api.js'
import { time } from './format.js'
import { useLive } from './live.js'
import { KeyBox } from './key-box.js'
import { signCommand, type OperatorKey } from './signer.js'
import { Problem, useLoad } from './ui.js'

const COMMANDS: Array<{ name: string; summary: string; body: string; confirm?: string }> = [
  { name: 'ping', summary: 'is it there: its time and uptime', body: '{}' },
  { name: 'get-config', summary: 'its configuration, and where each value came from', body: '{}' },
  { name: 'logs', summary: 'its last log lines', body: '{"lines": 100}' },
  { name: 'operator-list', summary: 'the operator keys it trusts', body: '{}' },
  { name: 'restart-agent', summary: 'restart the agent', body: '{}', confirm: 'Restart the agent on this device?' },
  { name: 'reboot', summary: 'reboot the device', body: '{}', confirm: 'Reboot this device?' },
]
/** How long a command stays good: a device offline longer than this never runs it. */
const TTL_MS = 10 * 60_000

const errorText = (err: unknown) => (err instanceof Error ? err.message : String(err))

export function CommandPanel(props: { id: string }) {
  const id = props.id
  const [key, setKey] = useState<OperatorKey | null | undefined>(undefined)
  const [name, setName] = useState('ping')
  const [body, setBody] = useState('{}')
  const [busy, setBusy] = useState(false)
  const [sendError, setSendError] = useState<string>()
  const [sent, setSent] = useState(0)
  const tick = useLive(n => n.more > 0 || n.devices.includes(id))
  const fleet = useLoad(() => api.fleet(), [])
  const log = useLoad(() => api.commands(id), [id, tick, sent])

  const pick = (n: string) => {
    setName(n)
    setBody(COMMANDS.find(c => c.name === n)?.body ?? '{}')
  }
  const send = async (e: Event) => {
    e.preventDefault()
    setSendError(undefined)
    const f = fleet.value?.fleet
    if (!key || !f) return
    let parsed: Json
    try {
      parsed = JSON.parse(body) as Json
    } catch {
      return setSendError('the body is not JSON')
    }
    const ask = COMMANDS.find(c => c.name === name)?.confirm
    if (ask && !window.confirm(ask)) return
    setBusy(true)
    try {
      await api.sendCommand(id, await signCommand(key, { fleet: f, device: id, name, body: parsed, ttlMs: TTL_MS }))
      setSent(n => n + 1)
    } catch (err) {
      setSendError(errorText(err))
    } finally {
      setBusy(false)
    }
  }

  return (
    <section class="commands">
      <h2>Commands</h2>
      <KeyBox onKey={setKey} />
      {key && !api.mayOperate() && <p class="quiet">Your account is a viewer: sending commands needs the operator role.</p>}
      {key && api.mayOperate() && (
        <form class="send" onSubmit={e => void send(e)}>
          <select aria-label="command" data-field="command" value={name} onChange={e => pick((e.currentTarget as HTMLSelectElement).value)}>
            {COMMANDS.map(c => (
              <option key={c.name} value={c.name}>
                {c.name}: {c.summary}
              </option>
            ))}
          </select>
          <input aria-label="body (JSON)" class="mono" data-field="body" value={body} onInput={e => setBody((e.currentTarget as HTMLInputElement).value)} />
          <button type="submit" data-action="send" disabled={busy || !fleet.value}>
            Sign and send
          </button>
        </form>
      )}
      <Problem error={sendError ?? fleet.error} />
      <Problem error={log.error} />
      {log.value &&
        (log.value.items.length === 0 ? (
          <p class="quiet">No commands sent to it through this service.</p>
        ) : (
          <table class="grid command-log">
            <thead>
              <tr>
                <th>Sent</th>
                <th>Command</th>
                <th>State</th>
                <th>Answer (signed by the device)</th>
                <th>Signed by</th>
              </tr>
            </thead>
            <tbody>
              {log.value.items.map(c => (
                <tr key={c.id} data-command={c.id} data-state={c.state}>
                  <td>{time(c.sentAt)}</td>
                  <td class="mono">{c.name}</td>
                  <td>
                    <span class={`cmd-state ${c.state}`}>{c.state}</span>
                    {c.refused > 0 && (
                      <small class="refused" title={c.refusedWhy ?? ''}>
                        {' '}
                        {c.refused} forged or broken repl{c.refused === 1 ? 'y' : 'ies'} refused
                      </small>
                    )}
                  </td>
                  <td class="mono data result">{c.result === null ? '' : JSON.stringify(c.result)}</td>
                  <td class="mono" title={c.operator}>
                    {c.operator.slice(0, 12)}… ({c.by})
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        ))}
    </section>
  )
}
