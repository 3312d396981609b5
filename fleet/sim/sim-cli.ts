// `cairn sim`: argument parsing, the open-file check, status lines and the final
// summary; the simulated devices themselves are in sim.ts.

import { readFileSync, writeFileSync } from 'node:fs'
import { Command } from 'commander'
import { brokerConnection, withBrokerFlags } from '../../protocol/broker-flags.js'
import { connectMqttAsync, TOOL_MAX_PACKET_BYTES } from '../../protocol/mqtt-client.js'
import { CairnError } from '../../protocol/errors.js'
import { keyIdOf, readPublicKeyFile } from '../../protocol/keys.js'
import { MisbehaviourKinds, startSim, type Misbehaviour, type MisbehaviourKind, type SimStats } from './sim.js'

type Out = { write(s: string): unknown }

/** Parses one --misbehave SPEC, e.g. `equivocate:0.01`, `clock:@3:+120`, `offline:0.1:30`. */
export function parseMisbehaviour(spec: string): Misbehaviour {
  const [kind, who, arg, at] = spec.split(':')
  const bad = (why: string) => new CairnError('BAD_REQUEST', `--misbehave ${JSON.stringify(spec)}: ${why}`)
  if (!MisbehaviourKinds.includes(kind as MisbehaviourKind)) throw bad(`kind must be one of ${MisbehaviourKinds.join(', ')}`)
  if (who === undefined || who === '') throw bad('say which devices: a fraction such as 0.01 or an index such as @3')
  let target: Misbehaviour['who']
  if (who.startsWith('@')) {
    const index = Number(who.slice(1))
    if (!Number.isInteger(index) || index < 0) throw bad(`${who} is not a device index`)
    target = { index }
  } else {
    const fraction = Number(who)
    if (!(fraction > 0 && fraction <= 1)) throw bad(`${who} is not a fraction in (0, 1] (use @N for a device index)`)
    target = { fraction }
  }
  const seconds = (v: string | undefined, what: string): number | undefined => {
    if (v === undefined || v === '') return undefined
    const n = Number(v.replace(/s$/, ''))
    if (!Number.isFinite(n)) throw bad(`${what} ${JSON.stringify(v)} is not a number`)
    return n
  }
  const out: Misbehaviour = { kind: kind as MisbehaviourKind, who: target }
  const n = seconds(arg, kind === 'clock' ? 'clock offset' : kind === 'offline' ? 'offline seconds' : 'every')
  if (kind === 'clock' && n === undefined) throw bad('clock needs an offset in seconds, e.g. clock:0.01:+120')
  if (kind === 'offline' && (n === undefined || n <= 0)) throw bad('offline needs a number of seconds, e.g. offline:0.01:30')
  const telemetryKind = kind === 'hot' || kind === 'under-voltage' || kind === 'disk-full' || kind === 'update-failed' || kind === 'backlog'
  if (telemetryKind && n !== undefined) throw bad(`${kind} takes no number (it shows in what the device reports: --telemetry-period)`)
  if (kind !== 'clock' && kind !== 'offline' && n !== undefined && !(Number.isInteger(n) && n >= 1)) throw bad('EVERY must be an integer >= 1')
  if (n !== undefined) out.arg = n
  const atS = seconds(at, 'at')
  if (atS !== undefined) {
    if (kind !== 'offline' || atS < 0) throw bad('only offline takes a start time (seconds >= 0)')
    out.at = atS
  }
  return out
}

/** The soft limit on open files, where /proc tells it. */
function openFileLimit(): number | undefined {
  try {
    const m = /^Max open files\s+(\d+|unlimited)/m.exec(readFileSync('/proc/self/limits', 'utf8'))
    return m?.[1] === undefined || m[1] === 'unlimited' ? undefined : Number(m[1])
  } catch {
    return undefined
  }
}

const EMFILE_ADVICE =
  'out of file descriptors (EMFILE): every simulated device holds its own connection. Node cannot raise the limit itself; ' +
  "start the sim from a shell with a higher one, e.g. bash -c 'ulimit -n 65536; exec cairn sim …' (root may raise the hard limit too)"

