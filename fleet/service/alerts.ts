// What the console's overview calls an alert: a device that needs the operator now.
// Each kind is a condition on the device row (its presence, newest telemetry sample and
// the outbox backlog that sample reported),
// so the store can filter and count by it in SQL (sqlite-store.ts, alertCondition) and
// the API can name a row's alerts from the row alone (alertsOf); both read these rules.

import type { AlertKind, AlertRules, DeviceRow } from './fleet-store.js'

export { ALERTS, type AlertKind, type AlertRules } from './fleet-store.js'

export const DEFAULT_ALERT_RULES: AlertRules = { offlineMs: 10 * 60_000, hotC: 80, diskPercent: 90, scoreBelow: 900_000, outboxQueued: 1000, outboxAgeMs: 30 * 60_000 }

/** What each alert means, for the console and the API document. */
export const ALERT_TEXT: Record<AlertKind, string> = {
  offline: 'offline for longer than the rule allows',
  'under-voltage': 'the board reports under-voltage now (a weak power supply)',
  throttled: 'the board is throttled or frequency-capped now',
  hot: 'the hottest sensor is at or above the limit',
  disk: 'the root file system is nearly full',
  problem: 'the agent reports a problem in its status (for example DISK_FULL)',
  'outbox-backlog': 'its outbox holds many messages the broker has not taken, or an old one: its link is slow, refused or flapping',
  'update-failed': 'its newest update was rolled back or failed',
  'low-score': 'its newest uptime score (from a pinned validator) is below the limit',
}

/** A device row's alerts at `now`; telemetry alerts only while the device is online. */
export function alertsOf(d: DeviceRow, rules: AlertRules, now: number): AlertKind[] {
  const out: AlertKind[] = []
  if (d.state === 'offline' && d.stateSince < now - rules.offlineMs) out.push('offline')
  const v = d.state === 'online' ? d.latest : null
  if (v) {
    if ((v.underVoltage ?? 0) > 0) out.push('under-voltage')
    if ((v.throttled ?? 0) > 0) out.push('throttled')
    if (v.tempC !== null && v.tempC >= rules.hotC) out.push('hot')
  }
  if (d.latest?.diskPercent != null && d.latest.diskPercent >= rules.diskPercent) out.push('disk')
  if (d.problems.length > 0) out.push('problem')
  const o = d.state === 'online' ? d.outbox : null
  if (o && (o.queued >= rules.outboxQueued || (o.oldestTs !== null && d.telemetryTs !== null && o.oldestTs <= d.telemetryTs - rules.outboxAgeMs))) out.push('outbox-backlog')
  if (d.ota?.phase === 'failed' || d.ota?.phase === 'rolled-back') out.push('update-failed')
  if (d.score !== null && d.score.ppm < rules.scoreBelow) out.push('low-score')
  return out
}
