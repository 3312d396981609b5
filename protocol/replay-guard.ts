// Remembers every accepted signed message id until it expires, in SQLite, so a
// replayed command is refused even across restarts. Expired envelopes are refused by
// verifyEnvelope, so an id only needs keeping until its own expiry (plus clock skew).

import type { Db } from './sqlite.js'
import { CairnError } from './errors.js'

export class ReplayGuard {
  private readonly insert
  private readonly prune
  private lastPrune = 0

  constructor(
    db: Db,
    private readonly skewMs: number,
  ) {
    this.insert = db.prepare('INSERT OR IGNORE INTO seen_commands (id, exp) VALUES (?, ?)')
    this.prune = db.prepare('DELETE FROM seen_commands WHERE exp < ?')
  }

  /** Records the id; throws REPLAY if it was seen before. Durable before it returns. */
  admit(id: string, exp: number, now: number): void {
    if (now - this.lastPrune > 60_000) {
      this.prune.run(now - this.skewMs)
      this.lastPrune = now
    }
    if (this.insert.run(id, exp + this.skewMs).changes === 0) throw new CairnError('REPLAY', `message ${id} was already received`)
  }
}
