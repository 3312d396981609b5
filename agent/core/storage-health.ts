// Whether the state dir takes writes. A full disk (SQLITE_FULL, ENOSPC), a read-only
// remount or an I/O error must never kill the agent: the writer that meets one reports
// it here and carries on degraded (telemetry dropped, events and replies sent once at
// QoS 0, heartbeats paused: a chain link that cannot be stored is never signed). This
// says so (DISK_FULL in the status, cairn_storage_full in /metrics, the status LED
// through the local bus) and probes the disk with backoff until there is room again,
// then tells the writers to catch up.
//
// A reserve file of RESERVE_BYTES is kept in the state dir while there is room. Freed
// at the first failure (or at a start on a full disk), it gives SQLite the pages it
// needs to open the state DB and keep the device's most important records (its reply
// to a command, a task's final state) while the owner frees space.

import { closeSync, existsSync, fsyncSync, openSync, rmSync, statfsSync, writeSync } from 'node:fs'
import { join } from 'node:path'
import type { Clock } from '../../protocol/clock.js'
import type { Logger } from '../../protocol/log.js'
import type { LocalBus } from './local-bus.js'
import type { Metrics } from './metrics.js'
import type { Problems } from './problems.js'

const RESERVE_FILE = '.cairn-reserve'
const RESERVE_BYTES = 1024 * 1024
/** Room the disk must have besides the reserve before writes are tried again. */
const HEADROOM_BYTES = 1024 * 1024
const FIRST_PROBE_MS = 1000
const LAST_PROBE_MS = 60_000

const STORAGE_CODES = /^(SQLITE_FULL|SQLITE_IOERR|SQLITE_READONLY|SQLITE_CANTOPEN|ENOSPC|EROFS|EIO|EDQUOT)/

/** A full, read-only or failing disk, seen through any wrapping (CairnError STATE_DIR's cause). */
export function isStorageError(err: unknown): boolean {
  for (let e = err, depth = 0; e && depth < 5; e = (e as { cause?: unknown }).cause, depth++) {
    const code = (e as { code?: unknown }).code
    if (typeof code === 'string' && STORAGE_CODES.test(code)) return true
  }
  return false
}

/** Frees the reserve (a start on a full disk, before the state DB is opened). */
export function releaseReserve(stateDir: string): void {
  rmSync(join(stateDir, RESERVE_FILE), { force: true })
}

export interface StorageHealthOptions {
  stateDir: string
  clock: Clock
  log: Logger
  metrics: Metrics
  problems: Problems
  bus: LocalBus
  /** Space is back: writers retry what they hold. */
  onRecovered(): void
}

export class StorageHealth {
  private failing = false
  private timer: NodeJS.Timeout | undefined
  private delayMs = FIRST_PROBE_MS
  private stopped = false

  constructor(private readonly o: StorageHealthOptions) {
    o.metrics.describe('cairn_storage_full', '1 while the state dir cannot be written (disk full, read-only, I/O errors)')
    o.metrics.set('cairn_storage_full', 0)
  }

  get ok(): boolean {
    return !this.failing
  }

  /** At start: keeps a reserve when there is room for one. A disk that has no room
   * for it (and no reserve from an earlier run) is reported full at once: it filled
   * while the agent was away, and the next write may be its last. */
  start(): void {
    if (existsSync(join(this.o.stateDir, RESERVE_FILE))) return
    if (this.roomFor(RESERVE_BYTES + HEADROOM_BYTES) && this.makeReserve()) return
    this.failed(Object.assign(new Error(`less than ${(RESERVE_BYTES + HEADROOM_BYTES) >> 20} MiB free in the state dir`), { code: 'ENOSPC' }), 'start')
  }

  stop(): void {
    this.stopped = true
    if (this.timer) clearTimeout(this.timer)
  }

  /** A write failed. True when the disk is to blame: the caller degrades and goes on. */
  failed(err: unknown, what: string): boolean {
    if (!isStorageError(err)) return false
    if (this.failing) return true
    this.failing = true
    releaseReserve(this.o.stateDir)
    this.o.log.error({ err, what }, 'the state dir cannot be written (disk full?): running degraded until it can')
    this.o.problems.set(
      'DISK_FULL',
      `the state dir ${this.o.stateDir} cannot be written (${codeOf(err)}): telemetry is dropped, events and replies are sent once without being stored, heartbeats pause`,
      this.o.clock.now(),
    )
    this.o.metrics.set('cairn_storage_full', 1)
    this.o.bus.emit('event', { kind: 'storage.full', ts: this.o.clock.now(), data: { what } })
    this.delayMs = FIRST_PROBE_MS
    this.probeLater()
    return true
  }

  private probeLater(): void {
    if (this.stopped) return
    this.timer = setTimeout(() => this.probe(), this.delayMs)
    this.timer.unref()
  }

  private probe(): void {
    if (this.stopped) return
    if (!this.roomFor(RESERVE_BYTES + HEADROOM_BYTES) || !this.makeReserve()) {
      this.delayMs = Math.min(LAST_PROBE_MS, this.delayMs * 2)
      this.probeLater()
      return
    }
    this.failing = false
    this.o.problems.clear('DISK_FULL')
    this.o.metrics.set('cairn_storage_full', 0)
    this.o.bus.emit('event', { kind: 'storage.ok', ts: this.o.clock.now(), data: {} })
    this.o.log.info('the state dir takes writes again')
    try {
      this.o.onRecovered()
    } catch (err) {
      if (!this.failed(err, 'catching up')) this.o.log.error({ err }, 'catching up after a full disk failed')
    }
  }

  private roomFor(bytes: number): boolean {
    try {
      const s = statfsSync(this.o.stateDir)
      return s.bavail * s.bsize >= bytes
    } catch {
      return false
    }
  }

  /** Writes the reserve file (durably); false when the disk would not take it. */
  private makeReserve(): boolean {
    const file = join(this.o.stateDir, RESERVE_FILE)
    let fd: number | undefined
    try {
      fd = openSync(file, 'w', 0o600)
      const chunk = Buffer.alloc(64 * 1024)
      for (let n = 0; n < RESERVE_BYTES; n += chunk.length) writeSync(fd, chunk)
      fsyncSync(fd)
      return true
    } catch (err) {
      if (fd !== undefined) closeSync(fd)
      fd = undefined
      rmSync(file, { force: true })
      if (!isStorageError(err)) this.o.log.warn({ err }, 'could not write the state dir reserve')
      return false
    } finally {
      if (fd !== undefined) closeSync(fd)
    }
  }
}

function codeOf(err: unknown): string {
  for (let e = err, depth = 0; e && depth < 5; e = (e as { cause?: unknown }).cause, depth++) {
    const code = (e as { code?: unknown }).code
    if (typeof code === 'string' && STORAGE_CODES.test(code)) return code
  }
  return 'error'
}
