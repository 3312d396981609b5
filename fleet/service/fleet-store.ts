// The fleet service's storage, as one interface: what `cairn fleet serve` remembers of
// its fleet (the device registry and presence history, telemetry with its rollups,
// events). Every method is async and every query is bounded, so a server database
// (PostgreSQL, a later issue) can implement it without touching the callers; the SQL of
// the embedded SQLite store (sqlite-store.ts) stays portable for that reason. One
// contract suite (test/fleet/service/store-contract.ts) runs against every store.

/** What the console calls an alert (alerts.ts: what each means and when a row has it). */
export const ALERTS = ['offline', 'under-voltage', 'throttled', 'hot', 'disk', 'problem', 'outbox-backlog', 'update-failed', 'low-score'] as const
export type AlertKind = (typeof ALERTS)[number]

export interface AlertRules {
  /** offline for longer than this (a reboot is not an alert) */
  readonly offlineMs: number
  /** the hottest sensor at or above this */
  readonly hotC: number
  /** the root file system at least this full */
  readonly diskPercent: number
  /** the newest uptime score (ppm, from a pinned validator's attestation) below this */
  readonly scoreBelow: number
  /** the outbox holding at least this many messages the broker has not taken */
  readonly outboxQueued: number
  /** or its oldest waiting message this old, when the sample was taken */
  readonly outboxAgeMs: number
}

/** The device's outbox backlog as its newest telemetry reported it (agents before it
 * was added report none). */
/** A device's GPIO lines and status LED (protocol/messages.ts, telemetry `io`). */
export interface DeviceIo {
  readonly led?: { readonly pin: number; readonly shown: string; readonly source: 'agent' | 'api' }
  readonly lines: ReadonlyArray<{ readonly pin: number; readonly holder: string; readonly direction: 'in' | 'out'; readonly value?: 0 | 1 }>
}

interface OutboxBacklog {
  readonly queued: number
  readonly bytes: number
  /** when the oldest waiting message was queued; null: none waits */
  readonly oldestTs: number | null
}

/** A device's presence order: a status message applies only when its key is greater than
 * the stored one, so two processes sharing a subscription cannot set a device back to a
 * state it has left (docs/protocol.md, status). */
export type PresenceKey = readonly [since: number, conn: number, phase: 0 | 1, ts: number]

export interface StatusRecord {
  readonly device: string
  /** the message id: a status seen twice (a redelivery, two processes) counts once */
  readonly id: string
  readonly state: 'online' | 'offline'
  readonly reason?: string
  readonly key: PresenceKey
  readonly receivedAt: number
  readonly board: string
  readonly model: string
  readonly version: string
  readonly slot?: string
  readonly osVersion?: string
  readonly osSlot?: string
  readonly problems: readonly string[]
}

/** The numbers of one telemetry sample the service keeps (null: the board has none). */
export const METRICS = ['load1', 'cpuPercent', 'memPercent', 'diskPercent', 'tempC', 'rxBps', 'txBps', 'throttled', 'underVoltage', 'fanRpm', 'powerW', 'gpuPercent'] as const
export type Metric = (typeof METRICS)[number]
export type MetricValues = Readonly<Record<Metric, number | null>>

export interface TelemetryRecord {
  readonly device: string
  readonly id: string
  readonly ts: number
  readonly receivedAt: number
  readonly values: MetricValues
  readonly outbox?: OutboxBacklog
  /** the GPIO lines and status LED it reports, as JSON text (protocol: telemetry `io`) */
  readonly io?: string
}

export interface EventRecord {
  readonly device: string
  readonly id: string
  readonly ts: number
  readonly kind: string
  /** the event's data as JSON text, bounded by the ingest */
  readonly data: string
  /** an updater event (ota.*): where it puts the device's update, of which release, and
   * whose (the agent's updater, or Cairn OS's: `target: "os"`) */
  readonly ota?: { readonly phase: OtaPhase; readonly version: string | null; readonly target: ReleaseKind }
}

