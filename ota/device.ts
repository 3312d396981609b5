// OTA inside the running agent: builds the updater from the configuration and the
// launcher's environment, listens on the fleet's release topic, and feeds the health
// check. agent/agent.ts only wires this in; the logic lives in ota/.

import { join } from 'node:path'
import type { Clock } from '../agent/clock.js'
import type { Config } from '../agent/config-schema.js'
import { errorBody } from '../agent/errors.js'
import type { Logger } from '../agent/log.js'
import type { NewMessage, Outbox } from '../agent/outbox.js'
import type { Db } from '../agent/state-db.js'
import { releaseTopic } from '../agent/topics.js'
import { defaultChannelFactory, type ChannelFactory } from './channel.js'
import type { OtaControl } from './commands.js'
import { SqlOtaStore, type OtaEvent } from './ota-store.js'
import type { Step } from './plan.js'
import { runSelfTest, type SelfTestResult } from './self-test.js'
import { DirectorySlots, type SlotName } from './slots.js'
import { Updater } from './updater.js'

/** Where the launcher says the agent runs from (CAIRN_SLOT, CAIRN_OTA_DIR). */
export interface LauncherInfo {
  slot: SlotName | null
  otaDir: string
}

export function launcherFromEnv(env: NodeJS.ProcessEnv): LauncherInfo | undefined {
  const slot = env.CAIRN_SLOT
  const otaDir = env.CAIRN_OTA_DIR
  if (!otaDir || (slot !== 'a' && slot !== 'b' && slot !== 'fallback')) return undefined
  return { slot: slot === 'fallback' ? null : slot, otaDir }
}

/** What tests (and later builds) may plug in. */
export interface OtaHooks {
  channelFactory?: ChannelFactory
  onStep?: (step: Step, when: 'before' | 'performed') => void
  /** Wraps the self-test (tests make a release fail it). */
  selfTest?: (real: () => Promise<SelfTestResult>) => Promise<SelfTestResult>
}

export interface OtaDeps {
  config: Readonly<Config>
  launcher: LauncherInfo | undefined
  hooks: OtaHooks | undefined
  deviceId: string
  board: string
  version: string
  clock: Clock
  log: Logger
  db: Db
  outbox: Outbox
  eventMessage(e: OtaEvent): NewMessage
  emit(kind: string, data: Record<string, unknown>): void
  sample(): Promise<unknown>
  connected(): boolean
  /** Runs a signed broadcast command: 'applied', 'seen' (a replay, e.g. the retained
   * copy again after a reconnect) or 'refused' (not a valid signed command). */
  broadcast(payload: Buffer): Promise<'applied' | 'seen' | 'refused'>
  /** Stops the agent so that it exits with EXIT_SWITCH. */
  restart(): void
}

export class OtaService {
  readonly topic: string
  private published = false

  private constructor(
    private readonly d: OtaDeps,
    private readonly updater: Updater,
  ) {
    this.topic = releaseTopic(d.config.fleet)
  }

  /** The service, or undefined when updates are off (with the reason logged). */
  static create(d: OtaDeps): OtaService | undefined {
    const cfg = d.config.ota
    const enabled = cfg.enabled ?? cfg.releaseUrl !== undefined
    if (!enabled) return undefined
    if (!cfg.releaseUrl) {
      d.log.error('ota.enabled is set but ota.releaseUrl is not: updates are off')
      return undefined
    }
    if (!d.launcher) {
      d.log.warn('updates are on but the agent was not started by the launcher (ota/launcher.mjs): updates are off')
      return undefined
    }
    const otaDir = d.launcher.otaDir
    let channel
    try {
      channel = (d.hooks?.channelFactory ?? defaultChannelFactory)({ releaseUrl: cfg.releaseUrl, releaseRoot: cfg.releaseRoot, cacheDir: join(otaDir, 'tuf'), log: d.log.child({ mod: 'tuf' }) })
    } catch (err) {
      d.log.error({ err: errorBody(err).message }, 'release channel not available: updates are off')
      return undefined
    }
    let self!: OtaService
    const updater = new Updater({
      store: new SqlOtaStore(d.db, d.outbox, d.eventMessage, d.clock),
      slots: new DirectorySlots(otaDir),
      channel,
      clock: d.clock,
      log: d.log,
      running: { version: d.version, slot: d.launcher.slot },
      device: { deviceId: d.deviceId, arch: process.arch, board: d.board, channel: cfg.channel },
      settings: { pollS: cfg.pollS, healthDeadlineS: cfg.healthDeadlineS, maxAttempts: cfg.maxAttempts, hintMinS: cfg.hintMinS },
      downloadDir: join(otaDir, 'download'),
      health: { connected: () => d.connected(), statusPublished: () => self.published },
      selfTest: () => {
        const real = () => runSelfTest({ stateDir: d.config.stateDir, sample: d.sample })
        return d.hooks?.selfTest ? d.hooks.selfTest(real) : real()
      },
      emit: d.emit,
      restart: d.restart,
      ...(d.hooks?.onStep ? { onStep: d.hooks.onStep } : {}),
    })
    self = new OtaService(d, updater)
    return self
  }

  get control(): OtaControl {
    const u = this.updater
    return { checkNow: () => u.checkNow(), setPaused: p => u.setPaused(p), pin: v => u.pin(v), status: () => u.status() }
  }

  start(): void {
    this.updater.start()
  }

  stop(): Promise<void> {
    return this.updater.stop()
  }

  /** Subscriptions the link makes on every connection. */
  filters(): string[] {
    return [this.topic]
  }

  /** The retained status of this connection was acknowledged (part of the health check). */
  statusPublished(): void {
    this.published = true
    // After the link has marked itself ready (it does so once onConnect returns).
    setImmediate(() => this.updater.wake())
  }

  /** True when the message was for OTA (the release topic). */
  handle(topic: string, payload: Buffer): boolean {
    if (topic !== this.topic) return false
    void this.onRelease(payload).catch(err => this.d.log.error({ err }, 'release message handling failed'))
    return true
  }

  private async onRelease(payload: Buffer): Promise<void> {
    // A signed broadcast (pause-updates from `cairn fleet rollout halt`, …) is applied;
    // anything else is an untrusted hint that only triggers a rate-limited check.
    if (looksSigned(payload) && (await this.d.broadcast(payload)) !== 'refused') return
    if (this.updater.hint()) this.d.log.info('release hint: checking')
  }
}

function looksSigned(payload: Buffer): boolean {
  if (payload.length === 0 || payload[0] !== 0x7b) return false
  try {
    const v = JSON.parse(payload.toString('utf8')) as Record<string, unknown>
    return typeof v === 'object' && v !== null && typeof v.sig === 'string' && typeof v.type === 'string'
  } catch {
    return false
  }
}
