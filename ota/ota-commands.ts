// The fleet's OTA controls, as signed commands that the OTA extension registers in the
// agent's command table (agent/core/commands.ts). Each may also arrive as a signed
// fleet-wide broadcast on the release topic.

import { Type } from '@sinclair/typebox'
import type { Json } from '../protocol/canonical.js'
import type { CommandDef } from '../agent/core/commands.js'
import { CairnError } from '../protocol/errors.js'
import { compareSemver, isSemver, SEMVER_PATTERN } from '../protocol/semver.js'
import type { OtaStatus } from './updater.js'

/** What the commands may ask of the updaters; `target` picks the agent or the OS one
 * (default: both for checks and pauses, the agent for pins). Replies carry the agent
 * updater's state, with the OS updater's as `os` where there is one. */
export interface OtaControl {
  checkNow(): OtaStatus
  setPaused(paused: boolean, target?: UpdateTarget): OtaStatus
  pin(version: string | null, target?: UpdateTarget): OtaStatus
  status(): OtaStatus
}

type UpdateTarget = 'agent' | 'os'
const Target = Type.Optional(Type.Union([Type.Literal('agent'), Type.Literal('os')], { description: 'which updater: the agent or the OS (Cairn OS)' }))

/** Commands accepted as signed broadcasts on cairn/v1/<fleet>/release. */
export const OTA_BROADCAST_COMMANDS: ReadonlySet<string> = new Set(['update', 'pause-updates', 'pin-version'])

const Empty = Type.Object({}, { additionalProperties: false })

/** What the commands act on; undefined where updates are off. */
export type OtaControlSource = () => OtaControl | undefined

const json = (s: OtaStatus): Json => JSON.parse(JSON.stringify(s)) as Json

/** The OTA commands over `control`. With no updater (`() => undefined`) each answers
 * OTA_DISABLED; that form also serves as the table's specs (names, summaries, bodies). */
export function otaCommands(control: OtaControlSource): readonly CommandDef[] {
  const ota = (): OtaControl => {
    const c = control()
    if (!c) throw new CairnError('OTA_DISABLED', 'updates are off on this device (set ota.releaseUrl, and run the agent under the launcher: docs/ota.md)')
    return c
  }
  return [
    {
      name: 'update',
      summary: 'check the release channel now (OTA); replies with the updater state',
      body: Empty,
      run: () => json(ota().checkNow()),
    },
    {
      name: 'pause-updates',
      summary: 'pause or resume OTA updates ({"paused": true|false}, "target": "agent"|"os" for one of them); a trial in progress still commits or rolls back',
      body: Type.Object({ paused: Type.Boolean(), target: Target }, { additionalProperties: false }),
      run: (b: { paused: boolean; target?: UpdateTarget }) => json(ota().setPaused(b.paused, b.target)),
    },
    {
      name: 'pin-version',
      summary: 'hold at a version: nothing newer is installed ({"version": "1.4.0"}; null unpins; "target": "os" pins the OS). Never a downgrade',
      body: Type.Object({ version: Type.Union([Type.String({ pattern: SEMVER_PATTERN, maxLength: 64 }), Type.Null()]), target: Target }, { additionalProperties: false }),
      run: (b: { version: string | null; target?: UpdateTarget }) => {
        const o = ota()
        if (b.version !== null && !isSemver(b.version)) throw new CairnError('BAD_REQUEST', `not a semantic version: ${b.version}`)
        const s = o.pin(b.version, b.target)
        const running = (b.target === 'os' ? s.os?.running.version : undefined) ?? s.running.version
        const note =
          b.version !== null && isSemver(running) && compareSemver(b.version, running) < 0
            ? `${running} runs and is newer: it stays (never a downgrade); nothing newer is installed until the pin is raised or removed`
            : undefined
        return json({ ...s, ...(note ? { note } : {}) } as OtaStatus)
      },
    },
  ] as unknown as readonly CommandDef[]
}