export interface DeviceRow {
  readonly id: string
  readonly firstSeen: number
  readonly lastSeen: number
  readonly state: 'online' | 'offline'
  /** when the device entered its current state (the status message's own time) */
  readonly stateSince: number
  readonly reason: string | null
  readonly board: string
  readonly model: string
  readonly version: string
  readonly slot: string | null
  readonly osVersion: string | null
  readonly osSlot: string | null
  readonly problems: readonly string[]
  readonly labels: Readonly<Record<string, string>>
  /** the newest telemetry sample's values, and its time */
  readonly telemetryTs: number | null
  readonly latest: MetricValues | null
  /** the outbox backlog its newest telemetry reported (null: none reported) */
  readonly outbox: OutboxBacklog | null
  /** the GPIO lines and status LED its newest telemetry reported (null: none) */
  readonly io: DeviceIo | null
  /** where its newest updater event (ota.*, not paused or pinned) put its update */
  readonly ota: { readonly phase: OtaPhase; readonly version: string | null; readonly at: number } | null
  /** its newest uptime score (ppm) and the epoch, from a pinned validator's attestation */
  readonly score: { readonly ppm: number; readonly epoch: number } | null
}

export const SORTS = ['id', 'state', 'lastSeen', 'board', 'version', 'tempC', 'load1'] as const
type DeviceSort = (typeof SORTS)[number]

export interface DeviceQuery {
  /** substring of the id, board, model, version or a label value */
  readonly search?: string
  readonly state?: 'online' | 'offline'
  readonly board?: string
  readonly version?: string
  /** `key` or `key=value` */
  readonly label?: string
  /** devices with this alert (or with any) under these rules at `now` */
  readonly alert?: { readonly kind: AlertKind | 'any'; readonly rules: AlertRules; readonly now: number }
  readonly sort: DeviceSort
  readonly order: 'asc' | 'desc'
  readonly offset: number
  readonly limit: number
}

export interface Transition {
  readonly state: 'online' | 'offline'
  readonly reason: string | null
  readonly at: number
}

export type Resolution = 'raw' | '1m' | '1h'

export interface SeriesPoint {
  readonly ts: number
  /** the average over the bucket (the sample itself for raw) */
  readonly values: MetricValues
}

export interface EventRow {
  readonly device: string
  readonly id: string
  readonly ts: number
  readonly kind: string
  readonly data: unknown
}

/** A command sent through the service, as its audit log keeps it. */
export interface CommandRecord {
  /** the signed envelope's id */
  readonly id: string
  readonly device: string
  /** the command's name (the envelope's type without `cmd.`) */
  readonly name: string
  /** the signer's key id: the operator whose key signed it (in their browser or CLI) */
  readonly operator: string
  /** who sent it through the service (an account, or `loopback` where there are none) */
  readonly by: string
  readonly sentAt: number
  readonly exp: number
  /** the signed command, as published */
  readonly envelope: string
}

/** The device's verified answer to a command. */
export interface CommandReply {
  readonly at: number
  readonly status: 'ok' | 'error'
  /** the reply's data (ok) or its error {code, message}, as JSON text */
  readonly result: string
  /** the signed reply, kept so anyone can check it again */
  readonly envelope: string
}

export interface CommandRow extends Omit<CommandRecord, 'envelope'> {
  /** sent: no verified reply yet (expired once past exp); ok/error: the device's answer */
  readonly state: 'sent' | 'expired' | 'ok' | 'error'
  readonly repliedAt: number | null
  readonly result: unknown
  /** how many messages that claimed to answer it were refused, and the last one's reason */
  readonly refused: number
  readonly refusedWhy: string | null
}

/** A device's signed task receipt that verified (protocol/task-format.ts checkReceipt). */
export interface ReceiptRecord {
  readonly device: string
  /** the receipt envelope's id */
  readonly id: string
  readonly task: string
  readonly type: string
  readonly outcome: 'done' | 'failed' | 'cancelled'
  /** the key that asked for the work (the device itself for a local task) */
  readonly dispatcher: string
  readonly finished: number
  readonly receivedAt: number
  /** the signed receipt, to check again offline (`cairn task verify`) */
  readonly payload: string
}

