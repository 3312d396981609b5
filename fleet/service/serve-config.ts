// The settings of `cairn fleet serve`, in layers as the agent's (protocol/config-layers.ts):
// defaults < a YAML or JSON file (--config, or CAIRN_FLEET_SERVE_CONFIG) <
// CAIRN_FLEET_SERVE_* variables < flags. One schema gives the defaults, the limits, the
// flags' help and the table in docs/console.md.

import { Type, type Static } from '@sinclair/typebox'
import { Value } from '@sinclair/typebox/value'
import { envLayer, envNamer, leafSettings, readConfigFile, resolveLayers, settingsTable, spliceGenerated, type Layer, type Resolved } from '../../protocol/config-layers.js'
import { CairnError } from '../../protocol/errors.js'
import { NAME_PATTERN } from '../../protocol/envelope.js'
import type { AlertRules, Retention } from './fleet-store.js'

const HOUR = 3_600_000
const DAY = 24 * HOUR

export const ServeConfigSchema = Type.Object(
  {
    fleet: Type.String({ pattern: NAME_PATTERN, description: 'the fleet whose devices the service follows' }),
    stateDir: Type.String({ minLength: 1, description: 'where the service keeps its store (fleet.db) and its accounts' }),
    listen: Type.String({
      default: '127.0.0.1:8080',
      description: 'host:port of the API and console; beyond loopback only with accounts and TLS (here or at a proxy on this machine)',
    }),
    store: Type.String({ default: 'sqlite', description: 'sqlite: an embedded file in the state dir (a PostgreSQL store is planned)' }),
    instance: Type.String({ pattern: '^[A-Za-z0-9_-]{1,32}$', default: '1', description: 'this process among several sharing one store' }),
    share: Type.Boolean({ default: true, description: 'split the messages with the other processes through an MQTT shared subscription; false: this process sees every message' }),
    shareGroup: Type.Optional(Type.String({ pattern: '^[A-Za-z0-9_-]{1,64}$', description: 'the shared-subscription group (default cairn-fleet-<fleet>)' })),
    logLevel: Type.Union([Type.Literal('fatal'), Type.Literal('error'), Type.Literal('warn'), Type.Literal('info'), Type.Literal('debug'), Type.Literal('trace')], {
      default: 'info',
      description: 'least important log line written',
    }),
    broker: Type.Object(
      {
        url: Type.String({ default: 'mqtt://127.0.0.1:1883', pattern: '^(mqtts?|wss?)://', description: 'broker URL: mqtt://, mqtts:// (TLS), ws:// or wss://' }),
        mqttVersion: Type.Union([Type.Literal(5), Type.Literal(4)], { default: 5, description: '5 for MQTT 5, 4 for MQTT 3.1.1' }),
        username: Type.Optional(Type.String({ description: 'broker user name' })),
        password: Type.Optional(Type.String({ description: 'broker password (prefer passwordFile)' })),
        passwordFile: Type.Optional(Type.String({ minLength: 1, description: 'file holding the broker password' })),
        ca: Type.Optional(Type.String({ minLength: 1, description: 'PEM file of the CA that signed the broker certificate' })),
      },
      { additionalProperties: false, default: {} },
    ),
    operatorKeys: Type.Array(Type.String({ minLength: 1 }), {
      default: [],
      description: 'operator keys (PEM public key files or key ids) that may send commands through the service; none: any signed command that verifies',
    }),
    validators: Type.Array(Type.String({ minLength: 1 }), {
      default: [],
      description: "validators (PEM public key files or key ids) whose uptime attestations the service keeps; others' are refused",
    }),
    tls: Type.Object(
      {
        cert: Type.Optional(Type.String({ minLength: 1, description: 'serve HTTPS with this certificate (PEM; with tls.key)' })),
        key: Type.Optional(Type.String({ minLength: 1, description: 'the private key of tls.cert (PEM)' })),
      },
      { additionalProperties: false, default: {} },
    ),
    trustProxy: Type.Boolean({
      default: false,
      description: 'behind a reverse proxy on this machine that terminates TLS: accounts required, Secure cookies, the client address from X-Forwarded-For',
    }),
    releases: Type.Object(
      {
        url: Type.Optional(
          Type.String({ pattern: '^https?://', description: 'the release repository the devices update from (the agent setting ota.releaseUrl): the rollouts page lists its releases' }),
        ),
        root: Type.Optional(Type.String({ minLength: 1, description: "that repository's trusted root.json (the agent's ota.releaseRoot): its metadata is verified as a device verifies it" })),
        pollSeconds: Type.Integer({ default: 60, minimum: 5, maximum: 86_400, description: 'seconds between reads of the release metadata' }),
      },
      { additionalProperties: false, default: {} },
    ),
    retention: Type.Object(
      {
        rawHours: Type.Integer({ default: 48, minimum: 1, maximum: 24 * 366, description: 'hours of raw telemetry samples kept' }),
        minuteDays: Type.Integer({ default: 30, minimum: 1, maximum: 3660, description: 'days of 1-minute rollups kept' }),
        hourDays: Type.Integer({ default: 365, minimum: 1, maximum: 36_600, description: 'days of 1-hour rollups kept, and of events, commands, receipts and attestations' }),
      },
      { additionalProperties: false, default: {} },
    ),
    alerts: Type.Object(
      {
        offlineMinutes: Type.Integer({ default: 10, minimum: 1, maximum: 525_600, description: 'a device offline longer than this is an alert (a reboot is not)' }),
        hotC: Type.Number({ default: 80, minimum: 20, maximum: 150, description: 'the hottest sensor at or above this (°C) is an alert' }),
        diskPercent: Type.Number({ default: 90, minimum: 1, maximum: 100, description: 'the root file system at least this full (%) is an alert' }),
        scoreBelowPercent: Type.Number({ default: 90, minimum: 0, maximum: 100, description: "a device's newest uptime score below this (%) is an alert" }),
        outboxQueued: Type.Integer({ default: 1000, minimum: 1, maximum: 10_000_000, description: "a device's outbox holding at least this many messages the broker has not taken is an alert" }),
        outboxMinutes: Type.Integer({ default: 30, minimum: 1, maximum: 525_600, description: 'or its oldest waiting message older than this (minutes) when it reported' }),
      },
      { additionalProperties: false, default: {} },
    ),
  },
  { additionalProperties: false, $id: 'https://cairn.dev/schemas/fleet-serve.json', title: 'Cairn fleet service configuration' },
)
export type ServeConfig = Static<typeof ServeConfigSchema>

