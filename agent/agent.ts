// The device agent, composed: the core (identity, state DB, outbox, broker link, signed
// commands, status, telemetry, live configuration, health endpoint) and the features
// that plug into it through the extension port (agent/core/extension.ts): uptime
// proofs, tasks, and whatever the composition room hands in (OTA, in cli/run-agent.ts).
// The content cache, the status LED and button, and the local API are on-device parts
// the core builds alongside. Nothing runs at import time; `startAgent` builds one
// running agent, and cli/run-agent.ts keeps it going across in-place restarts.

import type { IPublishPacket } from 'mqtt'
import type { Level } from 'pino'
import { createTelemetry, type HwContext } from '../hw/index.js'
import type { Clock } from '../protocol/clock.js'
import { loadOrCreateIdentity, type Identity } from '../protocol/identity.js'
import { readPublicKeyFile } from '../protocol/keys.js'
import type { Logger, LogRing } from '../protocol/log.js'
import { ReplayGuard } from '../protocol/replay-guard.js'
import { deviceTopics } from '../protocol/topics.js'
import { startCacheService, type CacheService } from './cache/cache-service.js'
import type { LoadedConfig } from './config/load-config.js'
import { describeAgentMetrics, refreshLinkGauges } from './core/agent-metrics.js'
import type { CommandRouter } from './core/command-router.js'
import { deviceCommands } from './core/device-commands.js'
import { deviceEvents } from './core/device-events.js'
import type { AgentCore, AgentExtension, ExtensionFactory, StatusFields, StopReason } from './core/extension.js'
import { closeHealthEndpoint, startHealthEndpoint } from './core/health-server.js'
import { LiveConfig } from './core/live-config.js'
import { LocalBus } from './core/local-bus.js'
import { Metrics } from './core/metrics.js'
import { MqttLink, packetLimitFor } from './core/mqtt-link.js'
import { OperatorKeys } from './core/operators.js'
import { Problems } from './core/problems.js'
import { CLASS_NAMES, Outbox } from './core/outbox.js'
import { openStateDb, type Db } from './core/state-db.js'
import { statusMessage } from './core/status.js'
import { isStorageError, releaseReserve, StorageHealth } from './core/storage-health.js'
import type { SystemPort } from './core/system.js'
import { TelemetryLoop } from './core/telemetry-loop.js'
import { DeviceUi } from './device-ui/device-ui.js'
import { startAgentLocalApi } from './local-api/agent-host.js'
import type { LocalApi } from './local-api/api-server.js'
import { MAX_PROOF_REQUEST_BYTES, type DeviceProofs } from './proof/device-proofs.js'
import { proofExtension } from './proof/proof-extension.js'
import type { TaskExecutor } from './task/executor-port.js'
import { taskExtension } from './task/task-extension.js'
import type { TaskService } from './task/task-service.js'

export interface AgentDeps {
  loaded: LoadedConfig
  /** Re-reads file, env and flags (SIGHUP, restart-agent); with `remote`, uses those
   * values in place of the remote set-config file. */
  reload: (remote?: Record<string, unknown>) => LoadedConfig
  log: Logger
  ring: LogRing
  clock: Clock
  hw: Omit<HwContext, 'diskPaths'>
  system: SystemPort
  version: string
  /** Features of other rooms, built afresh for each run (OTA: cli/run-agent.ts). */
  extensions?: readonly ExtensionFactory[] | undefined
  /** Task executors in place of the built-in ones (tests); with `taskTimings`, the queue's test seams. */
  taskExecutors?: readonly TaskExecutor[] | undefined
  taskTimings?: { graceMs?: number; coolDownMs?: number; tickMs?: number } | undefined
}