/** A pinned validator's signed uptime attestation that verified. */
export interface AttestationRecord {
  readonly validator: string
  readonly device: string
  readonly epoch: number
  /** ppm */
  readonly score: number
  readonly fraud: boolean
  readonly receivedAt: number
  readonly payload: string
}

/** Signed messages about a device that did not verify: counted, never stored. */
export type RefusalKind = 'receipt' | 'attestation'

/** Where a device's agent update stands, from its newest ota.* event (rollouts.ts). */
export const OTA_PHASES = ['available', 'downloading', 'staged', 'switching', 'committed', 'rolled-back', 'failed'] as const
export type OtaPhase = (typeof OTA_PHASES)[number]
/** The phases of an update under way: the overview counts these devices as updating. */
export const UPDATING: readonly OtaPhase[] = ['downloading', 'staged', 'switching']
/** The updater's events and where each puts a device's update (docs/ota.md, "Events"). */
export const PHASE_OF: Readonly<Record<string, OtaPhase>> = {
  'ota.available': 'available',
  'ota.download': 'downloading',
  'ota.staged': 'staged',
  'ota.switching': 'switching',
  'ota.committed': 'committed',
  'ota.rolled-back': 'rolled-back',
  'ota.failed': 'failed',
}

/** What an account may do: look (viewer); also send commands and set labels (operator);
 * also manage accounts (admin). */
export const ROLES = ['viewer', 'operator', 'admin'] as const
export type Role = (typeof ROLES)[number]
export const ACCOUNT_NAME = '^[a-z0-9][a-z0-9_.-]{0,31}$'

export interface AccountRecord {
  readonly name: string
  readonly role: Role
  /** passwords.ts's self-describing scrypt hash */
  readonly passwordHash: string
  readonly created: number
  /** failed logins in a row, and until when the next attempt is refused unseen */
  readonly failed: number
  readonly lockedUntil: number
}

export interface SessionRecord {
  /** SHA-256 of the cookie's secret: a copy of the store holds no usable session */
  readonly idHash: string
  readonly account: string
  /** the session's CSRF token, sent back in a header with every change */
  readonly csrf: string
  readonly created: number
  readonly expires: number
}

/** Where a newest-first page ended: its last row's time and, after it, that row's keys
 * in sort order (commands and receipts: id; a device's events: id; the fleet's events:
 * device, id). The next page holds the rows that sort after it: older, or as old with
 * lesser keys, so rows of the same millisecond are neither skipped nor repeated. A time
 * alone: the rows before it. */
export interface PageCursor {
  readonly at: number
  readonly keys?: readonly string[]
}

/** What a release updates: the agent bundle, or (Cairn OS) the OS slot pair. */
export type ReleaseKind = 'agent' | 'os'

/** A release as the verified TUF metadata publishes it, its targets taken together
 * (one per architecture or board). */
export interface ReleaseSummary {
  readonly kind: ReleaseKind
  readonly version: string
  readonly channel: string
  /** the staged rollout, 0–100 (the highest of its targets') */
  readonly rollout: number
  /** how many targets the metadata lists for it; 0: withdrawn */
  readonly targets: number
  readonly arch: readonly string[] | null
  readonly boards: readonly string[] | null
}

/** One verified listing of a release repository, to record. */
export interface ReleaseListingRecord {
  /** the repository (its URL): versions are compared per source */
  readonly source: string
  /** the verified targets metadata's version: a listing older than one recorded is stale */
  readonly version: number
  readonly releases: readonly ReleaseSummary[]
}

export interface ReleaseState extends ReleaseSummary {
  /** when the service first saw it published, and when it last saw it change */
  readonly firstSeen: number
  readonly changed: number
  /** every change seen, oldest first: its rollout and targets from then on */
  readonly history: ReadonlyArray<{ readonly ts: number; readonly rollout: number; readonly targets: number }>
}

/** The updates that ended, per time bucket: committed, rolled back, failed. */
export interface OutcomeBucket {
  readonly ts: number
  readonly committed: number
  readonly rolledBack: number
  readonly failed: number
}

