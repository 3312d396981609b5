// Test helpers: an in-process agent on a real broker and state dir, an MQTT consumer
// that records what it sees, and small waiting utilities.

import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import mqtt, { type MqttClient } from 'mqtt'
import { systemClock } from '../../protocol/clock.js'
import type { Layer } from '../../protocol/config-layers.js'
import { startAgent, type AgentDeps, type RunningAgent } from '../../agent/agent.js'
import { createLogger, LogRing } from '../../protocol/log.js'
import { generateKeyPair, writeKeyPairFiles, type KeyPair } from '../../protocol/keys.js'
import type { SystemPort } from '../../agent/core/system.js'
import { createCommandRunner } from '../../hw/index.js'
import { loadConfig } from '../../agent/config/load-config.js'
import { otaExtension } from '../../ota/ota-service.js'
import { guardMs } from './patience.js'

export const tmp = (p = 'cairn-test-') => mkdtempSync(join(tmpdir(), p))

export function operatorKey(dir: string, name = 'op'): KeyPair & { file: string; pub: string } {
  const pair = generateKeyPair()
  const file = join(dir, name)
  writeKeyPairFiles(file, pair)
  return { ...pair, file, pub: `${file}.pub` }
}

export interface TestAgent {
  agent: RunningAgent
  stateDir: string
  logs: string[]
  reboots: number
  stop(): Promise<void>
}

export interface TestAgentOptions {
  url: string
  stateDir?: string
  fleet?: string
  operatorKeys?: string[]
  mqttVersion?: 4 | 5
  values?: Record<string, unknown>
  system?: SystemPort
  /** More agent dependencies (test seams such as task executors). */
  deps?: Partial<AgentDeps>
}

export async function startTestAgent(o: TestAgentOptions): Promise<TestAgent> {
  const stateDir = o.stateDir ?? tmp('cairn-state-')
  const values = {
    fleet: o.fleet ?? 'test',
    stateDir,
    operatorKeys: o.operatorKeys ?? [],
    broker: { url: o.url, mqttVersion: o.mqttVersion ?? 5, reconnectMinMs: 200, reconnectMaxMs: 1000 },
    health: { port: 0 },
    cache: { port: 0 },
    // Most tests never run inference: not starting its worker (about 1.7 s of CPU per
    // agent) keeps the suite fast. Tests that infer ask for it.
    tasks: { types: ['cache'] },
    log: { level: 'debug' },
    ...o.values,
  }
  const flags: Layer = { name: 'test', values }
  const load = (remote?: Record<string, unknown>) => loadConfig({ env: {}, flags }, remote)
  const logs: string[] = []
  const ring = new LogRing(1000)
  const t: TestAgent = {
    agent: undefined as unknown as RunningAgent,
    stateDir,
    logs,
    reboots: 0,
    stop: async () => t.agent.stop('shutdown'),
  }
  t.agent = await startAgent({
    loaded: load(),
    reload: load,
    log: createLogger({ level: 'debug', ring, out: { write: (s: string) => logs.push(s) } }),
    ring,
    clock: systemClock,
    hw: { root: '/', run: createCommandRunner() },
    system: o.system ?? {
      reboot: async () => {
        t.reboots++
      },
    },
    version: '0.0.0-test',
    // Composed as `cairn agent` composes it outside the launcher (cli/run-agent.ts):
    // OTA plugged in, updates off for want of a launcher.
    extensions: [otaExtension({ launcher: undefined })],
    ...o.deps,
  })
  return t
}

export interface Received {
  topic: string
  payload: Buffer
  json: Record<string, unknown> | undefined
  retain: boolean
  properties: mqtt.IPublishPacket['properties']
}

export class Consumer {
  readonly messages: Received[] = []
  private waiters: Array<() => void> = []
  constructor(readonly client: MqttClient) {
    client.on('message', (topic, payload, packet) => {
      let json: Record<string, unknown> | undefined
      try {
        json = JSON.parse(payload.toString()) as Record<string, unknown>
      } catch {
        json = undefined
      }
      this.messages.push({ topic, payload, json, retain: packet.retain, properties: packet.properties })
      for (const w of this.waiters) w()
    })
  }

  static async connect(url: string, filter: string | string[], opts: mqtt.IClientOptions = {}): Promise<Consumer> {
    const client = await mqtt.connectAsync(url, { protocolVersion: 5, reconnectPeriod: 200, ...opts })
    const c = new Consumer(client)
    if (filter.length > 0) await client.subscribeAsync(filter, { qos: 1 })
    return c
  }

  /** Waits until `pred` holds for some message (or all seen so far), polling on arrival. */
  async waitFor<T>(pred: (msgs: Received[]) => T | undefined | false, timeoutMs = 10_000, what = 'message', signal?: AbortSignal): Promise<T> {
    timeoutMs = guardMs(timeoutMs)
    const until = Date.now() + timeoutMs
    for (;;) {
      const hit = pred(this.messages)
      if (hit) return hit
      // what the wait was for cannot come any more (the guest that would send it is gone)
      if (signal?.aborted) throw new Error(`gave up waiting for ${what}: ${String(signal.reason)}`)
      const left = until - Date.now()
      if (left <= 0)
        throw new Error(
          `timed out after ${timeoutMs} ms waiting for ${what}; saw ${this.messages.length} messages: ${this.messages
            .slice(-3)
            .map(m => m.topic)
            .join(', ')}`,
        )
      await new Promise<void>(r => {
        const timer = setTimeout(r, Math.min(left, 250))
        this.waiters.push(() => {
          clearTimeout(timer)
          r()
        })
      })
      this.waiters = []
    }
  }

  on(topicSuffix: string): Received[] {
    return this.messages.filter(m => m.topic.endsWith(topicSuffix))
  }

  async close(): Promise<void> {
    await this.client.endAsync(true)
  }
}

export const sleep = (ms: number) => new Promise(r => setTimeout(r, ms))

export async function until(pred: () => boolean | Promise<boolean>, timeoutMs = 10_000, what = 'condition'): Promise<void> {
  const end = Date.now() + guardMs(timeoutMs)
  while (!(await pred())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`)
    await sleep(25)
  }
}
