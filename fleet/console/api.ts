// The console's view of the API (/api/v1, docs/api/fleet-openapi.json): typed fetches
// that throw the API's own error message.

import type { AlertKind, AlertRules } from '../service/alerts.js'
import type { CommandRow, DeviceRow, Metric, OtaPhase, SeriesPoint, Transition } from '../service/fleet-store.js'
import type { SignedCommand } from './signer.js'

export type { CommandRow, Metric }
/** Every alert kind, as the service names them (one list: fleet-store.ts). */
export { ALERTS } from '../service/fleet-store.js'
export type Device = DeviceRow & { readonly alerts: AlertKind[] }

export interface Fleet {
  fleet: string
  now: number
  counts: { devices: number; online: number; offline: number; updating: number }
  alerts: Record<AlertKind | 'any', number>
  alertRules: AlertRules
  alertText: Record<AlertKind, string>
  ingest: { stored: Record<string, number>; refused: number; transitions: number }
}

export interface Page<T> {
  total: number
  offset: number
  limit: number
  items: T[]
}

export interface Series {
  from: number
  to: number
  resolution: 'raw' | '1m' | '1h'
  bucketMs?: number
  metrics: Metric[]
  points: SeriesPoint[]
}

export interface EventItem {
  device: string
  id: string
  ts: number
  kind: string
  data: unknown
}

class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message)
  }
}

async function get<T>(path: string, query: Record<string, string | number | undefined> = {}): Promise<T> {
  const qs = new URLSearchParams()
  for (const [k, v] of Object.entries(query)) if (v !== undefined && v !== '') qs.set(k, String(v))
  return call<T>(`/api/v1${path}${qs.size > 0 ? `?${qs}` : ''}`, { headers: { accept: 'application/json' } })
}

/** Whether accounts apply, and who is signed in (GET /api/v1/session). */
export interface Session {
  auth: boolean
  account?: { name: string; role: 'viewer' | 'operator' | 'admin' }
  csrf?: string
  expires?: number
}

// The session's CSRF token, sent with every change; the session itself is an HttpOnly
// cookie this script never sees.
let current: Session = { auth: false }
let signedOut: (() => void) | undefined

/** Called when the service says the session is gone (expired, signed out elsewhere). */
export function onSignedOut(fn: () => void): void {
  signedOut = fn
}

/** The live stream said the session is gone: as a 401 would. */
export function sessionEnded(): void {
  signedOut?.()
}

/** Whether the one signed in (or anyone, where accounts do not apply) may send commands. */
export const mayOperate = () => !current.auth || current.account?.role === 'operator' || current.account?.role === 'admin'

async function call<T>(url: string, init: RequestInit): Promise<T> {
  const method = init.method ?? 'GET'
  const headers = new Headers(init.headers)
  if (method !== 'GET' && current.csrf) headers.set('x-cairn-csrf', current.csrf)
  const res = await fetch(url, { ...init, headers })
  const body = (await res.json().catch(() => null)) as { error?: { code: string; message: string } } | null
  if (res.status === 401 && !url.startsWith('/api/v1/session')) signedOut?.()
  if (!res.ok) throw new ApiError(res.status, body?.error?.code ?? 'HTTP', body?.error?.message ?? `${res.status} ${res.statusText}`)
  return body as T
}

const keep = (s: Session) => ((current = s), s)
export const session = () => get<Session>('/session').then(keep)
export const signIn = (name: string, password: string) =>
  call<Session>('/api/v1/session', { method: 'POST', headers: { accept: 'application/json', 'content-type': 'application/json' }, body: JSON.stringify({ name, password }) }).then(keep)
export const signOut = () => call<Session>('/api/v1/session', { method: 'DELETE', headers: { accept: 'application/json' } }).then(keep)

export const fleet = () => get<Fleet>('/fleet')
export const devices = (q: Record<string, string | number | undefined>) => get<Page<Device>>('/devices', q)
export const device = (id: string) => get<Device>(`/devices/${encodeURIComponent(id)}`)
/** A range in at most `points` points (a chart's width): the service averages into buckets. */
export const telemetry = (id: string, from: number, to: number, points = 1500) => get<Series>(`/devices/${encodeURIComponent(id)}/telemetry`, { from, to, points, limit: 5000 })
export const events = (id: string, from: number, to: number) => get<{ items: EventItem[] }>(`/devices/${encodeURIComponent(id)}/events`, { from, to, limit: 200 })
export const presence = (id: string, from: number, to: number) => get<{ items: Transition[] }>(`/devices/${encodeURIComponent(id)}/presence`, { from, to, limit: 200 })
export const commands = (id: string) => get<{ items: CommandRow[] }>(`/devices/${encodeURIComponent(id)}/commands`, { limit: 20 })
/** Hands a command signed in this browser to the service, which checks, logs and publishes it. */
export const sendCommand = (id: string, cmd: SignedCommand) =>
  call<CommandRow>(`/api/v1/devices/${encodeURIComponent(id)}/commands`, {
    method: 'POST',
    headers: { accept: 'application/json', 'content-type': 'application/json' },
    body: JSON.stringify(cmd),
  })