/** fleet.stateDir -> CAIRN_FLEET_SERVE_STATE_DIR */
export const serveEnvName = envNamer('CAIRN_FLEET_SERVE_')

/** The defaults, for the flags' help. */
export const SERVE_DEFAULTS = Value.Default(ServeConfigSchema, {}) as Partial<ServeConfig> & Pick<ServeConfig, 'listen' | 'store' | 'instance' | 'logLevel'>

/** The flags of `cairn fleet serve` and the setting each one sets. */
export const SERVE_FLAGS: ReadonlyArray<{ flag: string; path: string }> = [
  { flag: 'fleet', path: 'fleet' },
  { flag: 'state-dir', path: 'stateDir' },
  { flag: 'listen', path: 'listen' },
  { flag: 'store', path: 'store' },
  { flag: 'instance', path: 'instance' },
  { flag: 'no-share', path: 'share' },
  { flag: 'share-group', path: 'shareGroup' },
  { flag: 'log-level', path: 'logLevel' },
  { flag: 'broker', path: 'broker.url' },
  { flag: 'mqtt-version', path: 'broker.mqttVersion' },
  { flag: 'username', path: 'broker.username' },
  { flag: 'password', path: 'broker.password' },
  { flag: 'ca', path: 'broker.ca' },
  { flag: 'operator-key', path: 'operatorKeys' },
  { flag: 'validator', path: 'validators' },
  { flag: 'tls-cert', path: 'tls.cert' },
  { flag: 'tls-key', path: 'tls.key' },
  { flag: 'trust-proxy', path: 'trustProxy' },
  { flag: 'release-url', path: 'releases.url' },
  { flag: 'release-root', path: 'releases.root' },
]

export interface LoadedServeConfig extends Resolved<ServeConfig> {
  /** How the operator set a setting, for errors: the flag where it came from one
   * ("--listen"), else the setting and its source ("listen (from file /etc/fleet.yaml)"). */
  name(path: string): string
  retention: Retention
  alertRules: AlertRules
  /** Where the broker password comes from: broker.password or broker.passwordFile,
   * whichever a later layer set (a flag over the environment over the file). */
  passwordFrom: 'value' | 'file' | 'none'
}

