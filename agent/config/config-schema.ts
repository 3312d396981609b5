// The one configuration schema: defaults, limits and docs for every setting.
// docs/configuration.md and the environment variable names are derived from it.

import { Type, type Static, type TSchema } from '@sinclair/typebox'
import { NAME_PATTERN } from '../../protocol/envelope.js'
import { OWNER_PATTERN } from '../../protocol/proof-format.js'
import { envNamer, leafSettings as leafOf } from '../../protocol/config-layers.js'

const Seconds = (def: number, min: number, max: number, description: string) => Type.Integer({ default: def, minimum: min, maximum: max, description })

const BrokerSchema = Type.Object(
  {
    url: Type.String({ default: 'mqtt://127.0.0.1:1883', pattern: '^(mqtts?|wss?)://', description: 'broker URL: mqtt://, mqtts:// (TLS), ws:// or wss://' }),
    mqttVersion: Type.Union([Type.Literal(5), Type.Literal(4)], { default: 5, description: '5 for MQTT 5, 4 for MQTT 3.1.1' }),
    username: Type.Optional(Type.String({ description: 'broker user name' })),
    password: Type.Optional(Type.String({ description: 'broker password (prefer passwordFile)' })),
    passwordFile: Type.Optional(Type.String({ description: 'file holding the broker password' })),
    ca: Type.Optional(Type.String({ description: 'PEM file of the CA that signed the broker certificate' })),
    cert: Type.Optional(Type.String({ description: 'PEM client certificate file (mutual TLS)' })),
    key: Type.Optional(Type.String({ description: 'PEM client key file (mutual TLS)' })),
    rejectUnauthorized: Type.Boolean({ default: true, description: 'verify the broker certificate (TLS)' }),
    keepaliveS: Seconds(30, 5, 3600, 'MQTT keepalive'),
    connectTimeoutMs: Type.Integer({ default: 10_000, minimum: 1000, maximum: 120_000, description: 'give up on one connection attempt after this long' }),
    reconnectMinMs: Type.Integer({ default: 1000, minimum: 100, maximum: 600_000, description: 'first reconnect delay; doubles per failure, with jitter' }),
    reconnectMaxMs: Type.Integer({ default: 60_000, minimum: 1000, maximum: 3_600_000, description: 'longest reconnect delay' }),
    sessionExpiryS: Seconds(7 * 86400, 0, 4294967295, 'how long the broker keeps the session (queued commands) while the device is offline (MQTT 5)'),
  },
  { additionalProperties: false, default: {} },
)

const TelemetrySchema = Type.Object(
  {
    periodS: Seconds(10, 1, 86400, 'seconds between telemetry samples'),
  },
  { additionalProperties: false, default: {} },
)

const OutboxSchema = Type.Object(
  {
    maxBytes: Type.Integer({
      default: 32 * 1024 * 1024,
      minimum: 64 * 1024,
      description: 'outbox size cap; old telemetry is evicted first, then events; must-keep records are never evicted before their retention',
    }),
    maxInflight: Type.Integer({ default: 20, minimum: 1, maximum: 1000, description: 'most unacknowledged QoS 1 publishes (also capped by the broker receive-maximum)' }),
    lazyWriteMs: Type.Integer({
      default: 30_000,
      minimum: 0,
      maximum: 3_600_000,
      description: 'telemetry is kept in memory this long before it is written to disk; acknowledged sooner, it never touches the SD card. 0 writes every sample at once',
    }),
    mustKeepDays: Seconds(30, 1, 3650, 'days a must-keep record (proof, receipt) is kept while undelivered'),
  },
  { additionalProperties: false, default: {} },
)

const CommandsSchema = Type.Object(
  {
    maxTtlS: Seconds(7 * 86400, 1, 30 * 86400, 'longest command lifetime (exp - iat) accepted; bounds the replay store'),
    skewS: Seconds(300, 0, 86400, 'tolerated clock difference for a command issued "in the future"'),
    maxPayloadBytes: Type.Integer({ default: 64 * 1024, minimum: 1024, maximum: 1024 * 1024, description: 'larger command payloads are refused unread' }),
  },
  { additionalProperties: false, default: {} },
)

