// OTA inside the running agent, as an extension of it (agent/core/extension.ts): builds
// the updaters from the configuration and the launcher's environment, registers the
// OTA commands, listens on the fleet's release topic, adds the slot and Cairn OS to the
// status, and feeds the health check. Two updaters share one channel URL and never
// switch at the same time: one for agent releases (directory slots, the launcher), and
// on Cairn OS one for OS releases (the tryboot backend that the composition room finds
// with image-build/os-update/agent-os.ts and hands in).

import { join } from 'node:path'
import type { AgentCore, BroadcastOutcome, ExtensionFactory } from '../agent/core/extension.js'
import type { Clock } from '../protocol/clock.js'
import type { Config } from '../agent/config/config-schema.js'
import { CairnError } from '../protocol/errors.js'
import type { Logger } from '../protocol/log.js'
import type { NewMessage, Outbox } from '../agent/core/outbox.js'
import type { Db } from '../protocol/sqlite.js'
import type { StatusMessage } from '../protocol/messages.js'
import { releaseTopic } from '../protocol/topics.js'
import { defaultChannelFactory, type ChannelFactory } from './channel.js'
import { OTA_BROADCAST_COMMANDS, otaCommands, type OtaControl } from './ota-commands.js'
import { SqlOtaStore, type OtaEvent } from './ota-store.js'
import type { Step } from './update-plan.js'
import { runSelfTest, type SelfTestResult } from '../agent/core/self-test.js'
import { DirectorySlots, type SlotBackend, type SlotName } from './slots.js'
import { Updater, type OtaStatus } from './updater.js'
import type { ReleaseInfo } from './release-types.js'

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

/** The OS side, on a device whose OS updates itself in A/B slots (Cairn OS). */
interface OsUpdateDeps {
  /** the tryboot backend (image-build/os-update/tryboot-slots.ts) */
  slots: SlotBackend
  /** the running OS release (/etc/cairn-release) and the slot it booted from */
  version: string
  slot: SlotName
  /** how long after its boot a trial must commit (reported in ota.switching) */
  trialDeadlineS?: number
}

/** Where each updater's record lives in state.db. */
const RECORD_TABLE = { agent: 'ota_state', os: 'ota_os_state' } as const

/** What one updater must know of the other's switch. */
export interface SwitchState {
  readonly switchInFlight: boolean
  readonly switchPending: boolean
}

/** Agent and OS updates never overlap, and never wait for each other both: the agent's
 * switch goes first. The agent updater holds only while an OS switch is made and not
 * over; the OS updater holds while the agent's is pending (staged) or not over. */
export const agentHold = (os: SwitchState | undefined): string | undefined => (os?.switchInFlight ? 'an OS update is on trial' : undefined)
export const osHold = (agent: SwitchState, agentTrial: boolean): string | undefined => (agent.switchPending || agentTrial ? 'an agent update is switching or on trial' : undefined)

/** What tests (and later builds) may plug in. */
export interface OtaHooks {
  channelFactory?: ChannelFactory
  onStep?: (step: Step, when: 'before' | 'performed') => void
  /** Wraps the self-test (tests make a release fail it). */
  selfTest?: (real: () => Promise<SelfTestResult>) => Promise<SelfTestResult>
}

interface OtaDeps {
  config: Readonly<Config>
  launcher: LauncherInfo | undefined
  /** OS updates; absent where the OS is not Cairn OS or cannot switch slots */
  os?: OsUpdateDeps | undefined
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
  broadcast(payload: Buffer): Promise<BroadcastOutcome>
  /** Stops the agent so that it exits with EXIT_SWITCH. */
  restart(): void
}

/** Cairn OS as the composition room found it at start. */
type OsInfo = NonNullable<StatusMessage['os']>
export interface CairnOsFound {
  info: OsInfo
  /** present when this device installs OS releases */
  deps?: OsUpdateDeps | undefined
}

export interface OtaExtensionOptions {
  /** Where the launcher says the agent runs from; undefined: not started by it. */
  launcher: LauncherInfo | undefined
  /** Finds Cairn OS on this machine (undefined: not Cairn OS). */
  os?: ((core: AgentCore) => CairnOsFound | undefined) | undefined
  hooks?: OtaHooks | undefined
}

/** OTA as an agent extension: always reports the slot and Cairn OS in the status; runs
 * updaters only when updates are on (and says why not otherwise). */
export function otaExtension(o: OtaExtensionOptions): ExtensionFactory {
  return core => {
    const config = core.config()
    const cairnOs = o.os?.(core)
    if (cairnOs) core.log.info({ os: cairnOs.info }, cairnOs.info.updates ? 'Cairn OS: OS updates on' : `Cairn OS: OS updates off: ${cairnOs.info.detail}`)
    const log = core.log.child({ mod: 'ota' })
    const service = OtaService.create({
      config,
      launcher: o.launcher,
      os: cairnOs?.deps,
      hooks: o.hooks,
      deviceId: core.deviceId,
      board: core.board.kind,
      version: core.version,
      clock: core.clock,
      log,
      db: core.db,
      outbox: core.outbox,
      eventMessage: e => core.eventRecord(e.kind, e.data),
      emit: (kind, data) => core.publishEvent(kind, data),
      sample: () => core.sample(),
      connected: () => core.connected(),
      broadcast: payload => core.runBroadcast(payload, OTA_BROADCAST_COMMANDS),
      restart: () => core.stop('update'),
    })
    return {
      name: 'ota',
      commands: otaCommands(() => service?.control),
      filters: () => service?.filters() ?? [],
      handle: (topic, payload) => service?.handle(topic, payload) ?? false,
      statusFields: () => ({ ...(o.launcher ? { slot: o.launcher.slot ?? 'fallback' } : {}), ...(cairnOs ? { os: cairnOs.info } : {}) }),
      ...(service ? { localStatus: () => service.control.status() } : {}),
      onStatusPublished: () => service?.statusPublished(),
      start: () => service?.start(),
      stop: () => service?.stop(),
    }
  }
}

