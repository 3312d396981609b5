// `cairn demo` (what `npm start` runs): a local fleet of one with no set-up. An embedded
// broker (unless --broker/CAIRN_BROKER names one), an operator key, one agent reading
// this machine's real hardware, and a validator with short slots, with a
// human-readable view of the telemetry, beacons, heartbeats and scores going by; and the
// fleet console (`fleet serve`) on 127.0.0.1 with simulated devices beside the real one,
// a few of them misbehaving, so the overview, the table and the alerts have a fleet.

import { createWriteStream, existsSync, mkdirSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { Command } from 'commander'
import { startEmbeddedBroker, type EmbeddedBroker } from './embedded-broker.js'
import { generateKeyPair, readKeyPairFile, writeKeyPairFiles } from '../protocol/keys.js'
import { runDemoTasks } from './demo-tasks.js'
import { runAgent } from './run-agent.js'
import { startDemoNodeRed, type NodeRedHost } from '../flows/node-red-host.js'
import type { TelemetryMessage } from '../protocol/messages.js'
import { systemClock } from '../protocol/clock.js'
import { CairnError } from '../protocol/errors.js'
import { createLogger } from '../protocol/log.js'
import { connectMqtt, TOOL_MAX_PACKET_BYTES, toolClientOptions } from '../protocol/mqtt-client.js'
import type { Attestation, Heartbeat } from '../protocol/proof-format.js'
import { DEFAULT_WEIGHTS } from '../validator/score.js'
import type { FleetService } from '../fleet/service/fleet-service.js'
import { SqliteFleetStore } from '../fleet/service/sqlite-store.js'
import { DEFAULT_ALERT_RULES } from '../fleet/service/alerts.js'
import { startSim, type Misbehaviour, type Sim } from '../fleet/sim/sim.js'
import { Validator } from '../validator/validator.js'
import { validatorKey, VALIDATOR_KEY_FILE } from '../validator/validator-cli.js'

// Short slots so a newcomer sees a score within two minutes (production: 60 s x 60).
const DEMO_SLOT_S = 10
const DEMO_EPOCH_SLOTS = 6
/** Enough for the console's overview, table and alerts to look like a fleet. */
const DEMO_SIM_DEVICES = 40

type Out = { write(s: string): unknown }

export function demoCommand(io: { out: Out; env: NodeJS.ProcessEnv; setExitCode(code: number): void }): Command {
  return new Command('demo')
    .description('a local fleet of one, no set-up: an embedded broker, an agent on this machine, a validator and a Node-RED editor, with a readable view of what goes by')
    .option('--port <p>', 'the embedded broker port (busy: any free one); $CAIRN_BROKER names an outside broker instead', '1883')
    .option('--state-dir <dir>', 'where the demo keeps its keys, state and logs', '.cairn-demo')
    .option('--no-node-red', 'without the Node-RED editor')
    .option('--node-red-port <p>', 'the Node-RED editor port')
    .option('--sim <n>', 'simulated devices beside the real one, for the console (0: none)', String(DEMO_SIM_DEVICES))
    .option('--console-port <p>', 'the fleet console port (busy: any free one)', '8080')
    .option('--no-console', 'without the fleet console and its simulated devices')
    .option('--slot <s>', `the validator's slot length in seconds (an epoch is ${DEMO_EPOCH_SLOTS} slots; a score follows each epoch)`, String(DEMO_SLOT_S))
    .addHelpText('after', '\nExamples:\n  cairn demo\n  cairn demo --sim 200\n  cairn demo --state-dir /tmp/demo --no-node-red --no-console')
    .action(async (o: { port: string; stateDir: string; nodeRed: boolean; nodeRedPort?: string; slot: string; sim: string; console: boolean; consolePort: string }) =>
      io.setExitCode(
        await runDemo(
          {
            port: o.port,
            'state-dir': o.stateDir,
            'no-node-red': !o.nodeRed,
            slotMs: slotMs(o.slot),
            ...(o.nodeRedPort ? { 'node-red-port': o.nodeRedPort } : {}),
            console: o.console ? { port: intOption(o.consolePort, '--console-port', 0, 65535), sim: intOption(o.sim, '--sim', 0, 10_000) } : null,
          },
          io,
        ),
      ),
    )
}

function intOption(v: string, flag: string, min: number, max: number): number {
  const n = Number(v)
  if (!Number.isInteger(n) || n < min || n > max) throw new CairnError('BAD_REQUEST', `${flag} must be an integer from ${min} to ${max}, got ${JSON.stringify(v)}`)
  return n
}

/** What the demo's simulated devices do wrong, so the console's alerts have something to
 * show: one goes dark, one runs hot, one is short of power, one has a full disk, one's
 * update was rolled back. */
function demoMisbehaviour(n: number): Misbehaviour[] {
  const plan: Array<[Misbehaviour['kind'], number]> = [
    ['offline', 3],
    ['hot', 4],
    ['under-voltage', 7],
    ['disk-full', 10],
    ['update-failed', 12],
    ['backlog', 15],
  ]
  return plan.filter(([, i]) => i < n).map(([kind, index]) => (kind === 'offline' ? { kind, who: { index }, arg: 24 * 3600, at: 5 } : { kind, who: { index } }))
}

function slotMs(v: string): number {
  const s = Number(v)
  if (!Number.isFinite(s) || s < 0.5 || s > 3600) throw new CairnError('BAD_REQUEST', `--slot must be a number from 0.5 to 3600, got ${JSON.stringify(v)}`)
  return Math.round(s * 1000)
}

async function runDemo(
  opts: { port?: string; 'state-dir'?: string; 'no-node-red'?: boolean; 'node-red-port'?: string; slotMs: number; console: { port: number; sim: number } | null },
  io: { out: Out; env: NodeJS.ProcessEnv },
): Promise<number> {
  const slot = opts.slotMs
  const say = (s: string) => io.out.write(s + '\n')
  const dir = resolve(opts['state-dir'] ?? '.cairn-demo')
  mkdirSync(dir, { recursive: true, mode: 0o700 })
  const opKey = join(dir, 'operator.key')
  if (!existsSync(opKey)) writeKeyPairFiles(opKey, generateKeyPair())
  const dispatcherKey = join(dir, 'dispatcher.key')
  if (!existsSync(dispatcherKey)) writeKeyPairFiles(dispatcherKey, generateKeyPair())
  let broker: EmbeddedBroker | undefined
  let url = io.env.CAIRN_BROKER ?? io.env.CAIRN_BROKER_URL
  if (!url) {
    try {
      broker = await startEmbeddedBroker({ port: opts.port ? Number(opts.port) : 1883 })
    } catch {
      broker = await startEmbeddedBroker({ port: 0 }) // 1883 busy: any free port
    }
    url = broker.url
  }
  const port = new URL(url).port || '1883'
  const fleet = 'demo'
  const logFile = join(dir, 'agent.log')
  say(`Cairn demo: a fleet of one on this machine`)
  say(`  broker    ${url}${broker ? ' (embedded, MQTT 3.1.1)' : ''}`)
  say(`  state     ${dir}  (agent log: ${logFile})`)

  const valDir = join(dir, 'validator')
  const vkey = validatorKey(valDir)
  const mqttVersion = broker ? 4 : 5
  const validator = new Validator({
    brokerUrl: url,
    mqtt: toolClientOptions({ url, mqttVersion }),
    fleet,
    stateDir: valDir,
    key: vkey,
    params: { slotMs: slot, epochSlots: DEMO_EPOCH_SLOTS, maxAgeMs: slot, skewMs: 30_000, ...DEFAULT_WEIGHTS },
    instance: 'demo',
    // The embedded broker (aedes) has no shared subscriptions: one plain subscriber.
    shareGroup: broker ? null : 'cairn-demo',
    challengesPerEpoch: 1,
    challengeTimeoutMs: Math.min(5000, slot / 2),
    clock: systemClock,
    log: createLogger({ level: 'info', out: createWriteStream(join(dir, 'validator.log'), { flags: 'a' }) }),
  })
  await validator.start()
  say(`  validator ${vkey.keyId}  (slot ${slot / 1000} s, epoch ${DEMO_EPOCH_SLOTS} slots; log: ${join(dir, 'validator.log')})`)

  // The fleet service and its simulated devices (the console)
  let service: FleetService | undefined
  let sim: Sim | undefined
  const simIds = new Set<string>()
  let consoleUrl: string | undefined
  if (opts.console) {
    const log = createLogger({ level: 'info', out: createWriteStream(join(dir, 'fleet.log'), { flags: 'a' }) })
    // loaded here, not with the CLI: the HTTP server (fastify) is no part of a device's start
    const { FleetService } = await import('../fleet/service/fleet-service.js')
    const start = (port: number) => {
      const svc = new FleetService({
        brokerUrl: url,
        mqtt: toolClientOptions({ url, mqttVersion }),
        fleet,
        store: new SqliteFleetStore(mkdirp(join(dir, 'fleet'))),
        clock: systemClock,
        log,
        listen: { host: '127.0.0.1', port },
        shareGroup: null,
        instance: 'demo',
        // the demo's validator: its attestations are the scores on the device page
        validators: [vkey.keyId],
        // a device dark for half a minute already alerts here (a fleet's default: 10 minutes)
        alertRules: { ...DEFAULT_ALERT_RULES, offlineMs: 30_000 },
      })
      return svc.start().then(
        address => ({ svc, address }),
        async (err: unknown) => {
          await svc.stop()
          throw err
        },
      )
    }
    const started = await start(opts.console.port).catch(() => start(0)) // 8080 busy: any free port
    service = started.svc
    consoleUrl = `${started.address}/`
    say(`  console   ${consoleUrl}  (the fleet service; log: ${join(dir, 'fleet.log')})`)
    if (opts.console.sim > 0) {
      sim = startSim({
        devices: opts.console.sim,
        brokerUrl: url,
        fleet,
        validators: [vkey.keyId],
        mqtt: toolClientOptions({ url, mqttVersion }),
        periodS: slot / 1000,
        telemetryPeriodS: 10,
        rampPerS: 50,
        misbehave: demoMisbehaviour(opts.console.sim),
        log: createLogger({ level: 'warn', out: createWriteStream(join(dir, 'sim.log'), { flags: 'a' }) }),
      })
      for (const d of sim.devices) simIds.add(d.id)
      say(
        `  sim       ${opts.console.sim} simulated devices for the console (one dark, one hot, one short of power, one with a full disk, one whose update was rolled back, one whose outbox is backed up)`,
      )
    }
  }

  const watcher = connectMqtt({ url, mqttVersion: 4, reconnectPeriodMs: 1000, maximumPacketSize: TOOL_MAX_PACKET_BYTES })
  watcher.on('connect', () => watcher.subscribe(`cairn/v1/${fleet}/#`))
  watcher.on('message', (topic, payload) => {
    const parts = topic.split('/')
    const kind = ['beacon', 'attestation', 'evidence'].includes(parts[3] ?? '') ? parts[3]! : parts.slice(4).join('/')
    // this view follows the real device; the simulated ones are on the console
    if (simIds.has(parts[3] ?? '')) return
    try {
      if (payload.length === 0) return
      const msg = JSON.parse(payload.toString()) as Record<string, unknown>
      const about = (msg.body as { device?: unknown } | undefined)?.device
      if (typeof about === 'string' && simIds.has(about)) return
      if (kind === 'beacon') say(`  beacon    slot ${(msg.body as { slot: number }).slot} from validator ${String(msg.iss).slice(0, 8)}…`)
      else if (kind === 'proof' && msg.type === 'proof.heartbeat') {
        const b = (msg as unknown as Heartbeat).body
        say(`  heartbeat seq ${b.seq}, cites ${b.beacons.map(x => `slot ${x.slot}`).join(', ') || 'no beacon yet'}, prev ${b.prev.slice(0, 8)}…`)
      } else if (kind === 'proof') say(`  challenge answered`)
      else if (kind === 'attestation') {
        const a = (msg as unknown as Attestation).body
        say(
          `  SCORE     epoch ${a.epoch}: ${(a.score / 10_000).toFixed(1)} % (${a.counts.slotsCovered}/${a.counts.slotsLive} slots, challenges ${a.counts.passed}/${a.counts.challenges})  → cairn validator export --state-dir ${valDir} --device ${a.device} --epoch ${a.epoch} --out e.json && cairn verify e.json`,
        )
      } else if (kind === 'evidence') say(`  EVIDENCE  ${(msg.body as { kind: string }).kind}`)
      else if (kind === 'challenge' || kind.startsWith('task/'))
        return // tasks: printed by runDemoTasks
      else if (kind === 'telemetry') say(`  telemetry ${summarise(msg as unknown as TelemetryMessage)}`)
      else if (kind === 'status') say(`  status    ${msg.state} (${msg.board}, ${msg.model})`)
      else if (kind === 'event') say(`  event     ${msg.kind}`)
      else say(`  ${kind.padEnd(9)} ${payload.toString().slice(0, 120)}`)
    } catch {
      say(`  ${kind} (not JSON)`)
    }
  })

  let nodeRed: Promise<NodeRedHost | undefined> | undefined
  let demoTasks: Promise<void> | undefined
  const code = await runAgent({
    flags: {
      name: 'demo',
      values: {
        fleet,
        stateDir: dir,
        operatorKeys: [`${opKey}.pub`],
        broker: { url, mqttVersion },
        health: { port: 0 },
        // At most a tenth of a slot between a beacon and the heartbeat citing it (1 s at the
        // default slot), well inside its max age.
        proof: { validatorKeys: [join(valDir, `${VALIDATOR_KEY_FILE}.pub`)], jitterMs: Math.min(1000, Math.round(slot / 10)) },
        tasks: { dispatcherKeys: [`${dispatcherKey}.pub`] },
      },
    },
    env: io.env,
    out: createWriteStream(logFile, { flags: 'a' }),
    onStart: agent => {
      // Node-RED once (the agent may restart in place), after the agent's local API is up.
      if (opts['no-node-red'] !== true && !nodeRed) {
        nodeRed = startDemoNodeRed({ stateDir: dir, say, ...(opts['node-red-port'] ? { port: Number(opts['node-red-port']) } : {}) })
      }
      const id = agent.deviceId
      // One cache and one inference task, once (the agent may restart in place).
      demoTasks ??= runDemoTasks({ agent, url, mqttVersion, fleet, dispatcher: readKeyPairFile(dispatcherKey), dir, say })
      say(`  device    ${id}`)
      if (agent.healthPort) say(`  health    http://127.0.0.1:${agent.healthPort}/healthz  and /metrics`)
      say('')
      say('Try, in another terminal:')
      if (consoleUrl) {
        say(`  open ${consoleUrl} in a browser: the fleet console`)
        say(`  open ${consoleUrl}#/devices/${id} and import ${opKey} there: commands to this agent, signed in the browser`)
      }
      say(`  mosquitto_sub -p ${port} -t 'cairn/#' -v`)
      say(`  npx cairn fleet cmd ${id} ping --broker ${url} --fleet ${fleet} --key ${opKey}${broker ? ' --mqtt-version 4' : ''}`)
      say(`  npx cairn task submit ${id} --broker ${url} --fleet ${fleet} --key ${dispatcherKey} --type inference --model demo --input <photo.png>${broker ? ' --mqtt-version 4' : ''}`)
      say('Ctrl-C stops the agent (it publishes offline first).')
      say('')
    },
  })
  watcher.end(true)
  await sim?.stop()
  await service?.stop()
  await demoTasks
  await (await nodeRed)?.stop()
  await validator.stop()
  await broker?.close()
  return code
}

function summarise(m: TelemetryMessage): string {
  const s = m.sample
  const parts: string[] = []
  if (s.cpu?.percent !== undefined) parts.push(`cpu ${s.cpu.percent.toFixed(0)}%`)
  if (s.load) parts.push(`load ${s.load[0].toFixed(2)}`)
  if (s.memory?.usedPercent !== undefined) parts.push(`mem ${s.memory.usedPercent.toFixed(0)}%`)
  const hottest = (s.thermal ?? []).reduce<number | undefined>((a, z) => (a === undefined || z.celsius > a ? z.celsius : a), undefined)
  if (hottest !== undefined) parts.push(`${hottest.toFixed(1)}°C`)
  if (s.throttle) parts.push(s.throttle.now.throttled ? 'THROTTLED' : 'not throttled')
  if (s.gpu?.loadPercent !== undefined) parts.push(`gpu ${s.gpu.loadPercent.toFixed(0)}%`)
  return parts.join(', ') || '(no readings)'
}

function mkdirp(d: string): string {
  mkdirSync(d, { recursive: true, mode: 0o700 })
  return d
}