/** All layers: the file (`configFile`, else CAIRN_FLEET_SERVE_CONFIG), the environment,
 * the flags. Throws INVALID_CONFIG naming each bad setting and where it came from. */
export function loadServeConfig(o: { configFile?: string | undefined; env: NodeJS.ProcessEnv; flags: Layer }): LoadedServeConfig {
  const file = o.configFile ?? o.env.CAIRN_FLEET_SERVE_CONFIG
  // a mistyped variable is an error, as a mistyped key in the file is
  const known = new Set([...leafSettings(ServeConfigSchema).map(l => serveEnvName(l.path)), 'CAIRN_FLEET_SERVE_CONFIG'])
  const unknown = Object.keys(o.env).filter(k => k.startsWith('CAIRN_FLEET_SERVE_') && !known.has(k))
  if (unknown.length > 0) throw new CairnError('INVALID_CONFIG', `${unknown.join(', ')}: no such setting (docs/console.md lists the CAIRN_FLEET_SERVE_* variables)`)
  const layers: Layer[] = [{ name: 'defaults', values: {} }]
  if (file) layers.push(readConfigFile(file))
  layers.push(envLayer(o.env, { schema: ServeConfigSchema, envName: serveEnvName }), o.flags)
  const flagOf = new Map(SERVE_FLAGS.map(f => [f.path, f.flag]))
  const resolved = resolveLayers(ServeConfigSchema, layers, path => {
    const flag = flagOf.get(path.join('.'))
    return `set it with ${flag ? `--${flag}, ` : ''}in the config file or with ${serveEnvName(path)}`
  })
  const { config: c, sources } = resolved
  const name = (path: string): string => {
    const source = sources.get(path)
    if (source?.startsWith('flag ')) return source.slice('flag '.length)
    return source ? `${path} (from ${source})` : path
  }
  const r = c.retention
  if (r.rawHours * HOUR > r.minuteDays * DAY || r.minuteDays > r.hourDays)
    throw new CairnError(
      'INVALID_CONFIG',
      `retention: raw samples (${r.rawHours} h) must not outlive the 1-minute rollups (${r.minuteDays} days), nor those the 1-hour rollups (${r.hourDays} days): a rollup is made from what the finer level still holds`,
    )
  if (Boolean(c.releases.url) !== Boolean(c.releases.root))
    throw new CairnError(
      'INVALID_CONFIG',
      `${name(c.releases.url ? 'releases.url' : 'releases.root')} is set without ${c.releases.url ? 'releases.root (--release-root)' : 'releases.url (--release-url)'}: the release metadata is read only against its trusted root`,
    )
  const rank = (path: string) => {
    const s = sources.get(path)
    return s === undefined ? 0 : s.startsWith('flag ') ? 3 : s.startsWith('env ') ? 2 : 1
  }
  const [value, fromFile] = [rank('broker.password'), rank('broker.passwordFile')]
  if (value > 0 && value === fromFile) throw new CairnError('INVALID_CONFIG', `broker.password and broker.passwordFile: both set in ${sources.get('broker.password')}; keep one`)
  return {
    ...resolved,
    name,
    passwordFrom: fromFile > value ? 'file' : value > 0 ? 'value' : 'none',
    retention: { rawMs: r.rawHours * HOUR, minuteMs: r.minuteDays * DAY, hourMs: r.hourDays * DAY },
    alertRules: {
      offlineMs: c.alerts.offlineMinutes * 60_000,
      hotC: c.alerts.hotC,
      diskPercent: c.alerts.diskPercent,
      scoreBelow: Math.round(c.alerts.scoreBelowPercent * 10_000),
      outboxQueued: c.alerts.outboxQueued,
      outboxAgeMs: c.alerts.outboxMinutes * 60_000,
    },
  }
}

const MARKERS = { start: '<!-- serve-settings:start (generated by npm run docs:gen) -->', end: '<!-- serve-settings:end -->' }

/** console.md with its generated settings table replaced. */
export function spliceServeSettings(doc: string): string {
  return spliceGenerated(doc, 'docs/console.md', MARKERS, settingsTable(ServeConfigSchema, serveEnvName))
}
