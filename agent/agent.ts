// The device agent, composed: the core (identity, state DB, outbox, broker link, signed
// commands, status, telemetry, live configuration, health endpoint) and the features
// that plug into it through the extension port (agent/core/extension.ts): uptime
// proofs, tasks, and whatever the composition room hands in (OTA, in cli/run-agent.ts).
// The content cache, the status LED and button, and the local API are on-device parts
// the core builds alongside. Nothing runs at import time; `startAgent` builds one
// running agent, and cli/run-agent.ts keeps it going across in-place restarts.

import type { Server } from 'node:http'
import type { IPublishPacket } from 'mqtt'
import type { Level } from 'pino'
import { accelerators, createTelemetry, type Board, type HwContext, type TelemetrySample } from '../hw/index.js'
import type { Clock } from '../protocol/clock.js'
import { loadOrCreateIdentity, type Identity } from '../protocol/identity.js'
import { newId } from '../protocol/ids.js'
import { readPublicKeyFile } from '../protocol/keys.js'
import type { Logger, LogRing } from '../protocol/log.js'
import type { EventMessage } from '../protocol/messages.js'
import { deviceTopics } from '../protocol/topics.js'
import { startCacheService, type CacheService } from './cache/cache-service.js'
import type { LoadedConfig } from './config/load-config.js'
import { describeAgentMetrics, refreshLinkGauges } from './core/agent-metrics.js'
import { CommandRouter } from './core/command-router.js'
import { BUILTIN_COMMANDS, CommandTable, type CommandContext } from './core/commands.js'
import type { AgentCore, AgentExtension, ExtensionFactory, StatusFields, StopReason } from './core/extension.js'
import { startHealthServer } from './core/health-server.js'
import { LiveConfig } from './core/live-config.js'
import { LocalBus } from './core/local-bus.js'
import { Metrics } from './core/metrics.js'
import { MqttLink, packetLimitFor } from './core/mqtt-link.js'
import { OperatorKeys } from './core/operators.js'
import { CLASS_NAMES, MsgClass, Outbox, type NewMessage } from './core/outbox.js'
import { ReplayGuard } from '../protocol/replay-guard.js'
import { openStateDb, type Db } from './core/state-db.js'
import { statusMessage } from './core/status.js'
import type { SystemPort } from './core/system.js'
import { TelemetryLoop } from './core/telemetry-loop.js'
import { DeviceUi } from './device-ui/device-ui.js'
import { startAgentLocalApi } from './local-api/agent-host.js'
import type { LocalApi } from './local-api/api-server.js'
import { DeviceProofs, MAX_PROOF_REQUEST_BYTES } from './proof/device-proofs.js'
import { startBuiltinExecutors } from './task/builtin-executors.js'
import { TaskService } from './task/task-service.js'
import type { TaskExecutor } from './task/executor-port.js'

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
  const operatorKeyObjects = startConfig.operatorKeys.map(f => readPublicKeyFile(f))
  const db: Db = openStateDb(startConfig.stateDir)
  const metrics = new Metrics()
  describeAgentMetrics(metrics)
  const bus = new LocalBus()
  const topics = deviceTopics(startConfig.fleet, deviceId)
  const hwSource = createTelemetry({ ...deps.hw, diskPaths: startConfig.hw.diskPaths }, { now: () => clock.now() })
  const board: Board = await hwSource.board()
  const operators = new OperatorKeys(db, operatorKeyObjects)
  if (operators.count() === 0) log.warn('no operator key is trusted: every command will be refused (use --operator-key FILE)')
  const replay = new ReplayGuard(db, startConfig.commands.skewS * 1000)
  const outbox = new Outbox(db, {
    clock,
    maxBytes: startConfig.outbox.maxBytes,
    lazyWriteMs: startConfig.outbox.lazyWriteMs,
    mustKeepDays: startConfig.outbox.mustKeepDays,
    onEvict: (cls, count) => {
      metrics.inc('cairn_outbox_evicted_total', { class: CLASS_NAMES[cls] }, count)
      log.warn({ cls, count }, 'outbox full: evicted old messages')
    },
  })
  const eventMessage = (kind: string, data: Record<string, unknown>): EventMessage => ({ v: 1, id: newId(clock.now()), device: deviceId, ts: clock.now(), kind, data })
  const recordOf = (msg: EventMessage): NewMessage => ({ id: msg.id, cls: MsgClass.event, topic: topics.event, payload: Buffer.from(JSON.stringify(msg)) })
  const eventRecord = (kind: string, data: Record<string, unknown>): NewMessage => recordOf(eventMessage(kind, data))
  const publishEvent = (kind: string, data: Record<string, unknown>): void => {
    const msg = eventMessage(kind, data)
    outbox.enqueue(recordOf(msg))
    bus.emit('event', { kind, ts: msg.ts, data })
  }
  const telemetry = new TelemetryLoop({ deviceId, topic: topics.telemetry, clock, log, outbox, metrics, bus, periodS: () => live.config.telemetry.periodS, sample: () => hwSource.sample() })
  const live = new LiveConfig({
    loaded: deps.loaded,
    reload: deps.reload,
    log,
    publishEvent,
    restart: () => void stop('restart'),
    applied: before => {
      const c = live.config
      log.level = c.log.level as Level
      outbox.configure({ maxBytes: c.outbox.maxBytes, lazyWriteMs: c.outbox.lazyWriteMs, mustKeepDays: c.outbox.mustKeepDays })
      if (before.telemetry.periodS !== c.telemetry.periodS) telemetry.reschedule()
    },
  })
  const lastSample = (): TelemetrySample | undefined => telemetry.lastSample
  const cache = await startCacheService({ config: startConfig, db, outbox, identity, clock, log: log.child({ mod: 'cache' }) })

  let stopping: Promise<void> | undefined
  let link!: MqttLink
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
    config: () => live.config,
    connected: () => link.connected,
    publishEvent,
    eventRecord,
    sample: () => hwSource.sample(),
    runBroadcast: async (payload, allowed) => {
      const res = await router.handleBroadcast(payload, allowed)
      return res.ok ? 'applied' : res.code === 'REPLAY' ? 'seen' : 'refused'
    },
    stop: reason => void stop(reason),
  }

  // The agent's own features, then those handed in.
  const proofs = startConfig.proof.enabled ? proofsFeature(core, replay, lastSample, (topic, payload) => link.publishNow(topic, payload, { qos: 1 })) : undefined
  const tasks = startConfig.tasks.enabled
    ? tasksFeature(
        core,
        deps,
        replay,
        operators,
        lastSample,
        () => link,
        () => publishStatus(),
      )
    : undefined
  let builtinExecutors: { close(): Promise<void> } | undefined
  const extensions: AgentExtension[] = [...(proofs ? [proofs.extension] : []), ...(tasks ? [tasks.extension] : []), ...(deps.extensions ?? []).flatMap(f => f(core) ?? [])]
  const statusFields = (): StatusFields => Object.assign({}, ...extensions.map(x => x.statusFields?.() ?? {})) as StatusFields
  const status = (state: 'online' | 'offline', reason?: 'shutdown' | 'connection-lost' | 'restart'): Buffer =>
    statusMessage(
      {
        deviceId,
        fleet: startConfig.fleet,
        version: deps.version,
        board,
        publicKey: identity.publicKey,
        mqttVersion: startConfig.broker.mqttVersion,
        clock,
        startedAt,
        uptimeS: () => lastSample()?.uptimeS,
        fields: statusFields,
      },
      state,
      reason,
    )
  const publishStatus = (): void => {
    if (link.connected) link.publishNow(topics.status, status('online'), { qos: 1, retain: true }).catch(() => undefined)
  }

  // Signed commands: the core's and those the features registered.
  let pendingAction: 'restart-agent' | 'reboot' | undefined
  const act = async () => {
    const action = pendingAction
    pendingAction = undefined
    if (action === 'restart-agent') await stop('restart')
    if (action === 'reboot') {
      await link.settle(3000)
      outbox.flush()
      try {
        await deps.system.reboot()
      } catch (err) {
        log.error({ err }, 'reboot failed')
        publishEvent('system.reboot-failed', { message: (err as Error).message })
      }
    }
  }
  const context = (env: { iss: string }): CommandContext => ({
    issuer: env.iss,
    now: clock.now(),
    deviceId,
    startedAt,
    operators,
    logs: ring,
    uptimeS: () => lastSample()?.uptimeS,
    getConfig: () => live.view(),
    setConfig: patch => live.setRemote(patch),
    afterReply: action => {
      pendingAction = action
      // Let the reply reach the outbox and the broker before acting on it.
      setTimeout(() => void act(), 50)
    },
  })
  router = new CommandRouter({
    fleet: startConfig.fleet,
    deviceId,
    clock,
    maxPayloadBytes: startConfig.commands.maxPayloadBytes,
    maxTtlMs: startConfig.commands.maxTtlS * 1000,
    skewMs: startConfig.commands.skewS * 1000,
    operators,
    replay,
    outbox,
    log: log.child({ mod: 'cmd' }),
    metrics,
    // Dropped when there is no connection: a refusal is never queued.
    publishQuick: (topic, payload, props) => link.publishQuick(topic, payload, props),
    context,
    commands: new CommandTable([...BUILTIN_COMMANDS, ...extensions.flatMap(x => x.commands ?? [])]),
  })

  link = new MqttLink({
    broker: startConfig.broker,
    clientId: `cairn-${deviceId}`,
    // A fresh Will (new id) for every connection, so consumers de-duplicating by id see each loss.
    will: () => ({ topic: topics.status, payload: status('offline', 'connection-lost') }),
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
      void router.handle(topic, payload, packet).catch(err => log.error({ err }, 'command handling failed'))
    },
  })

  // On-device parts: the health endpoint, the status LED and button, the local API.
  let health: { server: Server; port: number } | undefined
  if (startConfig.health.enabled) {
    try {
      health = await startHealthServer(startConfig.health.host, startConfig.health.port, {
        metrics,
        health: () => ({ ok: true, connected: link.connected, outboxDepth: outbox.depth(), device: deviceId }),
      })
      log.info({ url: `http://${startConfig.health.host}:${health.port}/healthz` }, 'health endpoint up')
    } catch (err) {
      // Health is a convenience; a busy port must not keep the device off its fleet.
      log.error({ err, port: startConfig.health.port }, 'health endpoint not started')
    }
  }
  const deviceUi = new DeviceUi({ config: startConfig, hw: deps.hw, bus, log: log.child({ mod: 'gpio' }), connected: () => link.connected, publishEvent, settle: ms => link.settle(ms) })
  const refreshGauges = setInterval(() => refreshLinkGauges(metrics, outbox, link), 1000)
  refreshGauges.unref()

  let localApi: LocalApi | undefined
  let resolveDone!: (r: StopReason) => void
  const done = new Promise<StopReason>(r => (resolveDone = r))
  const stop = (reason: StopReason): Promise<void> => {
    stopping ??= (async () => {
      log.info({ reason }, 'stopping')
      telemetry.stop()
      for (const x of extensions) await x.stop?.()
      await builtinExecutors?.close()
      await cache.stop()
      await localApi?.close()
      await deviceUi.stop()
      clearInterval(refreshGauges)
      await link.settle(3000)
      await link.stop({ topic: topics.status, payload: status('offline', reason === 'shutdown' ? 'shutdown' : 'restart') })
      outbox.close()
      db.close()
      await new Promise<void>(r => (health ? health.server.close(() => r()) : r()))
      health?.server.closeAllConnections()
      resolveDone(reason)
    })()
    return stopping
  }

  outbox.start()
  link.start()
  telemetry.start()
  for (const x of extensions) x.start?.()
  // The inference worker loads its backend in the background: nothing waits for it.
  builtinExecutors =
    tasks && !deps.taskExecutors
      ? startBuiltinExecutors({
          types: startConfig.tasks.types,
          store: cache.store,
          stateDir: startConfig.stateDir,
          log: log.child({ mod: 'task' }),
          add: e => tasks.service.addExecutor(e),
          failed: type => tasks.service.executorFailed(type),
          accelerators: () => accelerators({ ...deps.hw, diskPaths: startConfig.hw.diskPaths }, board),
        })
      : undefined
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
    sample: () => hwSource.sample(),
  })
  // A stop that began while the API was starting has already passed its close(): close it here.
  if (stopping) await localApi?.close()
  publishEvent('agent.started', { version: deps.version, board: board.kind, model: board.model, ...startedFields(statusFields()) })
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
    publishEvent,
    bus,
    localApi,
    deviceUi,
    reload: () => live.reload(),
  }
}

