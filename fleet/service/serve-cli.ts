// `cairn fleet serve`: the fleet service (docs/console.md). Flags are checked before
// anything opens, so a typo is one line at once.

import { Command } from 'commander'
import { accessSync, constants, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { isIP } from 'node:net'
import { ensureStateDir } from '../../protocol/identity.js'
import { brokerConnection, withBrokerFlags } from '../../protocol/broker-flags.js'
import { flagLayer } from '../../protocol/config-layers.js'
import { systemClock } from '../../protocol/clock.js'
import { CairnError } from '../../protocol/errors.js'
import { isKeyId, keyIdOf, readPublicKeyFile } from '../../protocol/keys.js'
import { createLogger } from '../../protocol/log.js'
import { SqliteFleetStore } from './sqlite-store.js'
import { loadServeConfig, SERVE_DEFAULTS, SERVE_FLAGS, ServeConfigSchema, type LoadedServeConfig } from './serve-config.js'

type Out = { write(s: string): unknown }
type Io = { out: Out; err: Out; env: NodeJS.ProcessEnv; setExitCode(code: number): void }

const many = (v: string, acc: string[] | undefined) => [...(acc ?? []), v]

export function serveCommand(io: Io): Command {
  const d = SERVE_DEFAULTS
  return withBrokerFlags(new Command('serve'))
    .description('the fleet service: remembers the fleet (registry, presence, telemetry with rollups, events) and serves its API on loopback (until SIGTERM)')
    .option('--config <file>', 'YAML or JSON settings file (docs/console.md, "Settings"); flags and CAIRN_FLEET_SERVE_* variables override it')
    .option('--fleet <name>', 'the fleet (required here, in the file or in the environment)')
    .option('--state-dir <dir>', 'where the service keeps its store (fleet.db) (required here, in the file or in the environment)')
    .option('--listen <host:port>', 'where the API and console listen; beyond loopback only with accounts and TLS (here or at a proxy)', d.listen)
    .option('--validator <file|keyid>', "a validator whose uptime attestations the service keeps (repeatable; PEM public key file or key id); others' are refused", many)
    .option('--tls-cert <file>', 'serve HTTPS with this certificate (PEM; with --tls-key)')
    .option('--tls-key <file>', 'the private key of --tls-cert (PEM)')
    .option('--trust-proxy', 'behind a reverse proxy on this machine that terminates TLS: accounts required, Secure cookies, the client address from X-Forwarded-For as that proxy sets it')
    .option('--release-url <url>', 'the release repository the devices update from: the rollouts page lists its releases, verified against --release-root')
    .option('--release-root <file>', "that repository's trusted root.json (the one the agents ship with)")
    .option('--store <kind>', 'sqlite (an embedded file in the state dir)', d.store)
    .option('--instance <name>', 'this process among several sharing one store (1-32 letters, digits, - or _)', d.instance)
    .option('--share-group <name>', 'MQTT shared-subscription group of processes splitting the load (default: cairn-fleet-<fleet>)')
    .option('--no-share', 'a plain subscription: this process alone sees every message')
    .option('--log-level <level>', 'fatal, error, warn, info, debug or trace', d.logLevel)
    .option(
      '--operator-key <file|keyid>',
      'an operator key that may send commands through the service (repeatable; PEM public key file or key id); none: any signed command that verifies (each device checks its own trusted keys)',
      many,
    )
    .addHelpText(
      'after',
      `
Later layers win: defaults < the --config file < CAIRN_FLEET_SERVE_* environment < these flags.
Retention and alert thresholds are set in the file or the environment (docs/console.md).

Examples:
  cairn fleet serve --broker mqtt://broker:1883 --fleet demo --state-dir /var/lib/cairn-fleet
  cairn fleet serve --config /etc/cairn/fleet.yaml --log-level debug
  cairn fleet serve --broker mqtt://broker:1883 --fleet demo --state-dir /var/lib/cairn-fleet \\
    --release-url https://releases.example.com/cairn --release-root root.json
  cairn fleet account add alice --role admin --state-dir /var/lib/cairn-fleet
  cairn fleet serve --broker mqtt://broker:1883 --fleet demo --state-dir /var/lib/cairn-fleet \\
    --listen 0.0.0.0:8443 --tls-cert fleet.crt --tls-key fleet.key
  curl -s 'http://127.0.0.1:8080/api/v1/devices?state=offline&sort=lastSeen'`,
    )
    .action(async (o: { config?: string }, cmd: Command) => {
      // only what was given on the command line: a default must not hide the file's value
      const given = Object.fromEntries(cmd.options.filter(x => cmd.getOptionValueSource(x.attributeName()) === 'cli').map(x => [x.name(), cmd.getOptionValue(x.attributeName())]))
      const config = loadServeConfig({ configFile: o.config, env: io.env, flags: flagLayer(given, SERVE_FLAGS, ServeConfigSchema) })
      io.setExitCode(await serve(config, io))
    })
}

/** host:port, and whether the host is a loopback address (127.0.0.0/8, ::1, localhost). */
export function parseListen(s: string, what = '--listen'): { host: string; port: number; loopback: boolean } {
  const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d{1,5})$/.exec(s)
  const host = m?.[1] ?? m?.[2]
  const port = Number(m?.[3])
  if (!host || !(port >= 0 && port <= 65_535)) throw new CairnError('BAD_REQUEST', `${what} ${JSON.stringify(s)}: expected host:port, e.g. 127.0.0.1:8080`)
  const loopback = host === 'localhost' || host === '::1' || (isIP(host) === 4 && host.startsWith('127.'))
  return { host, port, loopback }
}

