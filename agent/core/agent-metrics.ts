// The agent's metric names for /metrics (described once, here) and the link and outbox
// gauges refreshed every second.

import type { Metrics } from './metrics.js'

export function describeAgentMetrics(m: Metrics): void {
  m.describe('cairn_outbox_depth', 'messages waiting for a broker acknowledgement')
  m.describe('cairn_outbox_bytes', 'bytes held by the outbox')
  m.describe('cairn_mqtt_connected', '1 while connected to the broker')
  m.describe('cairn_mqtt_reconnects_total', 'reconnection attempts')
  m.describe('cairn_mqtt_inflight', 'unacknowledged QoS 1 publishes')
  m.describe('cairn_messages_sent_total', 'messages acknowledged by the broker, by class')
  m.describe('cairn_commands_total', 'commands handled, by result code')
  m.describe('cairn_outbox_evicted_total', 'messages evicted by the outbox size cap, by class')
  m.describe('cairn_replies_suppressed_total', 'refusal replies dropped by the rate limit')
  m.describe('cairn_messages_refused_total', 'messages the broker refused for good (dropped)')
  m.describe('cairn_heartbeats_total', 'uptime heartbeats signed')
  m.describe('cairn_beacons_total', 'new genuine validator beacons seen')
  m.describe('cairn_challenges_answered_total', 'validator challenges answered')
  m.describe('cairn_proof_refused_total', 'beacons, challenges and fetch requests refused, by code')
}

export function refreshLinkGauges(m: Metrics, outbox: { depth(): number; sizeBytes(): number }, link: { readonly connected: boolean; inflightCount(): number }): void {
  m.set('cairn_outbox_depth', outbox.depth())
  m.set('cairn_outbox_bytes', outbox.sizeBytes())
  m.set('cairn_mqtt_connected', link.connected ? 1 : 0)
  m.set('cairn_mqtt_inflight', link.inflightCount())
}