interface SimOptions {
  devices?: string
  broker: string
  fleet: string
  validatorKey?: string[]
  period: string
  telemetryPeriod?: string
  ramp: string
  jitter: string
  misbehave?: string[]
  duration?: string
  owner?: string
  mqttVersion: string
  username?: string
  password?: string
  ca?: string
  statusEvery: string
  summaryFile?: string
}

const many = (v: string, prev: string[] | undefined): string[] => [...(prev ?? []), v]

export function simCommand(io: { out: Out; err: Out; setExitCode(code: number): void }): Command {
  return withBrokerFlags(new Command('sim'))
    .description('simulate a fleet: N devices, each with its own key and MQTT connection, sending signed heartbeats (and misbehaving on request)')
    .requiredOption('--devices <n>', 'how many simulated devices')
    .requiredOption('--fleet <name>', 'the fleet name')
    .option('--validator-key <file>', "a validator's public key: heartbeats cite its beacons (repeatable)", many)
    .option('--period <s>', 'heartbeat period', '60')
    .option('--telemetry-period <s>', 'also publish a retained status (with its Will) and a telemetry sample this often, as an agent does (for cairn fleet serve)')
    .option('--ramp <per-second>', 'devices connected per second at the start', '200')
    .option('--jitter <ms>', 'longest random delay of a heartbeat after a beacon', '5000')
    .option('--misbehave <spec>', 'make some devices misbehave (repeatable; SPEC below)', many)
    .option('--duration <s>', 'stop after this long (default: at SIGINT/SIGTERM)')
    .option('--owner <id>', 'payout identity carried in every heartbeat')
    .option('--status-every <s>', 'a status line this often', '10')
    .option('--summary-file <file>', 'also write the final summary, with every device, here')
    .addHelpText(
      'after',
      `
SPEC = KIND:WHO[:ARG[:AT]], WHO a fraction (0.01) or a device index (@3):
  equivocate|fork|forge-beacon|replay:WHO[:EVERY], clock:WHO:+SECONDS,
  offline:WHO:SECONDS[:AT], hot|under-voltage|disk-full:WHO (in its telemetry;
  with --telemetry-period), backlog:WHO (its telemetry reports a large outbox
  backlog, an hour old and growing), update-failed:WHO (an update rolled back,
  reported once)

Examples:
  cairn sim --devices 1000 --broker mqtt://127.0.0.1:1883 --fleet load --validator-key validator.key.pub
  cairn sim --devices 50 --fleet demo --misbehave equivocate:0.1 --misbehave offline:@3:30:10 --duration 300
  cairn sim --devices 200 --fleet demo --telemetry-period 10 --misbehave hot:0.02 --misbehave under-voltage:@5`,
    )
    .action(async (values: SimOptions) => io.setExitCode(await runSim(values, io)))
}