export interface RunningAgent {
  readonly deviceId: string
  readonly identity: Identity
  readonly outbox: Outbox
  readonly link: MqttLink
  readonly metrics: Metrics
  /** Uptime proofs; undefined when proof.enabled is false. */
  readonly proofs: DeviceProofs | undefined
  /** Content cache: the store (always), its HTTP server and serve receipts (cache.enabled). */
  readonly cache: CacheService
  /** Inference and cache tasks (docs/tasks.md); undefined when tasks.enabled is false. */
  readonly tasks: TaskService | undefined
  readonly healthPort: number | undefined
  /** Resolves when the agent has stopped, with why. */
  readonly done: Promise<StopReason>
  stop(reason: StopReason): Promise<void>
  /** Applies a re-read configuration: live where possible, else an in-place restart. */
  reload(): void
  publishEvent(kind: string, data: Record<string, unknown>): void
  /** On-device observers (local API, status LED): telemetry samples and every event. */
  readonly bus: LocalBus
  /** The local API (docs/local-api.md); undefined when off or it could not start. */
  readonly localApi: LocalApi | undefined
  /** Status LED, button, agent state and the GPIO driver they share with the local API. */
  readonly deviceUi: DeviceUi
}

export async function startAgent(deps: AgentDeps): Promise<RunningAgent> {
  const { clock, ring, log } = deps
  const startConfig = deps.loaded.config
  log.level = startConfig.log.level as Level
  const startedAt = clock.now()

  // The core's parts.
  const { identity, created } = loadOrCreateIdentity(startConfig.stateDir)
  const deviceId = identity.deviceId
  if (created) log.info({ deviceId }, 'made a new device key')
  const db: Db = openOnFullDisk(startConfig.stateDir)
  const metrics = new Metrics()
  describeAgentMetrics(metrics)
  const bus = new LocalBus()
  const problems = new Problems()
  let outbox!: Outbox
  // Built further down; closures made before then use it only once the agent runs.
  let link!: MqttLink
  const storage = new StorageHealth({ stateDir: startConfig.stateDir, clock, log, metrics, problems, bus, onRecovered: () => outbox.flush() })
  const topics = deviceTopics(startConfig.fleet, deviceId)
  const hw = createTelemetry({ ...deps.hw, diskPaths: startConfig.hw.diskPaths }, { now: () => clock.now() })
  const board = await hw.board()
  const operators = new OperatorKeys(
    db,
    startConfig.operatorKeys.map(f => readPublicKeyFile(f)),
  )
  if (operators.count() === 0) log.warn('no operator key is trusted: every command will be refused (use --operator-key FILE)')
  outbox = new Outbox(db, {
    onStorageError: (err, what) => storage.failed(err, what),
    clock,
    maxBytes: startConfig.outbox.maxBytes,
    lazyWriteMs: startConfig.outbox.lazyWriteMs,
    mustKeepDays: startConfig.outbox.mustKeepDays,
    onEvict: (cls, count) => {
      metrics.inc('cairn_outbox_evicted_total', { class: CLASS_NAMES[cls] }, count)
      log.warn({ cls, count }, 'outbox full: evicted old messages')
    },
  })
  const events = deviceEvents({
    deviceId,
    topic: topics.event,
    clock,
    outbox,
    bus,
    unstored: (err, topic, payload) => {
      if (!storage.failed(err, 'outbox: store an event')) return false
      if (link?.connected) link.publishNow(topic, payload, { qos: 0 }).catch(() => undefined)
      return true
    },
  })
  const telemetry = new TelemetryLoop({
    deviceId,
    topic: topics.telemetry,
    clock,
    log,
    outbox,
    metrics,
    bus,
    periodS: () => live.config.telemetry.periodS,
    sample: () => hw.sample(),
    // The device UI is made further down, before the first sample is taken.
    io: () => deviceUi.io(),
  })
  const live = new LiveConfig({
    problems,
    now: () => clock.now(),
    loaded: deps.loaded,
    reload: deps.reload,
    log,
    publishEvent: events.publish,
    restart: () => void stop('restart'),
    applied: before => {
      const c = live.config
      log.level = c.log.level as Level
      outbox.configure({ maxBytes: c.outbox.maxBytes, lazyWriteMs: c.outbox.lazyWriteMs, mustKeepDays: c.outbox.mustKeepDays })
      if (before.telemetry.periodS !== c.telemetry.periodS) telemetry.reschedule()
    },
  })
  const cache = await startCacheService({ config: startConfig, db, outbox, identity, clock, log: log.child({ mod: 'cache' }) })
  let router!: CommandRouter
  const core: AgentCore = {
    deviceId,
    identity,
    board,
    version: deps.version,
    clock,
    log,
    db,
    outbox,
    metrics,
    bus,
    replay: new ReplayGuard(db, startConfig.commands.skewS * 1000),
    isOperator: keyId => operators.isTrusted(keyId),
    config: () => live.config,
    connected: () => link.connected,
    publishEvent: events.publish,
    eventRecord: events.record,
    sample: () => hw.sample(),
    lastSample: () => telemetry.lastSample,
    publishNow: (topic, payload) => link.publishNow(topic, payload, { qos: 1 }),
    publishQuick: (topic, payload, props) => link.publishQuick(topic, payload, props),
    refreshStatus: () => {
      if (link.connected) link.publishNow(topics.status, status('online'), { qos: 1, retain: true }).catch(() => undefined)
    },
    runBroadcast: async (payload, allowed) => {
      const res = await router.handleBroadcast(payload, allowed)
      return res.ok ? 'applied' : res.code === 'REPLAY' ? 'seen' : 'refused'
    },
    stop: reason => void stop(reason),
  }

  // The features: the agent's own, then those handed in (OTA, from cli/run-agent.ts).
  const proofs = startConfig.proof.enabled ? proofExtension(core) : undefined
  const tasks = startConfig.tasks.enabled ? taskExtension(core, { store: cache.store, hw: deps.hw, executors: deps.taskExecutors, timings: deps.taskTimings }) : undefined
  const extensions: AgentExtension[] = [...(proofs ? [proofs.extension] : []), ...(tasks ? [tasks.extension] : []), ...(deps.extensions ?? []).flatMap(f => f(core) ?? [])]
  // Set when each connection's Will is made: the Will and that connection's online status
  // carry it as `conn`, so consumers order a device's presence messages (docs/protocol.md).
  let connectionOpenedAt: number | undefined
  const statusFields = (): StatusFields => Object.assign({}, ...extensions.map(x => x.statusFields?.() ?? {})) as StatusFields
  const statusOptions = {
    deviceId,
    fleet: startConfig.fleet,
    version: deps.version,
    board,
    publicKey: identity.publicKey,
    mqttVersion: startConfig.broker.mqttVersion,
    clock,
    startedAt,
    connectionOpenedAt: () => connectionOpenedAt,
    uptimeS: () => telemetry.lastSample?.uptimeS,
    fields: statusFields,
    problems: () => problems.list(),
  }
  const status = (state: 'online' | 'offline', reason?: 'shutdown' | 'connection-lost' | 'restart'): Buffer => statusMessage(statusOptions, state, reason)

  problems.onChange(() => core.refreshStatus())
  router = deviceCommands({ core, extensions, operators, live, ring, system: deps.system, startedAt, link: () => link, stop: r => stop(r) })
  link = new MqttLink({
    broker: startConfig.broker,
    clientId: `cairn-${deviceId}`,
    // A fresh Will (new id) for every connection, so consumers de-duplicating by id see each loss.
    will: () => {
      connectionOpenedAt = clock.now()
      return { topic: topics.status, payload: status('offline', 'connection-lost') }
    },
    outbox,
    maxInflight: startConfig.outbox.maxInflight,
    maximumPacketSize: packetLimitFor(startConfig.commands.maxPayloadBytes, startConfig.tasks.enabled ? startConfig.tasks.maxRequestBytes : 0, startConfig.proof.enabled ? MAX_PROOF_REQUEST_BYTES : 0),
    log: log.child({ mod: 'mqtt' }),
    metrics,
    onConnect: async l => {
      await l.subscribe(topics.cmdFilter)
      for (const x of extensions) for (const f of x.filters?.() ?? []) await l.subscribe(f)
      await l.publishNow(topics.status, status('online'), { qos: 1, retain: true })
      for (const x of extensions) x.onStatusPublished?.()
    },
    onMessage: (topic: string, payload: Buffer, packet: IPublishPacket) => {
      for (const x of extensions) if (x.handle?.(topic, payload, packet)) return
      return router.handle(topic, payload, packet).catch(err => log.error({ err }, 'command handling failed'))
    },
  })

  // On-device parts: the health endpoint, the status LED and button, the local API.
  const health = await startHealthEndpoint(startConfig.health, { metrics, health: () => ({ ok: true, connected: link.connected, outboxDepth: outbox.depth(), device: deviceId }) }, log)
  const deviceUi = new DeviceUi({
    config: startConfig,
    hw: deps.hw,
    bus,
    log: log.child({ mod: 'gpio' }),
    connected: () => link.connected,
    publishEvent: events.publish,
    settle: ms => link.settle(ms),
  })
  const refreshGauges = setInterval(() => refreshLinkGauges(metrics, outbox, link), 1000)
  refreshGauges.unref()
  let localApi: LocalApi | undefined

  let stopping: Promise<void> | undefined
  let resolveDone!: (r: StopReason) => void
  const done = new Promise<StopReason>(r => (resolveDone = r))
  const stop = (reason: StopReason): Promise<void> => {
    stopping ??= (async () => {
      log.info({ reason }, 'stopping')
      telemetry.stop()
      for (const x of extensions) await x.stop?.()
      await cache.stop()
      await localApi?.close()
      await deviceUi.stop()
      clearInterval(refreshGauges)
      await link.settle(3000, { hold: true })
      await link.stop({ topic: topics.status, payload: status('offline', reason === 'shutdown' ? 'shutdown' : 'restart') })
      storage.stop()
      try {
        outbox.close()
        db.close()
      } catch (err) {
        // A full disk at the very end: what is not stored is sent again after the restart.
        log.error({ err }, 'closing the state DB failed')
      }
      await closeHealthEndpoint(health)
      resolveDone(reason)
    })()
    return stopping
  }

  storage.start()
  outbox.start()
  link.start()
  telemetry.start()
  for (const x of extensions) x.start?.()
  await deviceUi.start()
  localApi = await startAgentLocalApi({
    config: startConfig,
    log,
    version: deps.version,
    deviceId,
    board,
    bus,
    ui: deviceUi,
    connected: () => link.connected,
    outboxDepth: () => outbox.depth(),
    extensions,
    tasks: tasks?.service,
    sample: () => hw.sample(),
  })
  // A stop that began while the API was starting has already passed its close(): close it here.
  if (stopping) await localApi?.close()
  const { slot } = statusFields()
  events.publish('agent.started', { version: deps.version, board: board.kind, model: board.model, ...(slot !== undefined ? { slot } : {}) })
  log.info({ deviceId, fleet: startConfig.fleet, broker: startConfig.broker.url, board: board.kind }, 'agent started')

  return {
    deviceId,
    identity,
    outbox,
    link,
    metrics,
    proofs: proofs?.proofs,
    cache,
    tasks: tasks?.service,
    healthPort: health?.port,
    done,
    stop,
    publishEvent: events.publish,
    bus,
    localApi,
    deviceUi,
    reload: () => live.reload(),
  }
}

/** The state DB, also on a disk that filled up since the last run: a first failure to
 * open it frees the state dir's reserve (agent/core/storage-health.ts) and tries again. */
function openOnFullDisk(stateDir: string): Db {
  try {
    return openStateDb(stateDir)
  } catch (err) {
    if (!isStorageError(err)) throw err
    releaseReserve(stateDir)
    return openStateDb(stateDir)
  }
}