class OtaService {
  readonly topic: string
  private published = false

  private constructor(
    private readonly d: OtaDeps,
    private readonly updater: Updater,
    private readonly osUpdater: Updater | undefined,
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
    const releaseUrl = cfg.releaseUrl
    const channelFor = (kind: ReleaseInfo['kind']) =>
      (d.hooks?.channelFactory ?? defaultChannelFactory)({
        releaseUrl,
        releaseRoot: cfg.releaseRoot,
        cacheDir: join(otaDir, kind === 'os' ? 'tuf-os' : 'tuf'),
        kind,
        log: d.log.child({ mod: 'tuf', kind }),
      })
    let self!: OtaService
    const build = (
      kind: ReleaseInfo['kind'],
      slots: SlotBackend,
      running: { version: string; slot: SlotName | null },
      channel: ReturnType<typeof channelFor>,
      holdSwitch: () => string | undefined,
    ) => {
      // OS events say so: `target: "os"` (agent events carry none, as before).
      const tag = (data: Record<string, unknown>) => (kind === 'os' ? { ...data, target: 'os' } : data)
      return new Updater({
        kind,
        holdSwitch,
        store: new SqlOtaStore(d.db, d.outbox, e => d.eventMessage({ kind: e.kind, data: tag(e.data) }), d.clock, RECORD_TABLE[kind]),
        slots,
        channel,
        clock: d.clock,
        log: kind === 'os' ? d.log.child({ target: 'os' }) : d.log,
        running,
        device: { deviceId: d.deviceId, arch: process.arch, board: d.board, channel: cfg.channel },
        // an OS trial's window is its slot backend's (from its boot), reported as such
        settings: { pollS: cfg.pollS, healthDeadlineS: kind === 'os' ? (d.os?.trialDeadlineS ?? cfg.healthDeadlineS) : cfg.healthDeadlineS, maxAttempts: cfg.maxAttempts, hintMinS: cfg.hintMinS },
        downloadDir: join(otaDir, kind === 'os' ? 'download-os' : 'download'),
        health: { connected: () => d.connected(), statusPublished: () => self.published },
        selfTest: () => {
          const real = () => runSelfTest({ stateDir: d.config.stateDir, sample: d.sample })
          return d.hooks?.selfTest ? d.hooks.selfTest(real) : real()
        },
        emit: (k, data) => d.emit(k, tag(data)),
        restart: d.restart,
        ...(d.hooks?.onStep ? { onStep: d.hooks.onStep } : {}),
      })
    }
    let agentUpdater!: Updater
    let osUpdater: Updater | undefined
    try {
      const agentSlots = new DirectorySlots(otaDir)
      agentUpdater = build('agent', agentSlots, { version: d.version, slot: d.launcher.slot }, channelFor('agent'), () => agentHold(osUpdater))
      if (d.os) osUpdater = build('os', d.os.slots, { version: d.os.version, slot: d.os.slot }, channelFor('os'), () => osHold(agentUpdater, agentSlots.current().trial !== null))
    } catch (err) {
      d.log.error({ err }, 'release channel not available: updates are off')
      return undefined
    }
    self = new OtaService(d, agentUpdater, osUpdater)
    return self
  }

  get control(): OtaControl {
    const u = this.updater
    const os = this.osUpdater
    const both = (s: OtaStatus): OtaStatus => (os ? { ...s, os: os.status() } : s)
    const pick = (target: ReleaseInfo['kind'] | undefined): Updater[] => {
      if (target === 'os' && !os) throw new CairnError('OTA_DISABLED', 'OS updates are off on this device (not Cairn OS, or it cannot switch slots: see the status message)')
      return target === undefined ? [u, ...(os ? [os] : [])] : [target === 'os' ? os! : u]
    }
    return {
      checkNow: () => {
        os?.checkNow()
        return both(u.checkNow())
      },
      setPaused: (p, target) => {
        for (const x of pick(target)) x.setPaused(p)
        return both(u.status())
      },
      pin: (v, target) => {
        pick(target ?? 'agent')[0]!.pin(v)
        return both(u.status())
      },
      status: () => both(u.status()),
    }
  }

  start(): void {
    this.updater.start()
    this.osUpdater?.start()
  }

  async stop(): Promise<void> {
    await Promise.all([this.updater.stop(), this.osUpdater?.stop()])
  }

  /** Subscriptions the link makes on every connection. */
  filters(): string[] {
    return [this.topic]
  }

  /** The retained status of this connection was acknowledged (part of the health check). */
  statusPublished(): void {
    this.published = true
    // After the link has marked itself ready (it does so once onConnect returns).
    setImmediate(() => {
      this.updater.wake()
      this.osUpdater?.wake()
    })
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
    const agent = this.updater.hint()
    const os = this.osUpdater?.hint() ?? false
    if (agent || os) this.d.log.info('release hint: checking')
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
