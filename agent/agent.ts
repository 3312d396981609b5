// Wires the agent together: identity, state DB, outbox, broker link, command router,
// telemetry loop, health server. Nothing here runs at import time; `startAgent` builds
// one running agent and `runAgent` keeps it going across in-place restarts.

import { join } from 'node:path'
import type { Server } from 'node:http'
import type { Level } from 'pino'
import type { Clock } from '../protocol/clock.js'
import { CommandRouter } from './core/command-router.js'
import { BUILTIN_COMMANDS, CommandTable, type CommandContext } from './core/commands.js'
import { REMOTE_SETTABLE, type Config } from './config/config-schema.js'
import { REMOTE_CONFIG_FILE, remoteLayer, UNSAFE_KEYS, type LoadedConfig } from './config/load-config.js'
import { CairnError } from '../protocol/errors.js'
import { startHealthServer } from './core/health-server.js'
import { loadOrCreateIdentity, type Identity } from '../protocol/identity.js'
import { newId } from '../protocol/ids.js'
import { publicKeyPem, readPublicKeyFile, writeFileAtomic } from '../protocol/keys.js'
import type { Logger, LogRing } from '../protocol/log.js'
import type { EventMessage, StatusMessage, TelemetryMessage } from '../protocol/messages.js'
import { Metrics } from './core/metrics.js'
import { MqttLink, packetLimitFor } from './core/mqtt-link.js'
import { OperatorKeys } from './core/operators.js'
import { CLASS_NAMES, MsgClass, Outbox } from './core/outbox.js'
import { ReplayGuard } from '../protocol/replay-guard.js'
import { openStateDb, type Db } from './core/state-db.js'
import type { SystemPort } from './core/system.js'
import { deviceTopics } from '../protocol/topics.js'
import { LocalBus } from './core/local-bus.js'
import { DeviceProofs, MAX_PROOF_REQUEST_BYTES } from './proof/device-proofs.js'
import { startCacheService, type CacheService } from './cache/cache-service.js'
import { DeviceUi } from './device-ui/index.js'
import { startAgentLocalApi } from './local-api/agent-host.js'
import type { LocalApi } from './local-api/api-server.js'
import { TaskService } from './task/task-service.js'
import type { TaskExecutor } from './task/types.js'
import { startBuiltinExecutors } from './task/builtin-executors.js'
import { OtaService, type LauncherInfo, type OsUpdateDeps, type OtaHooks } from '../ota/ota-service.js'
import { detectCairnOs, type CairnOsInfo } from '../image-build/os-update/agent-os.js'
import { OTA_BROADCAST_COMMANDS, otaCommands } from '../ota/ota-commands.js'
import { accelerators, createTelemetry, type Board, type HwContext, type TelemetrySample } from '../hw/index.js'

