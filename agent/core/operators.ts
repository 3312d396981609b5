// The set of operator keys the device trusts for commands. Starts from the keys in the
// configuration and changes only through signed operator-add / operator-revoke commands,
// persisted in SQLite. A revocation wins over the configuration, so a restart never
// brings a revoked key back.

import type { KeyObject } from 'node:crypto'
import type { Db } from './state-db.js'
import { CairnError } from '../../protocol/errors.js'
import { keyIdOf } from '../../protocol/keys.js'

export class OperatorKeys {
  private readonly configured: ReadonlySet<string>
  private trusted = new Set<string>()

  constructor(
    private readonly db: Db,
    configuredKeys: readonly KeyObject[],
  ) {
    this.configured = new Set(configuredKeys.map(keyIdOf))
    this.reload()
  }

  private reload(): void {
    const rows = this.db.prepare('SELECT key_id, state FROM operator_keys').all() as Array<{ key_id: string; state: string }>
    const next = new Set(this.configured)
    for (const r of rows) {
      if (r.state === 'revoked') next.delete(r.key_id)
      else next.add(r.key_id)
    }
    this.trusted = next
  }

  private record(keyId: string, state: 'trusted' | 'revoked', by: string, now: number): void {
    this.db
      .prepare(
        'INSERT INTO operator_keys (key_id, state, changed_at, changed_by) VALUES (?, ?, ?, ?) ON CONFLICT (key_id) DO UPDATE SET state = excluded.state, changed_at = excluded.changed_at, changed_by = excluded.changed_by',
      )
      .run(keyId, state, now, by)
    this.reload()
  }

  isTrusted(keyId: string): boolean {
    return this.trusted.has(keyId)
  }

  list(): Array<{ keyId: string; source: 'config' | 'command' }> {
    return [...this.trusted].sort().map(keyId => ({ keyId, source: this.configured.has(keyId) ? 'config' : 'command' }))
  }

  count(): number {
    return this.trusted.size
  }

  add(keyId: string, by: string, now: number): void {
    this.record(keyId, 'trusted', by, now)
  }

  revoke(keyId: string, by: string, now: number): void {
    if (!this.trusted.has(keyId)) throw new CairnError('BAD_REQUEST', `key ${keyId} is not trusted`)
    if (this.trusted.size === 1) throw new CairnError('LAST_OPERATOR_KEY', 'refusing to revoke the last trusted operator key: add another first')
    this.record(keyId, 'revoked', by, now)
  }
}
