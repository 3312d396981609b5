// Every MQTT topic Cairn uses, built in one place. All live under cairn/v1/<fleet>/.

export const TOPIC_ROOT = 'cairn/v1'

export function deviceTopics(fleet: string, device: string) {
  const base = `${TOPIC_ROOT}/${fleet}/${device}`
  return {
    base,
    status: `${base}/status`,
    telemetry: `${base}/telemetry`,
    event: `${base}/event`,
    reply: `${base}/reply`,
    cmd: (name: string) => `${base}/cmd/${name}`,
    cmdFilter: `${base}/cmd/+`,
  } as const
}

/** The fleet's OTA release topic (docs/ota.md): an untrusted hint to check for a
 * release, or a signed fleet-wide command such as `cairn fleet rollout halt`. */
export function releaseTopic(fleet: string): string {
  return `${TOPIC_ROOT}/${fleet}/release`
}

/** Uptime-proof topics seen from one device (docs/proofs.md). */
export function proofTopics(fleet: string, device: string) {
  const root = `${TOPIC_ROOT}/${fleet}`
  return {
    /** Heartbeats and challenge responses, device -> validators. */
    proof: `${root}/${device}/proof`,
    /** Signed challenges, validator -> device. */
    challenge: `${root}/${device}/challenge`,
    /** Signed requests to republish stored heartbeats, validator -> device. */
    fetch: `${root}/${device}/proof-fetch`,
    beaconPrefix: `${root}/beacon/`,
    beaconFilter: `${root}/beacon/+`,
  } as const
}

/** Task topics of one device (docs/tasks.md). */
export function taskTopics(fleet: string, device: string) {
  const base = `${TOPIC_ROOT}/${fleet}/${device}/task`
  return {
    /** Signed task.request, dispatcher -> device. */
    request: `${base}/request`,
    /** Signed task.cancel, dispatcher or operator -> device. */
    cancel: `${base}/cancel`,
    /** Unsigned accepted/rejected/progress/... updates, device -> dispatcher. */
    update: `${base}/update`,
    /** Signed task.receipt, device -> dispatcher (and anyone who pays for work). */
    receipt: `${base}/receipt`,
  } as const
}

/** Signed cache serve receipts (cache.served), device -> anyone who pays for bytes (docs/cache.md). */
export function cacheServedTopic(fleet: string, device: string): string {
  return `${TOPIC_ROOT}/${fleet}/${device}/cache/served`
}

/** Fleet-wide topics a validator uses. */
export function validatorTopics(fleet: string, validator: string) {
  const root = `${TOPIC_ROOT}/${fleet}`
  return {
    beacon: `${root}/beacon/${validator}`,
    proofFilter: `${root}/+/proof`,
    attestation: (device: string) => `${root}/attestation/${validator}/${device}`,
    evidence: `${root}/evidence/${validator}`,
    challenge: (device: string) => `${root}/${device}/challenge`,
    fetch: (device: string) => `${root}/${device}/proof-fetch`,
  } as const
}

/** The device id from a `cairn/v1/<fleet>/<device>/proof` topic, or null. */
export function proofDevice(topic: string, fleet: string): string | null {
  const prefix = `${TOPIC_ROOT}/${fleet}/`
  if (!topic.startsWith(prefix) || !topic.endsWith('/proof')) return null
  const dev = topic.slice(prefix.length, -'/proof'.length)
  return /^[a-z2-7]{52}$/.test(dev) ? dev : null
}

/** The command name from an incoming cmd topic, or null if the topic is not one. */
export function commandName(topic: string, fleet: string, device: string): string | null {
  const prefix = `${TOPIC_ROOT}/${fleet}/${device}/cmd/`
  if (!topic.startsWith(prefix)) return null
  const name = topic.slice(prefix.length)
  return /^[a-z][a-z0-9-]{0,47}$/.test(name) ? name : null
}

/** A response topic the device may publish to: its own reply topic or a level below it
 * (the operator's per-request inbox), no wildcards. The response topic is not signed, so
 * anything wider would let a stranger make the device publish on other devices' topics. */
export function isAllowedResponseTopic(topic: string, replyTopic: string): boolean {
  if (topic === replyTopic) return true
  // NUL is refused on purpose: MQTT forbids it in topic names
  // eslint-disable-next-line no-control-regex
  return topic.startsWith(`${replyTopic}/`) && topic.length <= 256 && !/[+#\u0000]/.test(topic) && !topic.slice(replyTopic.length + 1).includes('/')
}