/** 'update': hand over to the OTA launcher (the process exits with EXIT_SWITCH). */
export type StopReason = 'shutdown' | 'restart' | 'update'

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
  /** Set when started by the OTA launcher (CAIRN_SLOT, CAIRN_OTA_DIR). */
  launcher?: LauncherInfo | undefined
  /** Test seams of the updater (a release channel of their own, step tracing). */
  otaHooks?: OtaHooks | undefined
  /** Cairn OS and its OS updates, in place of what the agent finds on this machine
   * (tests); null: not Cairn OS. */
  cairnOs?: { info: CairnOsInfo; deps?: OsUpdateDeps } | null | undefined
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
  let { config, sources } = deps.loaded
  const { clock, ring } = deps
  const log = deps.log
  log.level = config.log.level as Level
  const startedAt = clock.now()
  const { identity, created } = loadOrCreateIdentity(config.stateDir)
  const deviceId = identity.deviceId
  if (created) log.info({ deviceId }, 'made a new device key')
  const operatorKeyObjects = config.operatorKeys.map(f => readPublicKeyFile(f))
  const validatorKeyObjects = config.proof.validatorKeys.map(f => readPublicKeyFile(f))
  const dispatcherKeyObjects = config.tasks.dispatcherKeys.map(f => readPublicKeyFile(f))
  const db: Db = openStateDb(config.stateDir)
  const metrics = new Metrics()
  describeMetrics(metrics)
  const bus = new LocalBus()
  const topics = deviceTopics(config.fleet, deviceId)
  const telemetry = createTelemetry({ ...deps.hw, diskPaths: config.hw.diskPaths }, { now: () => clock.now() })
  const board: Board = await telemetry.board()
  const operators = new OperatorKeys(db, operatorKeyObjects)
  if (operators.count() === 0) log.warn('no operator key is trusted: every command will be refused (use --operator-key FILE)')
  const replay = new ReplayGuard(db, config.commands.skewS * 1000)
  const outbox = new Outbox(db, {
    clock,
    maxBytes: config.outbox.maxBytes,
    lazyWriteMs: config.outbox.lazyWriteMs,
    mustKeepDays: config.outbox.mustKeepDays,
    onEvict: (cls, count) => {
      metrics.inc('cairn_outbox_evicted_total', { class: CLASS_NAMES[cls] }, count)
      log.warn({ cls, count }, 'outbox full: evicted old messages')
    },
  })
  // Cairn OS: the OS release that runs, and whether it updates itself (image-build/os-update)
  const cairnOs =
    deps.cairnOs === undefined
      ? detectCairnOs({ stateDir: config.stateDir, osDir: config.ota.osDir, enabled: config.ota.osUpdates, now: () => clock.now(), sleep: ms => new Promise(r => setTimeout(r, ms).unref()) })
      : (deps.cairnOs ?? undefined)
  if (cairnOs) log.info({ os: cairnOs.info }, cairnOs.info.updates ? 'Cairn OS: OS updates on' : `Cairn OS: OS updates off: ${cairnOs.info.detail}`)
  const cache = await startCacheService({ config, db, outbox, identity, clock, log: log.child({ mod: 'cache' }) })
  let lastUptimeS: number | undefined
  let lastSample: TelemetrySample | undefined
  const proofs = config.proof.enabled
    ? new DeviceProofs({
        db,
        identity,
        fleet: config.fleet,
        outbox,
        clock,
        config: config.proof,
        validators: validatorKeyObjects,
        replay,
        skewMs: config.commands.skewS * 1000,
        telemetry: () => lastSample,
        log: log.child({ mod: 'proof' }),
        metrics,
        onEvent: (kind, data) => publishEvent(kind, data),
        publishNow: (topic, payload) => link.publishNow(topic, payload, { qos: 1 }),
      })
    : undefined
  const tasks = config.tasks.enabled
    ? new TaskService({
        db,
        outbox,
        clock,
        log: log.child({ mod: 'task' }),
        metrics,
        identity,
        fleet: config.fleet,
        config: config.tasks,
        dispatchers: dispatcherKeyObjects,
        isOperator: k => operators.isTrusted(k),
        replay,
        skewMs: config.commands.skewS * 1000,
        maxTtlMs: config.commands.maxTtlS * 1000,
        executors: deps.taskExecutors ?? [],
        // The built-in executors join after start (startBuiltinExecutors); tasks wait for them.
        pendingTypes: deps.taskExecutors ? [] : config.tasks.types,
        telemetry: () => lastSample,
        bus,
        publishQuick: (topic, payload, props) => link.publishQuick(topic, payload, props),
        // The inference backend is known only once its worker is up: say so in the status.
        onExecutorAdded: () => {
          if (link.connected) link.publishNow(topics.status, status('online'), { qos: 1, retain: true }).catch(() => undefined)
        },
        ...deps.taskTimings,
      })
    : undefined
  if (tasks && dispatcherKeyObjects.length === 0) log.info('no dispatcher key is trusted: every task request will be refused (use --dispatcher-key FILE)')
  if (proofs && validatorKeyObjects.length === 0) log.info('no validator key is trusted: heartbeats will cite no beacon (use --validator-key FILE)')
  const status = (state: 'online' | 'offline', reason?: StatusMessage['reason']): Buffer => {
    const msg: StatusMessage = {
      v: 1,
      id: newId(clock.now()),
      device: deviceId,
      fleet: config.fleet,
      state,
      ...(reason ? { reason } : {}),
      ts: clock.now(),
      since: startedAt,
      version: deps.version,
      ...(deps.launcher ? { slot: deps.launcher.slot ?? 'fallback' } : {}),
      ...(cairnOs ? { os: cairnOs.info } : {}),
      board: board.kind,
      model: board.model,
      ...(lastUptimeS !== undefined ? { uptimeS: lastUptimeS } : {}),
      mqtt: config.broker.mqttVersion,
      publicKey: publicKeyPem(identity.publicKey),
      ...(tasks ? { tasks: tasks.status() } : {}),
    }
    return Buffer.from(JSON.stringify(msg))
  }

  let resolveDone!: (r: StopReason) => void
  const done = new Promise<StopReason>(r => (resolveDone = r))
  let stopping: Promise<void> | undefined
  let pendingAction: 'restart-agent' | 'reboot' | undefined

  const publishEvent = (kind: string, data: Record<string, unknown>) => {
    const msg: EventMessage = { v: 1, id: newId(clock.now()), device: deviceId, ts: clock.now(), kind, data }
    outbox.enqueue({ id: msg.id, cls: MsgClass.event, topic: topics.event, payload: Buffer.from(JSON.stringify(msg)) })
    bus.emit('event', { kind, ts: msg.ts, data })
  }

  const context = (env: { iss: string }): CommandContext => ({
    issuer: env.iss,
    now: clock.now(),
    deviceId,
    startedAt,
    operators,
    logs: ring,
    uptimeS: () => lastUptimeS,
    getConfig: () => ({ config: redact(config), sources: Object.fromEntries(sources) }),
    setConfig: patch => applyRemotePatch(patch),
    afterReply: action => {
      pendingAction = action
      // Let the reply reach the outbox and the broker before acting on it.
      setTimeout(() => void act(), 50)
    },
  })

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

  const router = new CommandRouter({
    fleet: config.fleet,
    deviceId,
    clock,
    maxPayloadBytes: config.commands.maxPayloadBytes,
    maxTtlMs: config.commands.maxTtlS * 1000,
    skewMs: config.commands.skewS * 1000,
    operators,
    replay,
    outbox,
    log: log.child({ mod: 'cmd' }),
    metrics,
    // Dropped when there is no connection: a refusal is never queued.
    publishQuick: (topic, payload, props) => link.publishQuick(topic, payload, props),
    context,
    commands: new CommandTable([...BUILTIN_COMMANDS, ...otaCommands(() => ota?.control)]),
  })

  const link: MqttLink = new MqttLink({
    broker: config.broker,
    clientId: `cairn-${deviceId}`,
    // A fresh Will (new id) for every connection, so consumers de-duplicating by id see each loss.
    will: () => ({ topic: topics.status, payload: status('offline', 'connection-lost') }),
    outbox,
    maxInflight: config.outbox.maxInflight,
    maximumPacketSize: packetLimitFor(config.commands.maxPayloadBytes, config.tasks.enabled ? config.tasks.maxRequestBytes : 0, config.proof.enabled ? MAX_PROOF_REQUEST_BYTES : 0),
    log: log.child({ mod: 'mqtt' }),
    metrics,
    onConnect: async l => {
      await l.subscribe(topics.cmdFilter)
      for (const f of proofs?.filters() ?? []) await l.subscribe(f)
      for (const f of ota?.filters() ?? []) await l.subscribe(f)
      for (const f of tasks?.filters() ?? []) await l.subscribe(f)
      await l.publishNow(topics.status, status('online'), { qos: 1, retain: true })
      ota?.statusPublished()
    },
    onMessage: (topic, payload, packet) => {
      if (proofs?.handle(topic, payload)) return
      if (ota?.handle(topic, payload)) return
      if (tasks?.handle(topic, payload, packet)) return
      void router.handle(topic, payload, packet).catch(err => log.error({ err }, 'command handling failed'))
    },
  })

  const ota = OtaService.create({
    config,
    launcher: deps.launcher,
    os: cairnOs?.deps,
    hooks: deps.otaHooks,
    deviceId,
    board: board.kind,
    version: deps.version,
    clock,
    log: log.child({ mod: 'ota' }),
    db,
    outbox,
    eventMessage: e => {
      const msg: EventMessage = { v: 1, id: newId(clock.now()), device: deviceId, ts: clock.now(), kind: e.kind, data: e.data }
      return { id: msg.id, cls: MsgClass.event, topic: topics.event, payload: Buffer.from(JSON.stringify(msg)) }
    },
    emit: (kind, data) => publishEvent(kind, data),
    sample: () => telemetry.sample(),
    connected: () => link.connected,
    broadcast: async payload => {
      const res = await router.handleBroadcast(payload, OTA_BROADCAST_COMMANDS)
      return res.ok ? 'applied' : res.code === 'REPLAY' ? 'seen' : 'refused'
    },
    restart: () => void stop('update'),
  })

  // Telemetry loop: sample, queue, and mirror the values into /metrics.
  let telemetryTimer: NodeJS.Timeout | undefined
  const sampleOnce = async () => {
    try {
      const sample = await telemetry.sample()
      lastUptimeS = sample.uptimeS
      lastSample = sample
      const msg: TelemetryMessage = { v: 1, id: newId(clock.now()), device: deviceId, ts: clock.now(), sample }
      outbox.enqueue({ id: msg.id, cls: MsgClass.telemetry, topic: topics.telemetry, payload: Buffer.from(JSON.stringify(msg)) })
      mirrorTelemetry(metrics, sample)
      bus.emit('telemetry', sample, msg.ts)
    } catch (err) {
      log.error({ err }, 'telemetry sample failed')
    }
  }
  const scheduleTelemetry = (first: boolean) => {
    if (telemetryTimer) clearTimeout(telemetryTimer)
    telemetryTimer = setTimeout(
      async () => {
        await sampleOnce()
        if (!stopping) scheduleTelemetry(false)
      },
      first ? 0 : config.telemetry.periodS * 1000,
    )
  }

  const applyRemotePatch = (patch: Record<string, unknown>): { applied: string[]; shadowed: string[] } => {
    for (const k of Object.keys(patch)) if (!(REMOTE_SETTABLE as readonly string[]).includes(k)) throw new CairnError('BAD_REQUEST', `${k} cannot be set remotely`)
    const nextRemote = mergeDeep(remoteLayer(config.stateDir).values, patch)
    // Validate on top of every other layer before anything is written.
    const after = deps.reload(nextRemote)
    try {
      writeFileAtomic(join(config.stateDir, REMOTE_CONFIG_FILE), JSON.stringify(nextRemote, null, 2) + '\n', 0o600, false)
    } catch (err) {
      throw new CairnError('STATE_DIR', `cannot persist remote config: ${(err as Error).message}`)
    }
    const applied: string[] = []
    const shadowed: string[] = []
    for (const path of leafPaths(patch)) {
      const src = after.sources.get(path) ?? ''
      if (src.startsWith('remote')) applied.push(path)
      else shadowed.push(`${path} (overridden by ${src})`)
    }
    if (!applyLive(after)) {
      // The file or environment changed too, in settings that need a fresh start.
      log.info('other settings changed since start; restarting in place after the reply')
      setTimeout(() => void stop('restart'), 50)
    }
    publishEvent('config.changed', { applied, shadowed })
    return { applied, shadowed }
  }

  /** Applies what can change live; returns false (and changes nothing) when the new
   * configuration differs in settings that need a fresh start. */
  const applyLive = (next: LoadedConfig): boolean => {
    const live = new Set(['telemetry', 'outbox', 'log'])
    const cur = config as Record<string, unknown>
    const nxt = next.config as Record<string, unknown>
    if (!Object.keys(nxt).every(k => live.has(k) || JSON.stringify(cur[k]) === JSON.stringify(nxt[k]))) return false
    const oldPeriod = config.telemetry.periodS
    config = next.config
    sources = next.sources
    log.level = config.log.level as Level
    outbox.configure({ maxBytes: config.outbox.maxBytes, lazyWriteMs: config.outbox.lazyWriteMs, mustKeepDays: config.outbox.mustKeepDays })
    if (oldPeriod !== config.telemetry.periodS) scheduleTelemetry(false)
    return true
  }

  let health: { server: Server; port: number } | undefined
  const deviceUi = new DeviceUi({ config, hw: deps.hw, bus, log: log.child({ mod: 'gpio' }), connected: () => link.connected, publishEvent: (k, d) => publishEvent(k, d), settle: ms => link.settle(ms) })
  let localApi: LocalApi | undefined
  if (config.health.enabled) {
    try {
      health = await startHealthServer(config.health.host, config.health.port, {
        metrics,
        health: () => ({ ok: true, connected: link.connected, outboxDepth: outbox.depth(), device: deviceId }),
      })
      log.info({ url: `http://${config.health.host}:${health.port}/healthz` }, 'health endpoint up')
    } catch (err) {
      // Health is a convenience; a busy port must not keep the device off its fleet.
      log.error({ err: (err as Error).message, port: config.health.port }, 'health endpoint not started')
    }
  }

  const refreshGauges = setInterval(() => {
    metrics.set('cairn_outbox_depth', outbox.depth())
    metrics.set('cairn_outbox_bytes', outbox.sizeBytes())
    metrics.set('cairn_mqtt_connected', link.connected ? 1 : 0)
    metrics.set('cairn_mqtt_inflight', link.inflightCount())
  }, 1000)
  refreshGauges.unref()

  const stop = (reason: StopReason): Promise<void> => {
    stopping ??= (async () => {
      log.info({ reason }, 'stopping')
      if (telemetryTimer) clearTimeout(telemetryTimer)
      proofs?.stop()
      await ota?.stop()
      await tasks?.stop()
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
  scheduleTelemetry(true)
  proofs?.start()
  ota?.start()
  tasks?.start()
  // The inference worker loads its backend in the background: nothing waits for it.
  const builtinExecutors = tasks && !deps.taskExecutors ? startBuiltinExecutors({ types: config.tasks.types, store: cache.store, stateDir: config.stateDir, log: log.child({ mod: 'task' }), add: e => tasks.addExecutor(e), failed: type => tasks.executorFailed(type), accelerators: () => accelerators({ ...deps.hw, diskPaths: config.hw.diskPaths }, board) }) : undefined
  await deviceUi.start()
  localApi = await startAgentLocalApi({ config, log, version: deps.version, deviceId, board, bus, ui: deviceUi, connected: () => link.connected, outboxDepth: () => outbox.depth(), ota: ota?.control, tasks, sample: () => telemetry.sample() })
  // A stop that began while the API was starting has already passed its close(): close it here.
  if (stopping) await localApi?.close()
  publishEvent('agent.started', { version: deps.version, board: board.kind, model: board.model, ...(deps.launcher ? { slot: deps.launcher.slot ?? 'fallback' } : {}) })
  log.info({ deviceId, fleet: config.fleet, broker: config.broker.url, board: board.kind }, 'agent started')

  return {
    deviceId,
    identity,
    outbox,
    link,
    metrics,
    proofs,
    cache,
    tasks,
    healthPort: health?.port,
    done,
    stop,
    publishEvent,
    bus,
    localApi,
    deviceUi,
    reload: () => {
      let next: LoadedConfig
      try {
        next = deps.reload()
      } catch (err) {
        log.error({ err: (err as Error).message }, 'reload failed; keeping the running configuration')
        return
      }
      if (!applyLive(next)) {
        log.info('settings changed that need a restart; restarting in place')
        void stop('restart')
      } else log.info('configuration reloaded')
    },
  }
}

function describeMetrics(m: Metrics): void {
  m.describe('cairn_outbox_depth', 'messages waiting for a broker acknowledgement')
  m.describe('cairn_outbox_bytes', 'bytes held by the outbox')
  m.describe('cairn_mqtt_connected', '1 while connected to the broker')
  m.describe('cairn_mqtt_reconnects_total', 'reconnection attempts')
  m.describe('cairn_mqtt_inflight', 'unacknowledged QoS 1 publishes')
  m.describe('cairn_messages_sent_total', 'messages acknowledged by the broker, by class')
  m.describe('cairn_commands_total', 'commands handled, by result code')
  m.describe('cairn_outbox_evicted_total', 'messages evicted by the outbox size cap, by class')
  m.describe('cairn_replies_suppressed_total', 'refusal replies dropped by the rate limit')
  m.describe('cairn_messages_refused_total', 'messages the broker refused for good (dropped)')
  m.describe('cairn_heartbeats_total', 'uptime heartbeats signed')
  m.describe('cairn_beacons_total', 'new genuine validator beacons seen')
  m.describe('cairn_challenges_answered_total', 'validator challenges answered')
  m.describe('cairn_proof_refused_total', 'beacons, challenges and fetch requests refused, by code')
}

function mirrorTelemetry(m: Metrics, s: TelemetrySample): void {
  const set = (name: string, v: number | undefined, labels?: Record<string, string>) => {
    if (v !== undefined && Number.isFinite(v)) m.set(name, v, labels)
  }
  set('cairn_cpu_percent', s.cpu?.percent)
  set('cairn_load1', s.load?.[0])
  set('cairn_memory_used_percent', s.memory?.usedPercent)
  set('cairn_uptime_seconds', s.uptimeS)
  m.clear('cairn_thermal_celsius')
  for (const z of s.thermal ?? []) set('cairn_thermal_celsius', z.celsius, { zone: z.zone, type: z.type })
  if (s.throttle) set('cairn_throttled', s.throttle.now.throttled ? 1 : 0)
  if (s.throttle) set('cairn_under_voltage', s.throttle.now.underVoltage ? 1 : 0)
  set('cairn_gpu_load_percent', s.gpu?.loadPercent)
  set('cairn_fan_rpm', s.fan?.rpm)
  set('cairn_power_watts', s.power?.totalWatts)
}

function redact(config: Readonly<Config>): unknown {
  const copy = structuredClone(config) as Config
  if (copy.broker.password !== undefined) copy.broker.password = '(redacted)'
  return copy
}

function leafPaths(obj: Record<string, unknown>, prefix = ''): string[] {
  const out: string[] = []
  for (const [k, v] of Object.entries(obj)) {
    const p = prefix ? `${prefix}.${k}` : k
    if (v !== null && typeof v === 'object' && !Array.isArray(v)) out.push(...leafPaths(v as Record<string, unknown>, p))
    else out.push(p)
  }
  return out
}

function mergeDeep(a: Record<string, unknown>, b: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = structuredClone(a)
  for (const [k, v] of Object.entries(b)) {
    if (UNSAFE_KEYS.has(k)) throw new CairnError('INVALID_CONFIG', `${k}: not a setting`)
    const cur = out[k]
    out[k] = v !== null && typeof v === 'object' && !Array.isArray(v) && cur !== null && typeof cur === 'object' ? mergeDeep(cur as Record<string, unknown>, v as Record<string, unknown>) : v
  }
  return out
}