const HealthSchema = Type.Object(
  {
    enabled: Type.Boolean({ default: true, description: 'serve /healthz and /metrics' }),
    host: Type.String({ default: '127.0.0.1', description: 'listen address; the default keeps it on the device' }),
    port: Type.Integer({ default: 9750, minimum: 0, maximum: 65535, description: 'listen port (0: any free port, logged)' }),
  },
  { additionalProperties: false, default: {} },
)

const LogSchema = Type.Object(
  {
    level: Type.Union(
      ['fatal', 'error', 'warn', 'info', 'debug', 'trace'].map(l => Type.Literal(l)),
      { default: 'info', description: 'log level' },
    ),
  },
  { additionalProperties: false, default: {} },
)

const HwSchema = Type.Object(
  {
    root: Type.String({ default: '/', description: 'filesystem root the collectors read /proc and /sys under (tests point it at fixtures)' }),
    diskPaths: Type.Array(Type.String(), { default: ['/'], description: 'mount points whose space is reported' }),
  },
  { additionalProperties: false, default: {} },
)

const SystemSchema = Type.Object(
  {
    rebootCommand: Type.Array(Type.String(), { default: ['systemctl', 'reboot'], minItems: 1, description: 'argv run by the reboot command' }),
    reprovisionCommand: Type.Array(Type.String(), {
      default: ['systemctl', 'start', 'cairn-reprovision.service'],
      minItems: 1,
      description: 'argv run when the button confirms re-provisioning (docs/local-api.md, "Status LED and button")',
    }),
  },
  { additionalProperties: false, default: {} },
)

const ProofSchema = Type.Object(
  {
    enabled: Type.Boolean({ default: true, description: 'sign and publish uptime heartbeats' }),
    periodS: Type.Integer({ default: 60, minimum: 1, maximum: 86_400, description: 'heartbeat period, seconds (a new validator beacon also triggers one)' }),
    validatorKeys: Type.Array(Type.String(), { default: [], maxItems: 16, description: 'files of trusted validator public keys (PEM SPKI or key id); they grant no command powers' }),
    owner: Type.Optional(Type.String({ pattern: OWNER_PATTERN, description: 'payout identity carried in every heartbeat' })),
    retentionDays: Type.Integer({ default: 14, minimum: 1, maximum: 3650, description: 'days the device keeps its signed heartbeat log' }),
    jitterMs: Type.Integer({ default: 5000, minimum: 0, maximum: 600_000, description: 'longest random delay between a new beacon and the heartbeat citing it (spreads a fleet out)' }),
  },
  { additionalProperties: false, default: {} },
)

const OtaSchema = Type.Object(
  {
    enabled: Type.Optional(Type.Boolean({ description: 'install agent updates from the release channel; default: on when releaseUrl is set. Needs the launcher (docs/ota.md)' })),
    releaseUrl: Type.Optional(Type.String({ pattern: '^https?://', description: 'URL of the published TUF repository (cairn release serve, a CDN, any static host)' })),
    releaseRoot: Type.Optional(Type.String({ description: 'file of the trusted TUF root.json that ships with the agent; later roots arrive only by signed rotation' })),
    channel: Type.String({ default: 'stable', pattern: NAME_PATTERN, description: 'release channel to follow (stable, beta, …)' }),
    pollS: Seconds(3600, 1, 7 * 86400, 'seconds between release checks (a hint on cairn/v1/<fleet>/release or the update command checks sooner)'),
    hintMinS: Seconds(60, 0, 86400, 'least seconds between two checks triggered by release hints (the hint topic is untrusted)'),
    // 30 s: a good release commits within a few seconds of its switch (2.5 s on a loaded
    // 2-core machine), and a bad one is rolled back and the old version back online within
    // a minute even when it hangs (30 s + the launcher's 5 s grace + 5 s to SIGKILL + a
    // start: test/ota/trial-deadline.test.ts measures it).
    healthDeadlineS: Seconds(
      30,
      1,
      3600,
      'a new version must pass its health check (broker connected, status published, self-test) within this many seconds of the switch, or it is rolled back (how to size it: docs/ota.md)',
    ),
    maxAttempts: Type.Integer({ default: 3, minimum: 1, maximum: 20, description: 'starts of a new version on trial before the launcher rolls it back as a crash loop' }),
    osUpdates: Type.Boolean({ default: true, description: 'on Cairn OS, also install OS releases (kind os) into the A/B partitions through the root helper, tried once with tryboot (docs/image.md)' }),
    osDir: Type.String({ default: '/var/lib/cairn/os', description: "Cairn OS: the root helper's directory (update record, results, capability)" }),
  },
  { additionalProperties: false, default: {} },
)