async function runSim(values: SimOptions, io: { out: Out; err: Out }): Promise<number> {
  const num = (v: string | undefined, flag: string, min: number, max: number, integer = false): number | undefined => {
    if (v === undefined) return undefined
    const n = Number(v)
    if (!Number.isFinite(n) || n < min || n > max || (integer && !Number.isInteger(n)))
      throw new CairnError('BAD_REQUEST', `--${flag} must be ${integer ? 'an integer' : 'a number'} from ${min} to ${max}, got ${JSON.stringify(v)}`)
    return n
  }
  const devices = num(values.devices, 'devices', 1, 1_000_000, true)
  if (devices === undefined) throw new CairnError('BAD_REQUEST', '--devices N is required')
  const { url, mqttVersion: version, clientOptions: mqttOptions } = brokerConnection(values, { keepaliveS: 60, connectTimeoutMs: 30_000 })
  const validators = (values.validatorKey ?? []).map(f => keyIdOf(readPublicKeyFile(f)))
  const misbehave = (values.misbehave ?? []).map(parseMisbehaviour)
  const durationS = num(values.duration, 'duration', 0.1, 365 * 86_400)
  const statusEveryS = num(values.statusEvery, 'status-every', 0.1, 86_400)!
  const periodS = num(values.period, 'period', 1, 86_400, true)!
  const telemetryPeriodS = num(values.telemetryPeriod, 'telemetry-period', 1, 86_400)
  const rampPerS = num(values.ramp, 'ramp', 0.1, 1_000_000)!
  const jitterMs = num(values.jitter, 'jitter', 0, 600_000, true)!
  // Simulated devices retry a broker that is down, as real ones do; one that cannot be
  // reached at all at the start is a mistake in the command line, said at once.
  await (await connectMqttAsync({ url, base: mqttOptions, mqttVersion: version, reconnectPeriodMs: 0, maximumPacketSize: TOOL_MAX_PACKET_BYTES })).endAsync()

  const limit = openFileLimit()
  if (limit !== undefined && devices + 64 > limit) {
    io.err.write(`cairn sim: warning: ${devices} connections need about ${devices + 64} open files, the limit here is ${limit}; ${EMFILE_ADVICE.split(': ')[1]}\n`)
  }
  if (validators.length === 0) io.err.write('cairn sim: no --validator-key: heartbeats will cite no beacon and only the period timer drives them\n')

  let fatal: Error | undefined
  let wake: () => void = () => undefined
  const sim = startSim({
    devices,
    brokerUrl: url,
    fleet: values.fleet,
    validators,
    mqtt: mqttOptions,
    periodS,
    ...(telemetryPeriodS !== undefined ? { telemetryPeriodS } : {}),
    rampPerS,
    jitterMs,
    ...(values.owner ? { owner: values.owner } : {}),
    misbehave,
    onFatal: err => {
      fatal = err
      wake()
    },
  })
  const t0 = Date.now()
  const line = (s: SimStats, extra: Record<string, unknown>) => {
    const mem = process.memoryUsage()
    return JSON.stringify({
      t: new Date().toISOString(),
      uptimeS: Math.round((Date.now() - t0) / 1000),
      ...extra,
      ...s,
      rssMb: Math.round(mem.rss / 1048576),
      heapMb: Math.round(mem.heapUsed / 1048576),
    })
  }
  const misbehaving = sim.devices.filter(d => d.faultNames().length > 0)
  io.out.write(
    JSON.stringify({ event: 'sim.started', devices, fleet: values.fleet, broker: url, validators, misbehaving: misbehaving.map(d => ({ index: d.index, id: d.id, faults: d.faultNames() })) }) + '\n',
  )
  void sim.ready.then(() => io.out.write(line(sim.stats(), { event: 'sim.ramped', rampS: (Date.now() - t0) / 1000 }) + '\n'))
  const status = setInterval(() => io.out.write(line(sim.stats(), { event: 'sim.status' }) + '\n'), statusEveryS * 1000)

  const reason = await new Promise<string>(resolve => {
    wake = () => resolve('fatal')
    if (fatal) resolve('fatal')
    const onSignal = (sig: string) => () => resolve(sig)
    process.once('SIGTERM', onSignal('SIGTERM'))
    process.once('SIGINT', onSignal('SIGINT'))
    if (durationS !== undefined) setTimeout(() => resolve('duration'), durationS * 1000).unref()
  })
  clearInterval(status)
  const final = await sim.stop()
  const all = sim.stats({ perDevice: true })
  const per = all.perDevice ?? []
  const acked = per.map(d => d.acked)
  const summary = {
    ...final,
    heartbeatsAckedPerDevice: { min: Math.min(...acked), max: Math.max(...acked), mean: acked.reduce((a, b) => a + b, 0) / Math.max(1, acked.length) },
    misbehaving: per.filter(d => d.faults.length > 0),
  }
  if (values.summaryFile) writeFileSync(values.summaryFile, JSON.stringify({ ...summary, perDevice: per }) + '\n')
  io.out.write(line(summary, { event: 'sim.summary', reason }) + '\n')
  if (fatal) {
    io.err.write(`cairn sim: ${(fatal as NodeJS.ErrnoException).code === 'EMFILE' ? EMFILE_ADVICE : fatal.message}\n`)
    return 1
  }
  return 0
}
