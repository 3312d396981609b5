// A device's uptime score per epoch, from the pinned validators' signed attestations,
// and its signed task receipts: only what verified is shown (the service keeps nothing
// else), with a count of what was refused and why.

import * as api from './api.js'
import { time } from './format.js'
import { useLive } from './live.js'
import { Problem, useLoad } from './ui.js'

function RefusedLine(props: { what: string; refused: api.Refused | null }) {
  const r = props.refused
  if (!r) return null
  return (
    <p class="refused" data-refused={r.count}>
      {r.count} {props.what} that did not verify refused (the last at {time(r.lastAt)}: {r.lastReason})
    </p>
  )
}

export function ProofPanel(props: { id: string }) {
  const id = props.id
  const tick = useLive(n => n.more > 0 || n.devices.includes(id))
  const data = useLoad(async () => {
    const [attestations, receipts] = await Promise.all([api.attestations(id), api.receipts(id)])
    return { attestations, receipts }
  }, [id, tick])
  const v = data.value
  return (
    <div class="proofs">
      <Problem error={data.error} />
      {v && (
        <>
          <div>
            <h2>Uptime score (per epoch)</h2>
            <RefusedLine what="attestations" refused={v.attestations.refused} />
            {v.attestations.items.length === 0 ? (
              <p class="quiet">No attestation from a pinned validator yet (fleet serve --validator).</p>
            ) : (
              <table class="grid attestations">
                <thead>
                  <tr>
                    <th>Epoch</th>
                    <th>Score</th>
                    <th>Slots covered</th>
                    <th>Challenges</th>
                    <th>Validator</th>
                  </tr>
                </thead>
                <tbody>
                  {v.attestations.items.map(a => (
                    <tr key={`${a.epoch}-${a.validator}`} data-epoch={a.epoch}>
                      <td>{a.epoch}</td>
                      <td class="score">
                        {(a.score / 10_000).toFixed(1)} %{a.fraud && <span class="badge a-offline"> double-signed</span>}
                      </td>
                      <td>
                        {a.payload.body.counts.slotsCovered} / {a.payload.body.counts.slotsLive}
                      </td>
                      <td>
                        {a.payload.body.counts.passed} / {a.payload.body.counts.challenges}
                      </td>
                      <td class="mono" title={a.validator}>
                        {a.validator.slice(0, 12)}…
                      </td>
                    </tr>
                  ))}
                </tbody>
              </table>
            )}
          </div>
          <div>
            <h2>Task receipts</h2>
            <RefusedLine what="receipts" refused={v.receipts.refused} />
            {v.receipts.items.length === 0 ? (
              <p class="quiet">No task receipt yet.</p>
            ) : (
              <table class="grid receipts">
                <thead>
                  <tr>
                    <th>Finished</th>
                    <th>Task</th>
                    <th>Type</th>
                    <th>Outcome</th>
                    <th>For</th>
                  </tr>
                </thead>
                <tbody>
                  {v.receipts.items.map(r => (
                    <tr key={r.id} data-task={r.task}>
                      <td>{time(r.finished)}</td>
                      <td class="mono">{r.task}</td>
                      <td>{r.type}</td>
                      <td class={`outcome ${r.outcome}`} title={r.payload.body.error?.message ?? ''}>
                        {r.outcome}
                        {r.payload.body.error ? ` (${r.payload.body.error.code})` : ''}
                      </td>
                      <td class="mono" title={r.dispatcher}>
                        {r.dispatcher.slice(0, 12)}…
                      </td>
                    </tr>
                  ))}
                </tbody>
              </table>
            )}
          </div>
        </>
      )}
    </div>
  )
}