/** agent.started names the slot the agent runs from (the rest of the status is in status). */
function startedFields(f: StatusFields): Record<string, unknown> {
  return f.slot !== undefined ? { slot: f.slot } : {}
}

/** Uptime proofs, device side (docs/proofs.md), as a feature of the core. */
function proofsFeature(
  core: AgentCore,
  replay: ReplayGuard,
  lastSample: () => TelemetrySample | undefined,
  publishNow: (topic: string, payload: Buffer) => Promise<void>,
): { proofs: DeviceProofs; extension: AgentExtension } {
  const config = core.config()
  const validators = config.proof.validatorKeys.map(f => readPublicKeyFile(f))
  if (validators.length === 0) core.log.info('no validator key is trusted: heartbeats will cite no beacon (use --validator-key FILE)')
  const proofs = new DeviceProofs({
    db: core.db,
    identity: core.identity,
    fleet: config.fleet,
    outbox: core.outbox,
    clock: core.clock,
    config: config.proof,
    validators,
    replay,
    skewMs: config.commands.skewS * 1000,
    telemetry: lastSample,
    log: core.log.child({ mod: 'proof' }),
    metrics: core.metrics,
    onEvent: (kind, data) => core.publishEvent(kind, data),
    publishNow,
  })
  return {
    proofs,
    extension: { name: 'proof', filters: () => proofs.filters(), handle: (topic, payload) => proofs.handle(topic, payload), start: () => proofs.start(), stop: () => proofs.stop() },
  }
}