export interface Refused {
  count: number
  lastReason: string
  lastAt: number
}
export interface Receipt {
  id: string
  task: string
  type: string
  outcome: 'done' | 'failed' | 'cancelled'
  dispatcher: string
  finished: number
  payload: { body: { error: { code: string; message: string } | null; timings: Record<string, number> } }
}
export interface AttestationItem {
  validator: string
  epoch: number
  score: number
  fraud: boolean
  receivedAt: number
  payload: { body: { params: { slotMs: number; epochSlots: number }; counts: { slotsLive: number; slotsCovered: number; challenges: number; passed: number } } }
}
export const receipts = (id: string) => get<{ items: Receipt[]; refused: Refused | null }>(`/devices/${encodeURIComponent(id)}/receipts`, { limit: 20 })
export const attestations = (id: string) => get<{ items: AttestationItem[]; refused: Refused | null }>(`/devices/${encodeURIComponent(id)}/attestations`, { limit: 30 })

export interface Rollouts {
  versions: Array<{ version: string; devices: number; online: number }>
  releases: Array<{ version: string; devices: number; phases: Record<OtaPhase, number>; reasons: Record<string, number> }>
  recent: Array<{ device: string; phase: OtaPhase; version: string | null; from: string | null; reason: string | null; ts: number }>
  pause: { paused: boolean; by: string; id: string; iat: number; exp: number; expired: boolean } | null
  /** the release repository followed (fleet serve --release-url); null: none */
  repository: { url: string; checkedAt: number | null; ok: boolean; error: string | null; targetsVersion: number | null; expires: string | null; verifiedAt: number | null } | null
  published: Published[]
}
export interface Published {
  kind: 'agent' | 'os'
  version: string
  channel: string
  rollout: number
  targets: number
  arch: string[] | null
  boards: string[] | null
  firstSeen: number
  changed: number
  history: Array<{ ts: number; rollout: number; targets: number }>
  withdrawn: boolean
  /** devices running it now */
  running: number
  committed: number
  rolledBack: number
  failed: number
}
export interface Outcomes {
  from: number
  to: number
  bucketMs: number
  /** the updates that ended before `from` (the running totals start there) */
  before: { committed: number; rolledBack: number; failed: number }
  items: Array<{ ts: number; committed: number; rolledBack: number; failed: number }>
  rollout: Array<{ channel: string; history: Array<{ ts: number; rollout: number; targets: number }> }>
}
export const rollouts = () => get<Rollouts>('/rollouts')
export const outcomes = (kind: Published['kind'], version: string, from: number, to: number) => get<Outcomes>('/rollouts/outcomes', { kind, version, from, to })
/** A fleet-wide pause-updates signed in this browser: the service publishes it retained. */
export const pauseUpdates = (cmd: SignedCommand) =>
  call<CommandRow>('/api/v1/rollouts/pause', { method: 'POST', headers: { accept: 'application/json', 'content-type': 'application/json' }, body: JSON.stringify(cmd) })

export interface Validators {
  items: Array<{ validator: string; devices: number; attestations: number; lastEpoch: number | null; lastAt: number | null; meanScore: number | null }>
  refused: number
}
export const validators = () => get<Validators>('/validators')

export type Role = 'viewer' | 'operator' | 'admin'
export interface Account {
  name: string
  role: Role
  created: number
}
export const accounts = () => get<{ items: Account[] }>('/accounts')
/** Changes an account: only what is given (a role, a password). */
export const changeAccount = (name: string, change: { role?: Role; password?: string }) =>
  call<{ name: string; result: 'updated' }>(`/api/v1/accounts/${encodeURIComponent(name)}`, {
    method: 'PUT',
    headers: { accept: 'application/json', 'content-type': 'application/json' },
    body: JSON.stringify(change),
  })
/** Adds an account; refused (412) where one of that name exists. */
export const addAccount = (name: string, role: Role, password: string) =>
  call<{ name: string; result: 'added' }>(`/api/v1/accounts/${encodeURIComponent(name)}`, {
    method: 'PUT',
    headers: { accept: 'application/json', 'content-type': 'application/json', 'if-none-match': '*' },
    body: JSON.stringify({ role, password }),
  })
export const removeAccount = (name: string) => call<{ removed: string }>(`/api/v1/accounts/${encodeURIComponent(name)}`, { method: 'DELETE', headers: { accept: 'application/json' } })