export interface Retention {
  readonly rawMs: number
  readonly minuteMs: number
  readonly hourMs: number
}

/** One device message to store, as the ingest checked it. */
export type IngestItem = { kind: 'status'; record: StatusRecord } | { kind: 'telemetry'; record: TelemetryRecord } | { kind: 'event'; record: EventRecord }

export interface FleetStore {
  /** Applies presence (idempotent by message id); true when the device's state changed. */
  applyStatus(r: StatusRecord): Promise<boolean>
  addTelemetry(r: TelemetryRecord): Promise<void>
  addEvent(r: EventRecord): Promise<void>
  /** Stores several messages in one transaction (all or none), each as the three calls
   * above would, in order; for each, whether a status changed its device's state. */
  ingest(items: readonly IngestItem[]): Promise<boolean[]>
  listDevices(q: DeviceQuery): Promise<{ total: number; items: DeviceRow[] }>
  getDevice(id: string): Promise<DeviceRow | undefined>
  /** Presence history in the device's own order (not arrival order), newest last. */
  transitions(id: string, from: number, to: number, limit: number): Promise<Transition[]>
  /** The newest `limit` points of a series; with `bucketMs`, averaged into buckets that long
   * (aligned to multiples of it; a chart's range in at most a chart's width of points). */
  series(id: string, resolution: Resolution, from: number, to: number, limit: number, bucketMs?: number): Promise<SeriesPoint[]>
  /** Events in [from, to], newest first (then by device and id, descending). */
  events(q: { device?: string; from: number; to: number; before?: PageCursor; limit: number }): Promise<EventRow[]>
  setLabels(id: string, labels: Readonly<Record<string, string>>): Promise<boolean>
  /** Logs a command before it is published; false when its id is logged already (a replay). */
  addCommand(r: CommandRecord): Promise<boolean>
  /** A command's operator and device, for checking a reply against them. */
  commandTarget(id: string): Promise<{ device: string; operator: string } | undefined>
  /** Records the verified reply; false when the command has one already (the first counts). */
  setReply(id: string, reply: CommandReply): Promise<boolean>
  /** Counts a message that claimed to answer the command and did not verify. */
  refuseReply(id: string, why: string): Promise<void>
  /** The audit log, newest first (then by id, descending); `before`: the next page. */
  commands(q: { device?: string; before?: PageCursor; limit: number; now: number }): Promise<CommandRow[]>
  getCommand(id: string, now: number): Promise<(CommandRow & { envelope: string; replyEnvelope: string | null }) | undefined>
  /** Devices, online, offline, and updating (their newest updater event: downloading, staged, switching). */
  counts(): Promise<{ devices: number; online: number; offline: number; updating: number }>
  /** How many devices have each alert, and how many have any, under these rules at `now`. */
  alertCounts(rules: AlertRules, now: number): Promise<Record<AlertKind | 'any', number>>
  /** Each device's newest event of its agent updater (ota.*, but not paused/pinned), newest first. */
  otaLatest(limit: number): Promise<Array<{ device: string; kind: string; ts: number; data: unknown }>>
  /** Devices by the agent version they report, with how many of them are online. */
  versionCounts(): Promise<Array<{ version: string; devices: number; online: number }>>
  /** Devices by the Cairn OS release they report (devices not on Cairn OS left out). */
  osVersionCounts(): Promise<Array<{ version: string; devices: number; online: number }>>
  /** Records the releases a repository publishes now (a verified listing): a release new
   * or changed since the last record gets a row at `now`, and one no longer listed a row
   * as withdrawn. A listing from older metadata than one recorded already is stale and
   * changes nothing. Idempotent, so every process may record the same listing; a store
   * must serialise these calls (SQLite: BEGIN IMMEDIATE; PostgreSQL: a transaction-level
   * advisory lock) so two processes cannot both add a change. */
  recordReleases(now: number, listing: ReleaseListingRecord): Promise<{ added: number; stale: boolean }>
  /** Every release ever recorded (at most 1,000), newest first sight first, with up to
   * `historyLimit` of its changes each (the newest, oldest first). */
  releases(historyLimit: number): Promise<ReleaseState[]>
  /** How many updates of each published release ended committed, rolled back or failed
   * (by the updaters' events; a device that failed twice counts twice), all kept or only
   * those before `before`. */
  outcomeTotals(q?: { before?: number }): Promise<Array<{ kind: ReleaseKind; version: string; committed: number; rolledBack: number; failed: number }>>
  /** One release's ended updates per bucket of `bucketMs` in [from, to), oldest first,
   * buckets without any left out. */
  outcomes(q: { kind: ReleaseKind; version: string; from: number; to: number; bucketMs: number }): Promise<OutcomeBucket[]>
  /** Keeps a verified receipt; false when kept already (by its id). */
  addReceipt(r: ReceiptRecord): Promise<boolean>
  /** A device's receipts, newest finished first (then by id, descending); `before`: the next page. */
  receipts(q: { device: string; before?: PageCursor; limit: number }): Promise<Array<Omit<ReceiptRecord, 'payload'> & { payload: unknown }>>
  /** Keeps a verified attestation; false when that validator's one for the epoch is kept already. */
  addAttestation(a: AttestationRecord): Promise<boolean>
  attestations(q: { device: string; limit: number }): Promise<Array<Omit<AttestationRecord, 'payload'> & { payload: unknown }>>
  /** Per validator: how many devices and attestations it has here, its newest epoch, when
   * its newest arrived, and its mean score (ppm). */
  validatorStats(): Promise<Array<{ validator: string; devices: number; attestations: number; lastEpoch: number; lastAt: number; meanScore: number }>>
  /** How many refusals of this kind there were over all devices. */
  refusedTotal(kind: RefusalKind): Promise<number>
  /** Counts a refused message about a device, with the last reason; the same message again
   * (by `hash`: a retained one redelivered, or seen by another process) counts once. */
  addRefusal(device: string, kind: RefusalKind, reason: string, at: number, hash: string): Promise<void>
  refusals(device: string): Promise<Array<{ kind: RefusalKind; count: number; lastReason: string; lastAt: number }>>
  /** Adds an account, or replaces its role and password; a new password ends its sessions. */
  putAccount(a: { name: string; role: Role; passwordHash: string; created: number }): Promise<'added' | 'updated'>
  /** Adds an account; false when one of that name exists (it is left as it is). */
  addAccount(a: { name: string; role: Role; passwordHash: string; created: number }): Promise<boolean>
  /** Changes only what is given, in one step (a role change cannot undo a new password
   * set meanwhile); a new password ends the account's sessions. False: no such account. */
  updateAccount(name: string, change: { role?: Role; passwordHash?: string }): Promise<boolean>
  getAccount(name: string): Promise<AccountRecord | undefined>
  listAccounts(): Promise<Array<{ name: string; role: Role; created: number }>>
  /** Removes an account and its sessions. */
  removeAccount(name: string): Promise<boolean>
  accountCount(): Promise<number>
  /** A failed sign-in, in one transaction: the count goes up, and the account waits until
   * `lockUntil(the new count)`. Resolves with the new count. */
  loginFailed(name: string, lockUntil: (failed: number) => number): Promise<number>
  addSession(s: SessionRecord): Promise<void>
  /** A live session with its account's role now (a changed role applies at once). */
  getSession(idHash: string, now: number): Promise<(SessionRecord & { role: Role }) | undefined>
  deleteSession(idHash: string): Promise<void>
  /** Rolls closed minutes and hours up and drops what is past retention. */
  maintain(now: number, retention: Retention): Promise<{ minutes: number; hours: number; deleted: number }>
  close(): Promise<void>
}

/** Picks the resolution a time range is best drawn at: raw up to 6 h, minutes up to 10 days, hours beyond. */
export function resolutionFor(rangeMs: number): Resolution {
  if (rangeMs <= 6 * 3_600_000) return 'raw'
  if (rangeMs <= 10 * 86_400_000) return '1m'
  return '1h'
}
