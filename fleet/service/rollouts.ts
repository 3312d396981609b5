// The rollouts page's figures: the fleet's devices by agent version, and for each
// release the devices whose updater last spoke of it, by where they are (available,
// downloading, staged, switching, committed, rolled back, failed) with the reasons of
// the failures, from each device's newest ota.* event (docs/ota.md, "Events"); and
// whether updates are paused: the signed, retained pause-updates on the release topic
// (`cairn fleet rollout halt|resume`, or the console), as the service last read it.

import type { Clock } from '../../protocol/clock.js'
import { checkEnvelope } from '../../protocol/envelope.js'
import { releaseTopic } from '../../protocol/topics.js'
import { OTA_PHASES, PHASE_OF, type OtaPhase, type ReleaseKind, type ReleaseState } from './fleet-store.js'
/** How many devices' newest updater events the page reads (the fleet's size, bounded). */
export const OTA_SCAN_LIMIT = 20_000
/** How many of them it lists one by one. */
const RECENT = 50

export interface PauseState {
  paused: boolean
  /** the signer's key id */
  by: string
  id: string
  iat: number
  exp: number
}

type Latest = { device: string; kind: string; ts: number; data: unknown }
const str = (v: unknown) => (typeof v === 'string' ? v.slice(0, 200) : null)

export function rolloutSummary(latest: readonly Latest[], versions: ReadonlyArray<{ version: string; devices: number; online: number }>) {
  const releases = new Map<string, { version: string; devices: number; phases: Record<OtaPhase, number>; reasons: Record<string, number> }>()
  const recent: Array<{ device: string; phase: OtaPhase; version: string | null; from: string | null; reason: string | null; ts: number }> = []
  for (const e of latest) {
    const phase = PHASE_OF[e.kind]
    if (!phase) continue
    const d = (e.data ?? {}) as Record<string, unknown>
    const version = str(d.version)
    const reason = phase === 'rolled-back' || phase === 'failed' ? (str(d.reason) ?? 'unknown') : null
    if (version) {
      let r = releases.get(version)
      if (!r) releases.set(version, (r = { version, devices: 0, phases: Object.fromEntries(OTA_PHASES.map(p => [p, 0])) as Record<OtaPhase, number>, reasons: {} }))
      r.devices++
      r.phases[phase]++
      if (reason) r.reasons[reason] = (r.reasons[reason] ?? 0) + 1
    }
    if (recent.length < RECENT) recent.push({ device: e.device, phase, version, from: str(d.from), reason, ts: e.ts })
  }
  return { versions, releases: [...releases.values()].sort((a, b) => b.devices - a.devices), recent }
}

/** How many changes of each release's rollout the page gets. */
export const RELEASE_HISTORY = 100

/** The published releases, each with how many devices ended its update how, and how
 * many run it now (an agent release by the agent's version, an OS release by Cairn OS's). */
export function publishedReleases(
  releases: readonly ReleaseState[],
  totals: ReadonlyArray<{ kind: ReleaseKind; version: string; committed: number; rolledBack: number; failed: number }>,
  versions: ReadonlyArray<{ version: string; devices: number; online: number }>,
  osVersions: ReadonlyArray<{ version: string; devices: number; online: number }>,
) {
  return releases.map(r => {
    const t = totals.find(x => x.kind === r.kind && x.version === r.version)
    return {
      ...r,
      withdrawn: r.targets === 0,
      running: (r.kind === 'agent' ? versions : osVersions).find(v => v.version === r.version)?.devices ?? 0,
      committed: t?.committed ?? 0,
      rolledBack: t?.rolledBack ?? 0,
      failed: t?.failed ?? 0,
    }
  })
}

/** A bucket for outcomes over a range: a minute, an hour or a day, whichever keeps the
 * chart under about 200 bars. */
export function outcomeBucket(spanMs: number): number {
  for (const b of [60_000, 3_600_000]) if (spanMs / b <= 200) return b
  return 86_400_000
}

/** The pause-updates command retained on the release topic, if it verifies. */
export class PauseWatch {
  private current: PauseState | null = null

  constructor(
    private readonly o: {
      fleet: string
      clock: Clock
      /** who may sign it; null: any key (each device checks its own operators) */
      operators: ReadonlySet<string> | null
    },
  ) {}

  get topic(): string {
    return releaseTopic(this.o.fleet)
  }

  /** A message on the release topic: a hint (ignored), a cleared topic, or the pause. */
  handle(payload: Buffer): void {
    if (payload.length === 0) return void (this.current = null)
    if (payload.length > 16 * 1024) return
    let value: unknown
    try {
      value = JSON.parse(payload.toString('utf8'))
    } catch {
      return
    }
    try {
      const env = checkEnvelope(value, {
        trusted: k => this.o.operators === null || this.o.operators.has(k),
        fleet: this.o.fleet,
        sub: '*',
        allowBroadcast: true,
        expectType: t => t === 'cmd.pause-updates',
        // read as it stands now; expired ones show as such below
        clock: null,
      })
      const body = env.body as { paused?: unknown }
      if (typeof body?.paused !== 'boolean') return
      this.current = { paused: body.paused, by: env.iss, id: env.id, iat: env.iat, exp: env.exp }
    } catch {
      // not a signed pause: a release hint or junk, nothing to show
    }
  }

  /** The pause in force now: a paused one past its expiry no longer is. */
  state(): (PauseState & { expired: boolean }) | null {
    return this.current && { ...this.current, expired: this.current.exp <= this.o.clock.now() }
  }
}
