// `cairn demo` (what `npm start` runs): a local fleet of one with no set-up. An embedded
// broker (unless --broker/CAIRN_BROKER names one), an operator key, one agent reading
// this machine's real hardware, and a validator with short slots, with a
// human-readable view of the telemetry, beacons, heartbeats and scores going by.

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
import { Validator } from '../validator/validator.js'
import { validatorKey, VALIDATOR_KEY_FILE } from '../validator/validator-cli.js'

// Short slots so a newcomer sees a score within two minutes (production: 60 s x 60).
const DEMO_SLOT_S = 10
const DEMO_EPOCH_SLOTS = 6

type Out = { write(s: string): unknown }

export function demoCommand(io: { out: Out; env: NodeJS.ProcessEnv; setExitCode(code: number): void }): Command {
  return new Command('demo')
    .description('a local fleet of one, no set-up: an embedded broker, an agent on this machine, a validator and a Node-RED editor, with a readable view of what goes by')
    .option('--port <p>', 'the embedded broker port (busy: any free one); $CAIRN_BROKER names an outside broker instead', '1883')
    .option('--state-dir <dir>', 'where the demo keeps its keys, state and logs', '.cairn-demo')
    .option('--no-node-red', 'without the Node-RED editor')
    .option('--node-red-port <p>', 'the Node-RED editor port')
    .option('--slot <s>', `the validator's slot length in seconds (an epoch is ${DEMO_EPOCH_SLOTS} slots; a score follows each epoch)`, String(DEMO_SLOT_S))
    .addHelpText('after', '\nExamples:\n  cairn demo\n  cairn demo --state-dir /tmp/demo --no-node-red')
    .action(async (o: { port: string; stateDir: string; nodeRed: boolean; nodeRedPort?: string; slot: string }) =>
      io.setExitCode(await runDemo({ port: o.port, 'state-dir': o.stateDir, 'no-node-red': !o.nodeRed, slotMs: slotMs(o.slot), ...(o.nodeRedPort ? { 'node-red-port': o.nodeRedPort } : {}) }, io)),
    )
}

function slotMs(v: string): number {
  const s = Number(v)
  if (!Number.isFinite(s) || s < 0.5 || s > 3600) throw new CairnError('BAD_REQUEST', `--slot must be a number from 0.5 to 3600, got ${JSON.stringify(v)}`)
  return Math.round(s * 1000)
}

async function runDemo(opts: { port?: string; 'state-dir'?: string; 'no-node-red'?: boolean; 'node-red-port'?: string; slotMs: number }, io: { out: Out; env: NodeJS.ProcessEnv }): Promise<number> {
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

  const watcher = connectMqtt({ url, mqttVersion: 4, reconnectPeriodMs: 1000, maximumPacketSize: TOOL_MAX_PACKET_BYTES })
  watcher.on('connect', () => watcher.subscribe(`cairn/v1/${fleet}/#`))
  watcher.on('message', (topic, payload) => {
    const parts = topic.split('/')
    const kind = ['beacon', 'attestation', 'evidence'].includes(parts[3] ?? '') ? parts[3]! : parts.slice(4).join('/')
    try {
      if (payload.length === 0) return
      const msg = JSON.parse(payload.toString()) as Record<string, unknown>
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
      say(`  mosquitto_sub -p ${port} -t 'cairn/#' -v`)
      say(`  npx cairn fleet cmd ${id} ping --broker ${url} --fleet ${fleet} --key ${opKey}${broker ? ' --mqtt-version 4' : ''}`)
      say(`  npx cairn task submit ${id} --broker ${url} --fleet ${fleet} --key ${dispatcherKey} --type inference --model demo --input <photo.png>${broker ? ' --mqtt-version 4' : ''}`)
      say('Ctrl-C stops the agent (it publishes offline first).')
      say('')
    },
  })
  watcher.end(true)
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
