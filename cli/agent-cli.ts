// `cairn agent` (the device agent: its flags become a config layer over the file and the
// environment) and `cairn id` (the device id from a state dir). Each flag names the
// setting it sets, so the help and the config schema's descriptions never disagree.

import { Command, Option } from 'commander'
import { Value } from '@sinclair/typebox/value'
import type { TSchema } from '@sinclair/typebox'
import { coerce, flagLayer as flagsAsLayer, setPath, type Layer } from '../protocol/config-layers.js'
import { ConfigSchema, leafSettings } from '../agent/config/config-schema.js'
import { CairnError } from '../protocol/errors.js'
import { loadOrCreateIdentity, readIdentity } from '../protocol/identity.js'
import { publicKeyPem } from '../protocol/keys.js'
import { EXIT_SWITCH } from '../ota/slots.js'
import { runAgent } from './run-agent.js'

type Out = { write(s: string): unknown }
type Io = { out: Out; env: NodeJS.ProcessEnv; setExitCode(code: number): void }

/** The `cairn agent` flags and the setting each one sets (docs/configuration.md). */
const AGENT_FLAGS: ReadonlyArray<{ flag: string; value: string; path: string; many?: true }> = [
  { flag: 'broker', value: 'url', path: 'broker.url' },
  { flag: 'fleet', value: 'name', path: 'fleet' },
  { flag: 'state-dir', value: 'dir', path: 'stateDir' },
  { flag: 'operator-key', value: 'file', path: 'operatorKeys', many: true },
  { flag: 'mqtt-version', value: 'version', path: 'broker.mqttVersion' },
  { flag: 'telemetry-period', value: 's', path: 'telemetry.periodS' },
  { flag: 'health-port', value: 'port', path: 'health.port' },
  { flag: 'log-level', value: 'level', path: 'log.level' },
  { flag: 'proof-period', value: 's', path: 'proof.periodS' },
  { flag: 'validator-key', value: 'file', path: 'proof.validatorKeys', many: true },
  { flag: 'dispatcher-key', value: 'file', path: 'tasks.dispatcherKeys', many: true },
  { flag: 'owner', value: 'id', path: 'proof.owner' },
  { flag: 'release-url', value: 'url', path: 'ota.releaseUrl' },
  { flag: 'release-root', value: 'file', path: 'ota.releaseRoot' },
  { flag: 'channel', value: 'name', path: 'ota.channel' },
]

const many = (v: string, prev: string[] | undefined): string[] => [...(prev ?? []), v]

/** The option values keyed by flag name (--state-dir: 'state-dir'), as flagLayer takes them. */
const byFlag = (cmd: Command): Record<string, unknown> => Object.fromEntries(cmd.options.map(o => [o.name(), cmd.getOptionValue(o.attributeName())]))

function withAgentFlags(cmd: Command): Command {
  const leaves = new Map(leafSettings().map(l => [l.path.join('.'), l.schema]))
  cmd.option('--config <file>', 'YAML or JSON config file (docs/configuration.md); flags override it')
  for (const f of AGENT_FLAGS) {
    const about = `${(leaves.get(f.path) as TSchema & { description?: string }).description ?? f.path} (${f.path}${f.many ? '; repeatable' : ''})`
    if (f.many) cmd.option(`--${f.flag} <${f.value}>`, about, many)
    else cmd.option(`--${f.flag} <${f.value}>`, about)
  }
  return cmd.option('--set <path=value>', 'any other setting, e.g. --set telemetry.periodS=5 (repeatable)', many)
}

export function agentCommand(io: Io): Command {
  return withAgentFlags(new Command('agent'))
    .description('run the device agent: telemetry, signed commands, uptime proofs, tasks and updates, until SIGTERM')
    .addHelpText(
      'after',
      `
Later layers win: defaults < the config file < signed set-config < CAIRN_* environment < these flags.

Examples:
  cairn agent --broker mqtt://broker:1883 --fleet demo --state-dir /var/lib/cairn --operator-key op.pub
  cairn agent --config /etc/cairn.yaml --set telemetry.periodS=5`,
    )
    .action(async (opts: { config?: string }, cmd: Command) => {
      const code = await runAgent({ configFile: opts.config, flags: flagLayer(byFlag(cmd)), env: io.env })
      // Handing over to the OTA launcher: everything is closed and flushed, so leave now
      // rather than when the release client's idle keep-alive sockets time out (seconds).
      if (code === EXIT_SWITCH) process.exit(code)
      io.setExitCode(code)
    })
}

/** `cairn agent` flags as a config file name and a flag layer. */
export function parseAgentArgs(args: readonly string[]): { configFile: string | undefined; flags: Layer } {
  const cmd = withAgentFlags(new Command('agent')).exitOverride()
  cmd.parse([...args], { from: 'user' })
  return { configFile: cmd.opts<{ config?: string }>().config, flags: flagLayer(byFlag(cmd)) }
}

/** Flags as a config layer; each value coerced by the schema so errors name the flag. */
export function flagLayer(values: Record<string, unknown>): Layer {
  const layer = flagsAsLayer(values, AGENT_FLAGS, ConfigSchema)
  const leaves = new Map(leafSettings().map(l => [l.path.join('.'), l]))
  for (const kv of (values.set as string[] | undefined) ?? []) {
    const eq = kv.indexOf('=')
    const path = eq > 0 ? kv.slice(0, eq) : ''
    const leaf = leaves.get(path)
    if (!leaf) throw new CairnError('INVALID_CONFIG', `flag --set ${kv}: unknown setting ${JSON.stringify(path)} (see docs/configuration.md)`)
    setPath(layer.values, path.split('.'), coerce(kv.slice(eq + 1), leaf.schema, `flag --set ${path}`))
    layer.sourceOf![path] = `flag --set ${path}`
  }
  return layer
}

export function idCommand(io: Io): Command {
  return new Command('id')
    .description("print the device id (the base32 of its public key) and its public key, from the agent's state dir")
    .option('--state-dir <dir>', 'the agent state dir (default: $CAIRN_STATE_DIR, else the stateDir default)')
    .option('--init', 'make the device key first if there is none yet')
    .option('--json', 'one JSON object: { deviceId, publicKey }')
    .addOption(new Option('--id-only', 'just the device id and a newline, for scripts').conflicts('json'))
    .addHelpText(
      'after',
      `
Examples:
  cairn id --state-dir /var/lib/cairn
  cairn id --state-dir /var/lib/cairn --id-only
  cairn id --state-dir ./state --init --json`,
    )
    .action((opts: { stateDir?: string; init?: boolean; json?: boolean; idOnly?: boolean }) => {
      const stateDir = opts.stateDir ?? io.env.CAIRN_STATE_DIR ?? (Value.Default(ConfigSchema.properties.stateDir, undefined) as string)
      const identity = opts.init ? loadOrCreateIdentity(stateDir).identity : readIdentity(stateDir)
      const pem = publicKeyPem(identity.publicKey)
      if (opts.idOnly) io.out.write(identity.deviceId + '\n')
      else if (opts.json) io.out.write(JSON.stringify({ deviceId: identity.deviceId, publicKey: pem }) + '\n')
      else io.out.write(`device id: ${identity.deviceId}\n${pem}`)
    })
}