async function serve(loaded: LoadedServeConfig, io: Io): Promise<number> {
  const { config: o, name } = loaded
  if (o.store !== 'sqlite') throw new CairnError('BAD_REQUEST', `${name('store')} ${JSON.stringify(o.store)}: only sqlite for now (a PostgreSQL store is planned)`)
  const listen = parseListen(o.listen, name('listen'))
  if (Boolean(o.tls.cert) !== Boolean(o.tls.key))
    throw new CairnError('BAD_REQUEST', `--tls-cert and --tls-key (tls.cert and tls.key) go together: ${name(o.tls.cert ? 'tls.cert' : 'tls.key')} is set alone`)
  const tls = o.tls.cert && o.tls.key ? { cert: readPem(o.tls.cert, name('tls.cert')), key: readPem(o.tls.key, name('tls.key')) } : undefined
  if (!listen.loopback && !tls)
    throw new CairnError(
      'BAD_REQUEST',
      `${name('listen')} ${listen.host}: beyond loopback the service needs TLS (--tls-cert, --tls-key), or a reverse proxy with TLS in front of it and the service on loopback (--listen 127.0.0.1:PORT --trust-proxy); passwords and session cookies must not cross a network in clear (docs/console.md)`,
    )
  const releases =
    o.releases.url && o.releases.root
      ? { url: o.releases.url, root: readableFile(o.releases.root, name('releases.root')), metadataDir: join(o.stateDir, `tuf-${o.instance}`), everyMs: o.releases.pollSeconds * 1000 }
      : undefined
  // reached from beyond this machine: directly, or through a proxy on it
  const exposed = !listen.loopback || o.trustProxy
  const keyIds = (list: readonly string[]) => list.map(k => (isKeyId(k.trim()) ? k.trim() : keyIdOf(readPublicKeyFile(k))))
  const operatorKeys = keyIds(o.operatorKeys)
  const validators = keyIds(o.validators)
  const { url, clientOptions } = brokerConnection({
    broker: o.broker.url,
    mqttVersion: String(o.broker.mqttVersion),
    username: o.broker.username,
    password: loaded.passwordFrom === 'file' ? readSecret(o.broker.passwordFile!, name('broker.passwordFile')) : o.broker.password,
    ca: o.broker.ca,
  })
  const log = createLogger({ level: o.logLevel })
  ensureStateDir(o.stateDir)
  const store = new SqliteFleetStore(o.stateDir)
  if (exposed && (await store.accountCount()) === 0) {
    await store.close()
    throw new CairnError(
      'BAD_REQUEST',
      `${listen.loopback ? name('trustProxy') : `${name('listen')} ${listen.host}`}: reached from beyond this machine, the service needs accounts, and ${o.stateDir} has none: add one first (cairn fleet account add NAME --role admin --state-dir ${o.stateDir})`,
    )
  }
  // loaded here, not with the CLI: the HTTP server (fastify) is no part of a device's start
  const { FleetService } = await import('./fleet-service.js')
  const service = new FleetService({
    brokerUrl: url,
    mqtt: clientOptions,
    fleet: o.fleet,
    store,
    clock: systemClock,
    log,
    listen: { host: listen.host, port: listen.port },
    auth: { always: exposed, secureCookies: Boolean(tls) || o.trustProxy },
    ...(tls ? { tls } : {}),
    ...(o.trustProxy ? { trustProxy: true } : {}),
    shareGroup: o.share ? (o.shareGroup ?? `cairn-fleet-${o.fleet}`) : null,
    instance: o.instance,
    operatorKeys,
    validators,
    retention: loaded.retention,
    alertRules: loaded.alertRules,
    ...(releases ? { releases } : {}),
  })
  try {
    const address = await service.start()
    io.out.write(`fleet service for ${o.fleet}: ${address}/api/v1/devices\n`)
  } catch (err) {
    await service.stop()
    throw err
  }
  await new Promise<void>(resolve => {
    process.once('SIGTERM', () => resolve())
    process.once('SIGINT', () => resolve())
  })
  await service.stop()
  return 0
}

function readableFile(file: string, what: string): string {
  try {
    accessSync(file, constants.R_OK)
    return file
  } catch (err) {
    throw new CairnError('BAD_REQUEST', `${what} ${file}: cannot read (${(err as NodeJS.ErrnoException).code ?? String(err)})`)
  }
}

function readSecret(file: string, what: string): string {
  try {
    return readFileSync(file, 'utf8').replace(/\r?\n$/, '')
  } catch (err) {
    throw new CairnError('BAD_REQUEST', `${what} ${file}: cannot read (${(err as NodeJS.ErrnoException).code ?? String(err)})`)
  }
}

function readPem(file: string, flag: string): Buffer {
  try {
    const pem = readFileSync(file)
    if (!pem.includes('-----BEGIN ')) throw new Error('not PEM')
    return pem
  } catch (err) {
    throw new CairnError('BAD_REQUEST', `${flag} ${file}: ${err instanceof Error ? err.message : String(err)}`)
  }
}