/** Inference and cache tasks (docs/tasks.md), as a feature of the core. */
function tasksFeature(
  core: AgentCore,
  deps: AgentDeps,
  replay: ReplayGuard,
  operators: OperatorKeys,
  lastSample: () => TelemetrySample | undefined,
  link: () => MqttLink,
  publishStatus: () => void,
): { service: TaskService; extension: AgentExtension } {
  const config = core.config()
  const dispatchers = config.tasks.dispatcherKeys.map(f => readPublicKeyFile(f))
  const service = new TaskService({
    db: core.db,
    outbox: core.outbox,
    clock: core.clock,
    log: core.log.child({ mod: 'task' }),
    metrics: core.metrics,
    identity: core.identity,
    fleet: config.fleet,
    config: config.tasks,
    dispatchers,
    isOperator: k => operators.isTrusted(k),
    replay,
    skewMs: config.commands.skewS * 1000,
    maxTtlMs: config.commands.maxTtlS * 1000,
    executors: deps.taskExecutors ?? [],
    // The built-in executors join after start (startBuiltinExecutors); tasks wait for them.
    pendingTypes: deps.taskExecutors ? [] : config.tasks.types,
    telemetry: lastSample,
    bus: core.bus,
    publishQuick: (topic, payload, props) => link().publishQuick(topic, payload, props),
    // The inference backend is known only once its worker is up: say so in the status.
    onExecutorAdded: () => publishStatus(),
    ...deps.taskTimings,
  })
  if (dispatchers.length === 0) core.log.info('no dispatcher key is trusted: every task request will be refused (use --dispatcher-key FILE)')
  return {
    service,
    extension: {
      name: 'tasks',
      filters: () => service.filters(),
      handle: (topic, payload, packet) => service.handle(topic, payload, packet),
      statusFields: () => ({ tasks: service.status() }),
      start: () => service.start(),
      stop: () => service.stop(),
    },
  }
}
