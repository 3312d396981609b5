// `cairn fleet rollout status|halt|resume`: the operator's view of a rollout and its
// emergency brake.
//   status: reads every device's retained status on the fleet for a few seconds and
//     counts versions (agent releases, or with --os the Cairn OS releases), plus the
//     ota.* events of that updater seen meanwhile (events are not retained:
//     the outcome counts cover what happened during the window; the version counts
//     cover the whole fleet).
//   halt / resume: ONE signed fleet-wide pause-updates command (envelope sub "*"),
//     published retained on cairn/v1/<fleet>/release; each device verifies it against
//     its operator keys like any command. The operator also runs
//     `cairn release set-rollout --version V --pct 0`, so that the next signed
//     metadata stops the release for devices that missed the broadcast.

import { Command } from 'commander'
import { brokerConnection, withBrokerFlags, type BrokerConnection, type BrokerFlags } from '../protocol/broker-flags.js'
import type { IClientOptions } from 'mqtt'
import { signEnvelope, type Envelope } from '../protocol/envelope.js'
import { CairnError } from '../protocol/errors.js'
import { newId } from '../protocol/ids.js'
import { readKeyPairFile, type KeyPair } from '../protocol/keys.js'
import { connectTool } from '../protocol/mqtt-client.js'
import { releaseTopic, TOPIC_ROOT } from '../protocol/topics.js'

type Out = { write(s: string): unknown }

export interface RolloutReport {
  fleet: string
  seconds: number
  devices: number
  online: number
  /** Devices by the version their retained status reports. */
  versions: Record<string, { devices: number; online: number }>
  /** ota.* events seen in the window, by kind. */
  events: Record<string, number>
  /** For --version: how that release is doing. */
  release?: { version: string; running: number; committed: number; rolledBack: number; failed: number; reasons: Record<string, number> }
}

export interface StatusOptions {
  url: string
  fleet: string
  version?: string
  /** Count OS releases (Cairn OS: status.os.version, events with target "os") instead
   * of agent releases. */
  os?: boolean
  seconds: number
  clientOptions?: IClientOptions
  mqttVersion?: 4 | 5
}

export async function rolloutStatus(o: StatusOptions): Promise<RolloutReport> {
  const client = await connectTool({ url: o.url, clientOptions: o.clientOptions, mqttVersion: o.mqttVersion, clean: true })
  const status = new Map<string, { state: string; version: string; ts: number }>()
  const events = new Map<string, { kind: string; data: Record<string, unknown> }>()
  try {
    client.on('message', (topic, payload) => {
      let msg: Record<string, unknown>
      try {
        msg = JSON.parse(payload.toString('utf8')) as Record<string, unknown>
      } catch {
        return
      }
      // agent releases: status.version, events without a target; OS releases (--os):
      // status.os.version, events with target "os" (the two may share version numbers)
      const os = msg.os as { version?: unknown } | undefined
      const version = o.os ? (typeof os?.version === 'string' ? os.version : '(not Cairn OS)') : msg.version
      if (topic.endsWith('/status') && typeof msg.device === 'string' && typeof version === 'string') {
        const prev = status.get(msg.device)
        const ts = Number(msg.ts) || 0
        if (!prev || ts >= prev.ts) status.set(msg.device, { state: String(msg.state), version, ts })
      } else if (topic.endsWith('/event') && typeof msg.kind === 'string' && msg.kind.startsWith('ota.') && typeof msg.id === 'string') {
        const data = (msg.data ?? {}) as Record<string, unknown>
        if ((data.target === 'os') === (o.os === true)) events.set(msg.id, { kind: msg.kind, data })
      }
    })
    const root = `${TOPIC_ROOT}/${o.fleet}`
    await client.subscribeAsync([`${root}/+/status`, `${root}/+/event`], { qos: 1 })
    await new Promise(r => setTimeout(r, o.seconds * 1000))
  } finally {
    await client.endAsync()
  }
  const report: RolloutReport = { fleet: o.fleet, seconds: o.seconds, devices: status.size, online: 0, versions: {}, events: {} }
  for (const s of status.values()) {
    const v = (report.versions[s.version] ??= { devices: 0, online: 0 })
    v.devices++
    if (s.state === 'online') {
      v.online++
      report.online++
    }
  }
  for (const e of events.values()) report.events[e.kind] = (report.events[e.kind] ?? 0) + 1
  if (o.version !== undefined) {
    const rel = { version: o.version, running: report.versions[o.version]?.devices ?? 0, committed: 0, rolledBack: 0, failed: 0, reasons: {} as Record<string, number> }
    for (const e of events.values()) {
      if (e.data.version !== o.version) continue
      if (e.kind === 'ota.committed') rel.committed++
      if (e.kind === 'ota.rolled-back' || e.kind === 'ota.failed') {
        if (e.kind === 'ota.rolled-back') rel.rolledBack++
        else rel.failed++
        const reason = String(e.data.reason ?? 'unknown')
        rel.reasons[reason] = (rel.reasons[reason] ?? 0) + 1
      }
    }
    report.release = rel
  }
  return report
}

