// Uptime proofs, device side (docs/proofs.md), plugged into the agent core: heartbeats
// signed into the device's chain, validator beacons followed, challenges answered.

import { readPublicKeyFile } from '../../protocol/keys.js'
import type { AgentCore, AgentExtension } from '../core/extension.js'
import { DeviceProofs } from './device-proofs.js'

export function proofExtension(core: AgentCore): { proofs: DeviceProofs; extension: AgentExtension } {
  const config = core.config()
  const validators = config.proof.validatorKeys.map(f => readPublicKeyFile(f))
  if (validators.length === 0) core.log.info('no validator key is trusted: heartbeats will cite no beacon (use --validator-key FILE)')
  const proofs = new DeviceProofs({
    db: core.db,
    identity: core.identity,
    fleet: config.fleet,
    outbox: core.outbox,
    clock: core.clock,
    config: config.proof,
    validators,
    replay: core.replay,
    skewMs: config.commands.skewS * 1000,
    telemetry: () => core.lastSample(),
    log: core.log.child({ mod: 'proof' }),
    metrics: core.metrics,
    onEvent: (kind, data) => core.publishEvent(kind, data),
    publishNow: (topic, payload) => core.publishNow(topic, payload),
  })
  return {
    proofs,
    extension: { name: 'proof', filters: () => proofs.filters(), handle: (topic, payload) => proofs.handle(topic, payload), start: () => proofs.start(), stop: () => proofs.stop() },
  }
}
