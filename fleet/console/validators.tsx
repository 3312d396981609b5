// The validators page: the validators this service is pinned to (`fleet serve
// --validator`), what each has attested here (devices, attestations, its newest epoch,
// its mean score), and how many attestations were refused (unpinned, forged, about
// another device).

import * as api from './api.js'
import { ago, time } from './format.js'
import { useLive } from './live.js'
import { Problem, useLoad } from './ui.js'

export function ValidatorsPage() {
  const tick = useLive()
  const data = useLoad(() => api.validators(), [tick])
  const v = data.value
  return (
    <section class="validators">
      <h1>Validators</h1>
      <Problem error={data.error} />
      {v &&
        (v.items.length === 0 ? (
          <p class="quiet">
            No validator is pinned: start the service with <span class="mono">--validator KEYID</span> (or a public key file) to keep their uptime attestations.
          </p>
        ) : (
          <table class="grid validator-list">
            <thead>
              <tr>
                <th>Validator (key id)</th>
                <th>Devices</th>
                <th>Attestations</th>
                <th>Newest epoch</th>
                <th>Newest received</th>
                <th>Mean score</th>
              </tr>
            </thead>
            <tbody>
              {v.items.map(x => (
                <tr key={x.validator} data-validator={x.validator}>
                  <td class="mono">{x.validator}</td>
                  <td class="n">{x.devices}</td>
                  <td class="n">{x.attestations}</td>
                  <td class="n">{x.lastEpoch ?? '–'}</td>
                  <td>{x.lastAt === null ? 'nothing yet' : `${time(x.lastAt)} (${ago(x.lastAt)})`}</td>
                  <td class="n">{x.meanScore === null ? '–' : `${(x.meanScore / 10_000).toFixed(1)} %`}</td>
                </tr>
              ))}
            </tbody>
          </table>
        ))}
      {v && (
        <p class={v.refused > 0 ? 'refused' : 'quiet'} data-refused={v.refused}>
          {v.refused} attestation{v.refused === 1 ? '' : 's'} refused (from a validator that is not pinned, forged, or about another device).
        </p>
      )}
    </section>
  )
}
