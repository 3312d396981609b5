// The `cairn` command line: one binary, subcommands. Parsing and dispatch only; the
// work lives in the modules each subcommand calls.

import { parseArgs, type ParseArgsConfig } from 'node:util'
import { spawn } from 'node:child_process'
import { existsSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { coerce, setPath, type Layer } from '../agent/config/load-config.js'
import { ConfigSchema, leafSettings } from '../agent/config/config-schema.js'
import { CairnError, isCairnError } from '../protocol/errors.js'
import { generateKeyPair, publicKeyPem, readKeyPairFile, writeKeyPairFiles } from '../protocol/keys.js'
import { loadOrCreateIdentity, readIdentity } from '../protocol/identity.js'
import { runAgent } from './run-agent.js'
import { sendCommand, signCommand } from '../fleet/command-client.js'
import { runDemo } from './demo.js'
import { toolClientOptions } from '../protocol/mqtt-client.js'
import { Value } from '@sinclair/typebox/value'
import type { Json } from '../protocol/canonical.js'
import { VERSION } from '../protocol/version.js'
import { VALIDATOR_HELP, validatorCmd, verifyCmd } from '../validator/validator-cli.js'
import { SIM_HELP, simCmd } from '../fleet/sim/sim-cli.js'
import { releaseCmd } from '../ota/release-cli.js'
import { ROLLOUT_HELP, rolloutCmd } from '../fleet/rollout-cli.js'
import { EXIT_SWITCH } from '../ota/slots.js'
import { PACK_HELP, PACK_OS_HELP, packCmd, packOsCmd } from '../ota/pack-cli.js'
import { TASK_HELP, taskCmd } from '../fleet/task-cli.js'
import { CACHE_HELP, cacheCmd } from '../agent/cache/cache-cli.js'

const HELP = `cairn ${VERSION}: the agent for DePIN edge nodes

Usage:
  cairn agent [--config FILE] [--broker URL] [--fleet NAME] [--state-dir DIR]
              [--operator-key FILE]... [--mqtt-version 5|4] [--telemetry-period S]
              [--health-port P] [--log-level LEVEL] [--proof-period S]
              [--validator-key FILE]... [--owner ID] [--set path=value]...
              [--dispatcher-key FILE]...
              [--release-url URL] [--release-root FILE] [--channel NAME]
  cairn id --state-dir DIR [--init] [--json]
  cairn fleet keygen --out FILE
  cairn fleet cmd <device> <command> [json-body] --broker URL --fleet NAME --key FILE
              [--ttl S] [--timeout S] [--mqtt-version 5|4] [--no-wait] [--print]
              [--username U] [--password P] [--ca FILE]
${ROLLOUT_HELP}
${VALIDATOR_HELP}
${SIM_HELP}
${TASK_HELP}
${CACHE_HELP}
  cairn release init|add|set-rollout|refresh|rotate|list|serve|client ...   (cairn release --help)
${PACK_HELP}
${PACK_OS_HELP}
  cairn demo [--port P] [--state-dir DIR] [--no-node-red] [--node-red-port P]
  cairn image build [--out DIR] [...]   (as root, from a clone: image-build/build.sh --help)
  cairn help | --version

Docs: docs/configuration.md (settings), docs/protocol.md (topics, signing),
docs/proofs.md (uptime proofs), docs/validator.md (running a validator),
docs/ota.md (updates), docs/tasks.md (tasks and receipts).`

type Out = { write(s: string): unknown }

export async function main(argv: readonly string[], io: { out: Out; err: Out; env: NodeJS.ProcessEnv } = { out: process.stdout, err: process.stderr, env: process.env }): Promise<number> {
  const [sub, ...rest] = argv
  try {
    switch (sub) {
      case 'agent':
        return await agentCmd(rest, io.env)
      case 'id':
        return idCmd(rest, io.out)
      case 'fleet':
        return await fleetCmd(rest, io)
      case 'validator':
        return await validatorCmd(rest, io)
      case 'verify':
        return verifyCmd(rest, io)
      case 'task':
        return await taskCmd(rest, io)
      case 'cache':
        return await cacheCmd(rest, io)
      case 'sim':
        return await simCmd(rest, io)
      case 'image':
        return await imageCmd(rest)
      case 'release':
        // `release pack` builds the target on the device side's terms (ota/pack-cli.ts).
        if (rest[0] === 'pack') return packCmd(rest.slice(1), io)
        if (rest[0] === 'pack-os') return await packOsCmd(rest.slice(1), io)
        return await releaseCmd(rest, io)
      case 'demo':
        return await runDemo(parse(rest, { port: { type: 'string' }, 'state-dir': { type: 'string' }, 'no-node-red': { type: 'boolean' }, 'node-red-port': { type: 'string' } }).values as Parameters<typeof runDemo>[0], io)
      case '--version':
      case 'version':
        io.out.write(VERSION + '\n')
        return 0
      case undefined:
      case 'help':
      case '--help':
      case '-h':
        io.out.write(HELP + '\n')
        return 0
      default:
        io.err.write(`cairn: unknown command ${JSON.stringify(sub)}\n\n${HELP}\n`)
        return 2
    }
  } catch (err) {
    if (isCairnError(err)) {
      io.err.write(`cairn ${sub}: ${err.message}\n`)
      return err.code === 'INVALID_CONFIG' || err.code === 'BAD_REQUEST' ? 2 : 1
    }
    if ((err as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')) {
      io.err.write(`cairn ${sub}: ${(err as Error).message}\n`)
      return 2
    }
    throw err
  }
}

function parse(args: readonly string[], options: NonNullable<ParseArgsConfig['options']>, allowPositionals = false) {
  return parseArgs({ args: [...args], options, allowPositionals, strict: true })
}

async function agentCmd(args: readonly string[], env: NodeJS.ProcessEnv): Promise<number> {
  const code = await runAgent({ ...parseAgentArgs(args), env })
  // Handing over to the OTA launcher: everything is closed and flushed, so leave now
  // rather than when the release client's idle keep-alive sockets time out (seconds).
  if (code === EXIT_SWITCH) process.exit(code)
  return code
}

/** `cairn agent` flags as a config file name and a flag layer. */
export function parseAgentArgs(args: readonly string[]): { configFile: string | undefined; flags: Layer } {
  const { values } = parse(args, {
    config: { type: 'string' },
    broker: { type: 'string' },
    fleet: { type: 'string' },
    'state-dir': { type: 'string' },
    'operator-key': { type: 'string', multiple: true },
    'mqtt-version': { type: 'string' },
    'telemetry-period': { type: 'string' },
    'health-port': { type: 'string' },
    'log-level': { type: 'string' },
    'proof-period': { type: 'string' },
    'validator-key': { type: 'string', multiple: true },
    'dispatcher-key': { type: 'string', multiple: true },
    owner: { type: 'string' },
    'release-url': { type: 'string' },
    'release-root': { type: 'string' },
    channel: { type: 'string' },
    set: { type: 'string', multiple: true },
  })
  return { configFile: values.config as string | undefined, flags: flagLayer(values) }
}

/** Flags as a config layer; each value coerced by the schema so errors name the flag. */
export function flagLayer(values: Record<string, unknown>): Layer {
  const out: Record<string, unknown> = {}
  const sourceOf: Record<string, string> = {}
  const leaves = new Map(leafSettings().map(l => [l.path.join('.'), l]))
  const put = (flag: string, path: string, raw: unknown) => {
    if (raw === undefined) return
    const leaf = leaves.get(path)!
    setPath(out, path.split('.'), Array.isArray(raw) ? raw : coerce(String(raw), leaf.schema, `flag --${flag}`))
    sourceOf[path] = `flag --${flag}`
  }
  put('broker', 'broker.url', values.broker)
  put('fleet', 'fleet', values.fleet)
  put('state-dir', 'stateDir', values['state-dir'])
  put('operator-key', 'operatorKeys', values['operator-key'])
  put('mqtt-version', 'broker.mqttVersion', values['mqtt-version'])
  put('telemetry-period', 'telemetry.periodS', values['telemetry-period'])
  put('health-port', 'health.port', values['health-port'])
  put('log-level', 'log.level', values['log-level'])
  put('proof-period', 'proof.periodS', values['proof-period'])
  put('validator-key', 'proof.validatorKeys', values['validator-key'])
  put('dispatcher-key', 'tasks.dispatcherKeys', values['dispatcher-key'])
  put('owner', 'proof.owner', values.owner)
  put('release-url', 'ota.releaseUrl', values['release-url'])
  put('release-root', 'ota.releaseRoot', values['release-root'])
  put('channel', 'ota.channel', values.channel)
  for (const kv of (values.set as string[] | undefined) ?? []) {
    const eq = kv.indexOf('=')
    const path = eq > 0 ? kv.slice(0, eq) : ''
    const leaf = leaves.get(path)
    if (!leaf) throw new CairnError('INVALID_CONFIG', `flag --set ${kv}: unknown setting ${JSON.stringify(path)} (see docs/configuration.md)`)
    setPath(out, path.split('.'), coerce(kv.slice(eq + 1), leaf.schema, `flag --set ${path}`))
    sourceOf[path] = `flag --set ${path}`
  }
  return { name: 'flags', values: out, sourceOf }
}

function idCmd(args: readonly string[], out: Out): number {
  const { values } = parse(args, { 'state-dir': { type: 'string' }, init: { type: 'boolean' }, json: { type: 'boolean' } })
  const stateDir = (values['state-dir'] as string | undefined) ?? process.env.CAIRN_STATE_DIR ?? (Value.Default(ConfigSchema.properties.stateDir, undefined) as string)
  const identity = values.init ? loadOrCreateIdentity(stateDir).identity : readIdentity(stateDir)
  const pem = publicKeyPem(identity.publicKey)
  if (values.json) out.write(JSON.stringify({ deviceId: identity.deviceId, publicKey: pem }) + '\n')
  else out.write(`device id: ${identity.deviceId}\n${pem}`)
  return 0
}

async function fleetCmd(args: readonly string[], io: { out: Out; err: Out }): Promise<number> {
  const [verb, ...rest] = args
  if (verb === 'keygen') {
    const { values } = parse(rest, { out: { type: 'string' } })
    const file = values.out as string | undefined
    if (!file) throw new CairnError('BAD_REQUEST', '--out FILE is required')
    const pair = generateKeyPair()
    writeKeyPairFiles(file, pair)
    io.out.write(`wrote ${file} (private, 0600) and ${file}.pub\nkey id: ${pair.keyId}\n`)
    return 0
  }
  if (verb === 'cmd') {
    const { values, positionals } = parse(
      rest,
      {
        broker: { type: 'string' },
        fleet: { type: 'string' },
        key: { type: 'string' },
        ttl: { type: 'string', default: '300' },
        timeout: { type: 'string', default: '15' },
        'mqtt-version': { type: 'string', default: '5' },
        'no-wait': { type: 'boolean' },
        print: { type: 'boolean' },
        username: { type: 'string' },
        password: { type: 'string' },
        ca: { type: 'string' },
      },
      true,
    )
    const [device, name, bodyText] = positionals
    if (!device || !name) throw new CairnError('BAD_REQUEST', 'usage: cairn fleet cmd <device> <command> [json-body] --broker URL --fleet NAME --key FILE')
    for (const req of ['fleet', 'key'] as const) if (!values[req]) throw new CairnError('BAD_REQUEST', `--${req} is required`)
    let body: Json = {}
    if (bodyText !== undefined) {
      try {
        body = JSON.parse(bodyText) as Json
      } catch {
        throw new CairnError('BAD_REQUEST', `json-body is not JSON: ${bodyText}`)
      }
    }
    const ttl = Number(values.ttl)
    const timeout = Number(values.timeout)
    const version = Number(values['mqtt-version'])
    if (!(ttl > 0)) throw new CairnError('BAD_REQUEST', '--ttl must be a positive number of seconds')
    if (!(timeout >= 0)) throw new CairnError('BAD_REQUEST', '--timeout must be a number of seconds')
    if (version !== 4 && version !== 5) throw new CairnError('BAD_REQUEST', '--mqtt-version must be 5 or 4')
    const env = signCommand({ fleet: values.fleet as string, device, name, body, key: readKeyPairFile(values.key as string), ttlMs: ttl * 1000 })
    if (values.print) {
      io.out.write(JSON.stringify(env) + '\n')
      return 0
    }
    const url = (values.broker as string | undefined) ?? 'mqtt://127.0.0.1:1883'
    const clientOptions = toolClientOptions({ url, mqttVersion: version, username: values.username as string | undefined, password: values.password as string | undefined, ca: values.ca as string | undefined })
    const reply = await sendCommand(env, { url, mqttVersion: version, clientOptions, timeoutMs: values['no-wait'] ? 0 : timeout * 1000 })
    if (!reply) {
      io.out.write(JSON.stringify({ id: env.id, queued: true }) + '\n')
      return 0
    }
    io.out.write(JSON.stringify(reply, null, 2) + '\n')
    return reply.status === 'ok' ? 0 : 1
  }
  if (verb === 'rollout') return rolloutCmd(rest, io)
  throw new CairnError('BAD_REQUEST', `unknown fleet command ${JSON.stringify(verb)}: use keygen, cmd or rollout`)
}


/** `cairn image build`: the OS image pipeline is a shell script beside the sources
 * (image-build/build.sh); this passes the arguments through. */
async function imageCmd(args: readonly string[]): Promise<number> {
  const [verb, ...rest] = args
  if (verb !== 'build') throw new CairnError('BAD_REQUEST', 'usage: cairn image build [--out DIR] [options of image-build/build.sh --help]')
  const script = fileURLToPath(new URL('../image-build/build.sh', import.meta.url))
  if (!existsSync(script)) throw new CairnError('BAD_REQUEST', `${script} not found: cairn image build runs from a clone of the Cairn repository`)
  const child = spawn(script, rest, { stdio: 'inherit' })
  return new Promise(resolve => {
    child.on('error', () => resolve(1))
    child.on('exit', code => resolve(code ?? 1))
  })
}
