// Remembers every accepted signed message id until it expires, so a replayed message is
// refused. Expired envelopes are refused by the clock checks (envelope.ts), so an id
// only needs keeping until its own expiry (plus clock skew). The agent keeps them in
// SQLite (ReplayGuard), so a replay is refused even across restarts; a simulated
// device keeps them in memory (MemoryReplayGuard).

import type { Db } from './sqlite.js'
import { CairnError } from './errors.js'

export interface ReplayStore {
  /** Whether the id was admitted before (and has not expired from the store). */
  seen(id: string): boolean
  /** Records the id; throws REPLAY if it was seen before. A caller admits the id in the
   * same transaction as the effect it guards (a reply, a task row), so a crash leaves
   * both or neither, never an id taken with no effect to show for it. */
  admit(id: string, exp: number, now: number): void
}

export class ReplayGuard implements ReplayStore {
  private readonly insert
  private readonly lookup
  private readonly prune
  private lastPrune = 0

  /** `db` holds the table seen_commands (the agent's state file: agent/core/state-db.ts). */
  constructor(
    db: Db,
    private readonly skewMs: number,
  ) {
    this.insert = db.prepare('INSERT OR IGNORE INTO seen_commands (id, exp) VALUES (?, ?)')
    this.lookup = db.prepare('SELECT 1 FROM seen_commands WHERE id = ?').pluck()
    this.prune = db.prepare('DELETE FROM seen_commands WHERE exp < ?')
  }

  seen(id: string): boolean {
    return this.lookup.get(id) !== undefined
  }

  /** Durable before it returns (or with the caller's transaction). */
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
  private readonly ids = new Map<string, number>()
  private lastPrune = 0

  constructor(private readonly skewMs: number) {}

  seen(id: string): boolean {
    return this.ids.has(id)
  }

  admit(id: string, exp: number, now: number): void {
    if (now - this.lastPrune > 60_000) {
      for (const [k, until] of this.ids) if (until < now - this.skewMs) this.ids.delete(k)
      this.lastPrune = now
    }
    if (this.ids.has(id)) throw replayed(id)
    this.ids.set(id, exp + this.skewMs)
  }
}

function replayed(id: string): CairnError {
  return new CairnError('REPLAY', `message ${id} was already received`)
}
