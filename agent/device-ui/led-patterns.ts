// What the status LED says: the agent states it can show, which wins when several hold,
// and the blink pattern of each. Patterns are told apart by counting flashes, so they
// read the same on a red, green or blue LED and need no colour; each is a loop of on/off
// steps with a 2-3 s period, played by hw/gpio's LedPlayer.

import type { LedStep } from '../../hw/gpio/index.js'

/** Every state, most urgent first: the order ledStateFor() applies. */
export const LED_STATES = ['provisioning-error', 'disk-full', 'updating', 'no-network', 'broker-unreachable', 'online'] as const
export type LedState = (typeof LED_STATES)[number]

export interface LedPattern {
  steps: readonly LedStep[]
  /** What an owner sees, for docs and `cairn` status output. */
  looks: string
}

const on = (ms: number): LedStep => ({ on: true, ms })
const off = (ms: number): LedStep => ({ on: false, ms })

export const LED_PATTERNS: Readonly<Record<LedState, LedPattern>> = {
  'provisioning-error': { steps: [on(150), off(150), on(150), off(150), on(150), off(1250)], looks: 'three quick flashes, pause' },
  'disk-full': { steps: [on(150), off(150), on(150), off(150), on(150), off(150), on(150), off(1150)], looks: 'four quick flashes, pause' },
  'broker-unreachable': { steps: [on(150), off(150), on(150), off(1550)], looks: 'two quick flashes, pause' },
  'no-network': { steps: [on(1000), off(1000)], looks: 'slow even blink, 1 s on / 1 s off' },
  updating: { steps: [on(150), off(150)], looks: 'fast flicker, about 3 per second' },
  online: { steps: [on(2850), off(150)], looks: 'on, with a short wink every 3 s (the agent is alive)' },
}

export interface AgentConditions {
  provisioningError: boolean
  /** The state dir cannot be written (agent/core/storage-health.ts). */
  diskFull?: boolean
  updating: boolean
  network: boolean
  broker: boolean
}

/** When several things hold at once, the one an owner must act on first wins. */
export function ledStateFor(c: AgentConditions): LedState {
  if (c.provisioningError) return 'provisioning-error'
  if (c.diskFull) return 'disk-full'
  if (c.updating) return 'updating'
  if (!c.network) return 'no-network'
  if (!c.broker) return 'broker-unreachable'
  return 'online'
}