function formatReport(r: RolloutReport): string {
  const lines = [`fleet ${r.fleet}: ${r.devices} device(s), ${r.online} online (retained status, read for ${r.seconds} s)`]
  const versions = Object.entries(r.versions).sort(([a], [b]) => (a < b ? 1 : -1))
  for (const [v, c] of versions) lines.push(`  ${v.padEnd(16)} ${String(c.devices).padStart(5)} device(s), ${c.online} online`)
  const kinds = Object.entries(r.events)
  lines.push(kinds.length ? `ota events seen: ${kinds.map(([k, n]) => `${k} ${n}`).join(', ')}` : 'ota events seen: none (events are not retained: only those published during the window)')
  if (r.release) {
    const x = r.release
    lines.push(`release ${x.version}: running on ${x.running}; in the window: ${x.committed} committed, ${x.rolledBack} rolled back, ${x.failed} failed`)
    for (const [reason, n] of Object.entries(x.reasons)) lines.push(`  ${reason}: ${n}`)
  }
  return lines.join('\n')
}

/** The signed fleet-wide pause-updates command (sub "*"). */
function signPause(key: KeyPair, fleet: string, paused: boolean, ttlMs: number, now = Date.now()): Envelope {
  return signEnvelope(key, { type: 'cmd.pause-updates', id: newId(now), fleet, sub: '*', iat: now, exp: now + ttlMs, body: { paused } })
}

interface HaltOptions {
  url: string
  fleet: string
  key: KeyPair
  paused: boolean
  ttlMs: number
  clientOptions?: IClientOptions
  mqttVersion?: 4 | 5
}

/** Publishes the signed pause (or resume), retained, so devices that connect later
 * still get it until it expires. */
async function publishPause(o: HaltOptions): Promise<Envelope> {
  const env = signPause(o.key, o.fleet, o.paused, o.ttlMs)
  const v5 = (o.mqttVersion ?? 5) === 5
  const client = await connectTool({ url: o.url, clientOptions: o.clientOptions, mqttVersion: o.mqttVersion, clean: true })
  try {
    await client.publishAsync(releaseTopic(o.fleet), JSON.stringify(env), { qos: 1, retain: true, ...(v5 ? { properties: { messageExpiryInterval: Math.ceil(o.ttlMs / 1000) } } : {}) })
  } finally {
    await client.endAsync()
  }
  return env
}

interface ConnectOptions extends BrokerFlags {
  fleet: string
}

/** The broker options every rollout command takes. */
function withBroker(cmd: Command): Command {
  return withBrokerFlags(cmd).requiredOption('--fleet <name>', 'the fleet name')
}

const connection = (o: ConnectOptions): BrokerConnection => brokerConnection(o)

export function rolloutCommand(io: { out: Out; err: Out }): Command {
  const status = withBroker(new Command('status'))
    .description("count the fleet's devices by version (their retained status) and the ota.* events seen for a few seconds")
    .option('--version <v>', 'also report how this release is doing: running, committed, rolled back, failed')
    .option('--os', 'count Cairn OS releases instead of agent releases')
    .option('--seconds <s>', 'how long to listen', '3')
    .option('--json', 'the report as JSON')
    .addHelpText(
      'after',
      `
Examples:
  cairn fleet rollout status --broker mqtt://broker:1883 --fleet demo
  cairn fleet rollout status --broker mqtt://broker:1883 --fleet demo --version 1.4.0 --seconds 10 --json`,
    )
    .action(async (o: ConnectOptions & { version?: string; os?: boolean; seconds: string; json?: boolean }) => {
      const c = connection(o)
      const seconds = Number(o.seconds)
      if (!(seconds > 0 && seconds <= 3600)) throw new CairnError('BAD_REQUEST', '--seconds must be from 0 to 3600')
      const report = await rolloutStatus({ ...c, fleet: o.fleet, seconds, ...(o.version ? { version: o.version } : {}), ...(o.os ? { os: true } : {}) })
      io.out.write((o.json ? JSON.stringify(report, null, 2) : formatReport(report)) + '\n')
    })
  const pause = (verb: 'halt' | 'resume') =>
    withBroker(new Command(verb))
      .description(
        verb === 'halt'
          ? 'pause updates fleet-wide: one signed pause-updates command, retained on the release topic (also run cairn release set-rollout --pct 0)'
          : 'resume updates fleet-wide: the signed counterpart of halt',
      )
      .requiredOption('--key <file>', 'an operator private key the devices trust')
      .option('--ttl <s>', 'the command expires after this many seconds', '86400')
      .addHelpText(
        'after',
        `
Example:
  cairn fleet rollout ${verb} --broker mqtt://broker:1883 --fleet demo --key op`,
      )
      .action(async (o: ConnectOptions & { key: string; ttl: string }) => {
        const c = connection(o)
        const ttl = Number(o.ttl)
        if (!(ttl > 0)) throw new CairnError('BAD_REQUEST', '--ttl must be a positive number of seconds')
        const env = await publishPause({ ...c, fleet: o.fleet, key: readKeyPairFile(o.key), paused: verb === 'halt', ttlMs: ttl * 1000 })
        io.out.write(JSON.stringify({ id: env.id, topic: releaseTopic(o.fleet), paused: verb === 'halt', expires: new Date(env.exp).toISOString() }) + '\n')
        if (verb === 'halt') io.err.write('also run: cairn release set-rollout --repo DIR --version V --pct 0   (so the next signed metadata stops the release everywhere)\n')
      })
  return new Command('rollout')
    .description('watch a rollout, and stop or resume it fleet-wide')
    .addCommand(status)
    .addCommand(pause('halt'))
    .addCommand(pause('resume'))
    .addHelpText(
      'after',
      `
Examples:
  cairn fleet rollout status --broker URL --fleet NAME [--version V] [--os] [--seconds S] [--json]
  cairn fleet rollout halt   --broker URL --fleet NAME --key OPERATOR_KEY [--ttl 86400]
  cairn fleet rollout resume --broker URL --fleet NAME --key OPERATOR_KEY`,
    )
}
