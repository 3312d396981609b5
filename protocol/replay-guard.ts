// Remembers every accepted signed message id until it expires, so a replayed message is
// refused. Expired envelopes are refused by the clock checks (envelope.ts), so an id
// only needs keeping until its own expiry (plus clock skew). The agent keeps them in
// SQLite (ReplayGuard), so a replay is refused even across restarts; a simulated
// device keeps them in memory (MemoryReplayGuard).

import type { Db } from './sqlite.js'
import { CairnError } from './errors.js'

export interface ReplayStore {
  /** Records the id; throws REPLAY if it was seen before. */
  admit(id: string, exp: number, now: number): void
}

export class ReplayGuard implements ReplayStore {
  private readonly insert
  private readonly prune
  private lastPrune = 0

  /** `db` holds the table seen_commands (the agent's state file: agent/core/state-db.ts). */
  constructor(
    db: Db,
    private readonly skewMs: number,
  ) {
    this.insert = db.prepare('INSERT OR IGNORE INTO seen_commands (id, exp) VALUES (?, ?)')
    this.prune = db.prepare('DELETE FROM seen_commands WHERE exp < ?')
  }

  /** Durable before it returns. */
  admit(id: string, exp: number, now: number): void {
    if (now - this.lastPrune > 60_000) {
      this.prune.run(now - this.skewMs)
      this.lastPrune = now
    }
    if (this.insert.run(id, exp + this.skewMs).changes === 0) throw replayed(id)
  }
}

/** The same rule in memory, for a process that holds many simulated devices. */
export class MemoryReplayGuard implements ReplayStore {
  private readonly seen = new Map<string, number>()
  private lastPrune = 0

  constructor(private readonly skewMs: number) {}

  admit(id: string, exp: number, now: number): void {
    if (now - this.lastPrune > 60_000) {
      for (const [k, until] of this.seen) if (until < now - this.skewMs) this.seen.delete(k)
      this.lastPrune = now
    }
    if (this.seen.has(id)) throw replayed(id)
    this.seen.set(id, exp + this.skewMs)
  }
}

function replayed(id: string): CairnError {
  return new CairnError('REPLAY', `message ${id} was already received`)
}
