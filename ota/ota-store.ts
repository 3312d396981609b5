// Where an updater's record lives: one row in state.db (table ota_state for the agent
// updater, ota_os_state for the OS updater). The same
// SQLite file holds the outbox, so a step's record and the event announcing it commit
// in ONE transaction (Outbox.enqueueWith): after a kill -9 the device has either both
// or neither, and an outcome is reported exactly once.

import { Value } from '@sinclair/typebox/value'
import type { Db } from '../protocol/sqlite.js'
import type { NewMessage, Outbox } from '../agent/core/outbox.js'
import { INITIAL_RECORD, OtaRecordSchema, type OtaRecord } from './update-plan.js'

export interface OtaEvent {
  kind: string
  data: Record<string, unknown>
}

export interface OtaStore {
  load(): OtaRecord
  /** Persists the record, and the event with it when given (atomically). */
  save(record: OtaRecord, event?: OtaEvent): void
}

export class SqlOtaStore implements OtaStore {
  private readonly selectRow
  private readonly upsertRow

  constructor(
    db: Db,
    private readonly outbox: Outbox,
    private readonly eventMessage: (e: OtaEvent) => NewMessage,
    private readonly clock: { now(): number },
    table: 'ota_state' | 'ota_os_state' = 'ota_state',
  ) {
    this.selectRow = db.prepare(`SELECT record FROM ${table} WHERE id = 1`)
    this.upsertRow = db.prepare(`INSERT INTO ${table} (id, record, updated) VALUES (1, ?, ?) ON CONFLICT (id) DO UPDATE SET record = excluded.record, updated = excluded.updated`)
  }

  load(): OtaRecord {
    const row = this.selectRow.get() as { record: string } | undefined
    if (!row) return structuredClone(INITIAL_RECORD)
    try {
      const v = JSON.parse(row.record) as unknown
      if (Value.Check(OtaRecordSchema, v)) return v
    } catch {
      // fall through
    }
    // A record this version cannot read (written by a newer one, or damaged): start
    // over from the facts. slots.json, not this record, decides what runs.
    return structuredClone(INITIAL_RECORD)
  }

  save(record: OtaRecord, event?: OtaEvent): void {
    const text = JSON.stringify(record)
    if (!event) {
      this.upsertRow.run(text, this.clock.now())
      return
    }
    this.outbox.enqueueWith(() => {
      this.upsertRow.run(text, this.clock.now())
      return this.eventMessage(event)
    })
  }
}

/** For planner and executor tests. */
export class MemoryOtaStore implements OtaStore {
  record: OtaRecord = structuredClone(INITIAL_RECORD)
  readonly events: OtaEvent[] = []
  load(): OtaRecord {
    return structuredClone(this.record)
  }
  save(record: OtaRecord, event?: OtaEvent): void {
    this.record = structuredClone(record)
    if (event) this.events.push(event)
  }
}
