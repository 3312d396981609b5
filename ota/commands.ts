// The fleet's OTA controls, as signed commands (agent/commands.ts lists them with the
// rest). Each may also arrive as a signed fleet-wide broadcast on the release topic.

import { Type } from '@sinclair/typebox'
import type { Json } from '../agent/canonical.js'
import type { CommandContext, CommandDef } from '../agent/commands.js'
import { CairnError } from '../agent/errors.js'
import { compareSemver, isSemver } from './semver.js'
import type { OtaStatus } from './updater.js'

/** What the commands may ask of the updater. */
export interface OtaControl {
  checkNow(): OtaStatus
  setPaused(paused: boolean): OtaStatus
  pin(version: string | null): OtaStatus
  status(): OtaStatus
}

/** Commands accepted as signed broadcasts on cairn/v1/<fleet>/release. */
export const OTA_BROADCAST_COMMANDS: ReadonlySet<string> = new Set(['update', 'pause-updates', 'pin-version'])

const Empty = Type.Object({}, { additionalProperties: false })
const SEMVER_PATTERN = '^(0|[1-9]\\d*)\\.(0|[1-9]\\d*)\\.(0|[1-9]\\d*)(-[0-9A-Za-z.-]+)?(\\+[0-9A-Za-z.-]+)?$'

function ota(ctx: CommandContext): OtaControl {
  if (!ctx.ota) throw new CairnError('OTA_DISABLED', 'updates are off on this device (set ota.releaseUrl, and run the agent under the launcher: docs/ota.md)')
  return ctx.ota
}

const json = (s: OtaStatus): Json => JSON.parse(JSON.stringify(s)) as Json

export const OTA_COMMANDS = [
  {
    name: 'update',
    summary: 'check the release channel now (OTA); replies with the updater state',
    body: Empty,
    run: (_b: unknown, ctx: CommandContext) => json(ota(ctx).checkNow()),
  },
  {
    name: 'pause-updates',
    summary: 'pause or resume OTA updates ({"paused": true|false}); a trial in progress still commits or rolls back',
    body: Type.Object({ paused: Type.Boolean() }, { additionalProperties: false }),
    run: (b: { paused: boolean }, ctx: CommandContext) => json(ota(ctx).setPaused(b.paused)),
  },
  {
    name: 'pin-version',
    summary: 'hold at a version: nothing newer is installed ({"version": "1.4.0"}; null unpins). Never a downgrade',
    body: Type.Object({ version: Type.Union([Type.String({ pattern: SEMVER_PATTERN, maxLength: 64 }), Type.Null()]) }, { additionalProperties: false }),
    run: (b: { version: string | null }, ctx: CommandContext) => {
      const o = ota(ctx)
      if (b.version !== null && !isSemver(b.version)) throw new CairnError('BAD_REQUEST', `not a semantic version: ${b.version}`)
      const s = o.pin(b.version)
      const running = s.running.version
      const note = b.version !== null && isSemver(running) && compareSemver(b.version, running) < 0 ? `${running} runs and is newer: it stays (never a downgrade); nothing newer is installed until the pin is raised or removed` : undefined
      return json({ ...s, ...(note ? { note } : {}) } as OtaStatus)
    },
  },
] as unknown as readonly CommandDef[]
