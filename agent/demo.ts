// `cairn demo` (what `npm start` runs): a local fleet of one with no set-up. An embedded
// broker (unless --broker/CAIRN_BROKER names one), an operator key, and one agent
// reading this machine's real hardware, with a human-readable view of what it sends.

import { createWriteStream, existsSync, mkdirSync } from 'node:fs'
import { join, resolve } from 'node:path'
import mqtt from 'mqtt'
import { startEmbeddedBroker, type EmbeddedBroker } from './embedded-broker.js'
import { generateKeyPair, writeKeyPairFiles } from './keys.js'
import { runAgent } from './run-agent.js'
import type { TelemetryMessage } from './messages.js'

type Out = { write(s: string): unknown }

export async function runDemo(opts: { port?: string; 'state-dir'?: string }, io: { out: Out; env: NodeJS.ProcessEnv }): Promise<number> {
  const say = (s: string) => io.out.write(s + '\n')
  const dir = resolve(opts['state-dir'] ?? '.cairn-demo')
  mkdirSync(dir, { recursive: true, mode: 0o700 })
  const opKey = join(dir, 'operator.key')
  if (!existsSync(opKey)) writeKeyPairFiles(opKey, generateKeyPair())
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

  const watcher = mqtt.connect(url, { protocolVersion: 4, reconnectPeriod: 1000 })
  watcher.on('connect', () => watcher.subscribe(`cairn/v1/${fleet}/#`))
  watcher.on('message', (topic, payload) => {
    const kind = topic.split('/').slice(4).join('/')
    try {
      const msg = JSON.parse(payload.toString()) as Record<string, unknown>
      if (kind === 'telemetry') say(`  telemetry ${summarise(msg as unknown as TelemetryMessage)}`)
      else if (kind === 'status') say(`  status    ${msg.state} (${msg.board}, ${msg.model})`)
      else if (kind === 'event') say(`  event     ${msg.kind}`)
      else say(`  ${kind.padEnd(9)} ${payload.toString().slice(0, 120)}`)
    } catch {
      say(`  ${kind} (not JSON)`)
    }
  })

  const code = await runAgent({
    flags: {
      name: 'demo',
      values: { fleet, stateDir: dir, operatorKeys: [`${opKey}.pub`], broker: { url, mqttVersion: broker ? 4 : 5 }, health: { port: 0 } },
    },
    env: io.env,
    out: createWriteStream(logFile, { flags: 'a' }),
    onStart: agent => {
      const id = agent.deviceId
      say(`  device    ${id}`)
      if (agent.healthPort) say(`  health    http://127.0.0.1:${agent.healthPort}/healthz  and /metrics`)
      say('')
      say('Try, in another terminal:')
      say(`  mosquitto_sub -p ${port} -t 'cairn/#' -v`)
      say(`  npx cairn fleet cmd ${id} ping --broker ${url} --fleet ${fleet} --key ${opKey}${broker ? ' --mqtt-version 4' : ''}`)
      say('Ctrl-C stops the agent (it publishes offline first).')
      say('')
    },
  })
  watcher.end(true)
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