export const TasksSchema = Type.Object(
  {
    enabled: Type.Boolean({ default: true, description: 'accept inference and cache tasks from trusted dispatchers (docs/tasks.md)' }),
    types: Type.Array(Type.Union([Type.Literal('inference'), Type.Literal('cache')]), {
      default: ['inference', 'cache'],
      uniqueItems: true,
      description: 'task types this device offers; inference runs in a worker process (TensorFlow.js) started by the first inference task',
    }),
    inference: Type.Object(
      {
        idleStopS: Seconds(
          300,
          0,
          7 * 86_400,
          'the inference worker (a second process, ~65 MB resident) is stopped after this many seconds without an inference task and started again by the next, which waits for it (a fraction of a second with wasm on x86-64, more on a Pi); 0: it starts with the agent and is never stopped (docs/inference.md)',
        ),
      },
      { additionalProperties: false, default: {} },
    ),
    dispatcherKeys: Type.Array(Type.String(), { default: [], maxItems: 64, description: 'files of trusted task dispatcher public keys (PEM SPKI or key id); they grant no command powers' }),
    concurrency: Type.Integer({ default: 1, minimum: 1, maximum: 16, description: 'tasks run at the same time' }),
    maxQueue: Type.Integer({ default: 32, minimum: 1, maximum: 10_000, description: 'queued tasks beyond this are rejected with BUSY' }),
    maxRunS: Seconds(600, 1, 86_400, 'longest a task may run; its timeout is the sooner of this and its deadline'),
    maxTempC: Type.Number({ default: 80, minimum: 30, maximum: 120, description: 'no new task starts while a thermal zone is hotter than this (or the board reports throttling)' }),
    maxRequestBytes: Type.Integer({
      default: 8 * 1024 * 1024,
      minimum: 1024,
      maximum: 64 * 1024 * 1024,
      description: 'larger task requests (an image inline in the params, say) are refused unread; bounds the params stored per task',
    }),
    maxResultBytes: Type.Integer({
      default: 64 * 1024,
      minimum: 256,
      maximum: 4 * 1024 * 1024,
      description: 'a larger result fails the task with TOO_LARGE (the receipt still names its output hashes)',
    }),
    retentionDays: Type.Integer({
      default: 30,
      minimum: 1,
      maximum: 3650,
      description: 'days a finished task (its id, state and receipt) is remembered; never less than the longest request lifetime (commands.maxTtlS), so no copy of a request runs twice',
    }),
  },
  { additionalProperties: false, default: {} },
)

const LocalApiSchema = Type.Object(
  {
    enabled: Type.Boolean({ default: true, description: 'serve the local API (docs/local-api.md) to programs on the device' }),
    socket: Type.Optional(Type.String({ minLength: 1, description: 'Unix socket path (mode 0660); default <stateDir>/api.sock' })),
    tokenFile: Type.Optional(Type.String({ minLength: 1, description: 'bearer token file (mode 0640), made at start if missing; default <stateDir>/api.token' })),
    host: Type.String({ default: '127.0.0.1', description: 'TCP listen address, used only when port is set' }),
    port: Type.Integer({ default: 0, minimum: 0, maximum: 65535, description: 'TCP port for the local API as well as the socket; 0: no TCP' }),
    maxClients: Type.Integer({ default: 16, minimum: 1, maximum: 1024, description: 'connections served at once; more are refused with HTTP 503' }),
    maxFrameBytes: Type.Integer({
      default: 8 * 1024 * 1024,
      minimum: 64 * 1024,
      maximum: 64 * 1024 * 1024,
      description: 'largest frame a client may send (images for inference); larger closes the connection with 1009',
    }),
    maxQueueBytes: Type.Integer({
      default: 2 * 1024 * 1024,
      minimum: 16 * 1024,
      maximum: 256 * 1024 * 1024,
      description: 'bytes queued to a client that does not read: past half of it telemetry is dropped, past all of it events too, and a client over it for 2 s is closed (1008)',
    }),
  },
  { additionalProperties: false, default: {} },
)

