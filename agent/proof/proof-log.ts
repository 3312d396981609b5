// Where DeviceProofs keeps its state: the signed heartbeat log (its last row is the
// chain head) and the newest genuine beacon of each validator. The agent keeps them in
// its SQLite state file, where a heartbeat's row and its outbox record are written in
// one transaction (crash safety: see device-proofs.ts). The fleet simulator runs
// thousands of devices in one process and keeps the newest few heartbeats in memory.

import type { Db } from '../core/state-db.js'

export interface BeaconRow {
  validator: string
  slot: number
  hash: string
}

export interface ProofLog {
  head(): { seq: number; hash: string } | undefined
  /** Called inside the outbox transaction that queues the heartbeat (SQLite). */
  append(seq: number, hash: string, created: number, payload: Buffer): void
  /** Stored heartbeats with from <= seq <= to, in seq order. */
  range(from: number, to: number): Array<{ seq: number; payload: Buffer }>
  /** Deletes heartbeats created before `before`, never the head; returns how many. */
  prune(before: number): number
  /** The newest beacon of each validator, in validator order. */
  beacons(): BeaconRow[]
  beacon(validator: string): { slot: number } | undefined
  saveBeacon(validator: string, slot: number, hash: string, received: number): void
}

/** The agent's log: tables `heartbeats` and `beacons` of the state file (state-db.ts). */
export function sqliteProofLog(db: Db): ProofLog {
  const st = {
    head: db.prepare('SELECT seq, hash FROM heartbeats ORDER BY seq DESC LIMIT 1'),
    insert: db.prepare('INSERT INTO heartbeats (seq, hash, created, payload) VALUES (?, ?, ?, ?)'),
    range: db.prepare('SELECT seq, payload FROM heartbeats WHERE seq BETWEEN ? AND ? ORDER BY seq'),
    prune: db.prepare('DELETE FROM heartbeats WHERE created < ? AND seq < (SELECT MAX(seq) FROM heartbeats)'),
    beacons: db.prepare('SELECT validator, slot, hash FROM beacons ORDER BY validator'),
    beacon: db.prepare('SELECT slot FROM beacons WHERE validator = ?'),
    saveBeacon: db.prepare(
      'INSERT INTO beacons (validator, slot, hash, received) VALUES (?, ?, ?, ?) ON CONFLICT (validator) DO UPDATE SET slot = excluded.slot, hash = excluded.hash, received = excluded.received',
    ),
  }
  return {
    head: () => st.head.get() as { seq: number; hash: string } | undefined,
    append: (seq, hash, created, payload) => void st.insert.run(seq, hash, created, payload),
    range: (from, to) => st.range.all(from, to) as Array<{ seq: number; payload: Buffer }>,
    prune: before => st.prune.run(before).changes,
    beacons: () => st.beacons.all() as BeaconRow[],
    beacon: validator => st.beacon.get(validator) as { slot: number } | undefined,
    saveBeacon: (validator, slot, hash, received) => void st.saveBeacon.run(validator, slot, hash, received),
  }
}

/** The newest `capacity` heartbeats in memory (the simulator's devices): a validator
 * asking for older ones gets nothing back, as from a device that pruned them. */
export class MemoryProofLog implements ProofLog {
  private readonly rows: Array<{ seq: number; hash: string; created: number; payload: Buffer }> = []
  private readonly beaconRows = new Map<string, BeaconRow>()

  constructor(private readonly capacity: number) {}

  head(): { seq: number; hash: string } | undefined {
    const last = this.rows[this.rows.length - 1]
    return last && { seq: last.seq, hash: last.hash }
  }

  append(seq: number, hash: string, created: number, payload: Buffer): void {
    this.rows.push({ seq, hash, created, payload })
    if (this.rows.length > this.capacity) this.rows.shift()
  }

  range(from: number, to: number): Array<{ seq: number; payload: Buffer }> {
    return this.rows.filter(r => r.seq >= from && r.seq <= to).map(r => ({ seq: r.seq, payload: r.payload }))
  }

  prune(before: number): number {
    const keep = this.rows.filter((r, i) => r.created >= before || i === this.rows.length - 1)
    const n = this.rows.length - keep.length
    this.rows.splice(0, this.rows.length, ...keep)
    return n
  }

  /** Every held heartbeat, oldest first (a replaying device picks one). */
  held(): ReadonlyArray<{ seq: number; payload: Buffer }> {
    return this.rows
  }

  beacons(): BeaconRow[] {
    return [...this.beaconRows.values()].sort((a, b) => (a.validator < b.validator ? -1 : a.validator > b.validator ? 1 : 0))
  }

  beacon(validator: string): { slot: number } | undefined {
    const b = this.beaconRows.get(validator)
    return b && { slot: b.slot }
  }

  saveBeacon(validator: string, slot: number, hash: string): void {
    this.beaconRows.set(validator, { validator, slot, hash })
  }
}
