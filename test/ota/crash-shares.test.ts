// The kill -9 scenarios are shared out over four files (crash-scenario.ts): each one in
// exactly one share, none left out.

import t from 'tap'
import { ALL_SCENARIOS, SHARES } from './crash-scenario.js'

for (const s of ALL_SCENARIOS) {
  const in_ = Object.entries(SHARES)
    .filter(([, has]) => has(s))
    .map(([name]) => name)
  t.equal(in_.length, 1, `${s.label} ${s.at}: in one share (${in_.join(', ') || 'none'})`)
}
t.equal(ALL_SCENARIOS.length, 27, 'all 27 scenarios: 23 in MQTT 5, 4 in MQTT 3.1.1')