const Pin = (description: string) => Type.Integer({ minimum: 0, maximum: 63, description })
const GpioSchema = Type.Object(
  {
    driver: Type.Union(
      ['auto', 'sysfs', 'gpiod', 'fake'].map(d => Type.Literal(d)),
      { default: 'auto', description: 'GPIO driver (docs/gpio.md); auto: sysfs, else libgpiod tools, else an in-memory fake' },
    ),
    statusLed: Type.Optional(
      Type.Object(
        {
          pin: Pin('BCM pin of the status LED'),
          activeLow: Type.Boolean({ default: false, description: 'the LED lights when the pin is low (wired from 3V3 to the pin)' }),
        },
        { additionalProperties: false },
      ),
    ),
    button: Type.Optional(
      Type.Object(
        {
          pin: Pin('BCM pin of the button'),
          activeLow: Type.Boolean({ default: true, description: 'pressed reads low (button to GND with a pull-up)' }),
          debounceMs: Type.Integer({ default: 30, minimum: 0, maximum: 1000, description: 'a level must hold this long to count' }),
          longPressMs: Type.Integer({ default: 3000, minimum: 100, maximum: 60_000, description: 'held this long: a long press (arms re-provisioning)' }),
          confirmWindowMs: Type.Integer({ default: 10_000, minimum: 500, maximum: 120_000, description: 'a second long press within this window confirms re-provisioning' }),
        },
        { additionalProperties: false },
      ),
    ),
  },
  { additionalProperties: false, default: {} },
)

export const CacheSchema = Type.Object(
  {
    enabled: Type.Boolean({ default: true, description: 'serve cached objects over HTTP and publish signed serve receipts (docs/cache.md); the store itself (cache tasks, models) is always there' }),
    quotaBytes: Type.Integer({
      default: 2 * 1024 * 1024 * 1024,
      minimum: 1024 * 1024,
      description: 'bytes the content cache may hold; least recently used unpinned objects are evicted to stay under it',
    }),
    maxObjectBytes: Type.Integer({ default: 1024 * 1024 * 1024, minimum: 1024, description: 'largest single object fetched or stored' }),
    host: Type.String({ default: '127.0.0.1', description: 'listen address of the cache HTTP server (0.0.0.0 to serve the network)' }),
    port: Type.Integer({ default: 9751, minimum: 0, maximum: 65535, description: 'cache HTTP port (0: any free port, logged)' }),
    receiptPeriodS: Seconds(300, 1, 86_400, 'seconds per signed serve receipt (cache.served)'),
    fetchTimeoutS: Seconds(600, 1, 86_400, 'longest download of one object from one origin'),
  },
  { additionalProperties: false, default: {} },
)

export const ConfigSchema = Type.Object(
  {
    fleet: Type.String({ pattern: NAME_PATTERN, description: 'fleet name (lowercase letters, digits, - and _)' }),
    stateDir: Type.String({ default: '/var/lib/cairn', minLength: 1, description: 'where the device key, outbox and replay store live' }),
    operatorKeys: Type.Array(Type.String(), { default: [], description: 'files of trusted operator public keys (PEM SPKI or key id)' }),
    broker: BrokerSchema,
    telemetry: TelemetrySchema,
    outbox: OutboxSchema,
    commands: CommandsSchema,
    health: HealthSchema,
    proof: ProofSchema,
    ota: OtaSchema,
    cache: CacheSchema,
    tasks: TasksSchema,
    log: LogSchema,
    hw: HwSchema,
    system: SystemSchema,
    localApi: LocalApiSchema,
    gpio: GpioSchema,
  },
  { additionalProperties: false, $id: 'https://cairn.dev/schemas/config.json', title: 'Cairn agent configuration' },
)
export type Config = Static<typeof ConfigSchema>

/** Sections a signed set-config command may change. Broker, keys and paths are not
 * among them: a bad remote value there could cut the device off for good. */
export const REMOTE_SETTABLE = ['telemetry', 'outbox', 'log'] as const

/** Every leaf setting with its dotted path, for env names and docs. */
export function leafSettings(schema: TSchema = ConfigSchema): Array<{ path: string[]; schema: TSchema }> {
  return leafOf(schema)
}

/** telemetry.periodS -> CAIRN_TELEMETRY_PERIOD_S */
export const envName = envNamer('CAIRN_')
