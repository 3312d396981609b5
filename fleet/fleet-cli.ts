// `cairn fleet keygen|cmd|rollout`: the operator's keys and signed commands. `fleet cmd`
// checks what it can before it connects (the device id, the command name and its body,
// against the table of commands a device answers), so a typo is one line at once rather
// than a wait for a reply that cannot come.

import { Command } from 'commander'
import { brokerConnection, withBrokerFlags } from '../protocol/broker-flags.js'
import { Value } from '@sinclair/typebox/value'
import type { Json } from '../protocol/canonical.js'
import { NAME_PATTERN } from '../protocol/envelope.js'
import { CairnError } from '../protocol/errors.js'
import { generateKeyPair, readKeyPairFile, writeKeyPairFiles } from '../protocol/keys.js'
import type { TSchema } from '@sinclair/typebox'
import { sendCommand, signCommand } from './command-client.js'
import { rolloutCommand } from './rollout-cli.js'
import { accountCommand } from './service/account-cli.js'
import { serveCommand } from './service/serve-cli.js'

type Out = { write(s: string): unknown }
type Io = { out: Out; err: Out; env: NodeJS.ProcessEnv; setExitCode(code: number): void }

/** What `fleet cmd` needs to know of the commands a device answers: their names, and
 * each body's schema (the composition room hands in the agent's table). */
export interface DeviceCommandSpecs {
  get(name: string): { readonly summary: string; readonly body: TSchema } | undefined
  names(): string[]
}

export function fleetCommand(io: Io, deviceCommands: DeviceCommandSpecs): Command {
  return new Command('fleet')
    .description("the operator's tools: keys, signed commands to one device, fleet-wide rollouts, the fleet service")
    .addCommand(keygenCommand(io))
    .addCommand(cmdCommand(io, deviceCommands))
    .addCommand(rolloutCommand(io))
    .addCommand(serveCommand(io))
    .addCommand(accountCommand(io))
    .addHelpText(
      'after',
      `
Examples:
  cairn fleet keygen --out op
  cairn fleet cmd <device-id> ping --broker mqtt://broker:1883 --fleet demo --key op
  cairn fleet rollout status --broker mqtt://broker:1883 --fleet demo
  cairn fleet serve --broker mqtt://broker:1883 --fleet demo --state-dir /var/lib/cairn-fleet`,
    )
}

function keygenCommand(io: Io): Command {
  return new Command('keygen')
    .description('make an ed25519 key pair: FILE (private, 0600) and FILE.pub (for operators, validators, dispatchers)')
    .requiredOption('--out <file>', 'where to write the private key; the public key goes to FILE.pub')
    .addHelpText(
      'after',
      `
Examples:
  cairn fleet keygen --out op                # op (private, 0600) and op.pub
  cairn fleet keygen --out validator.key     # validator.key and validator.key.pub`,
    )
    .action((opts: { out: string }) => {
      const pair = generateKeyPair()
      writeKeyPairFiles(opts.out, pair)
      io.out.write(`wrote ${opts.out} (private, 0600) and ${opts.out}.pub\nkey id: ${pair.keyId}\n`)
    })
}

interface CmdOptions {
  broker: string
  fleet: string
  key: string
  ttl: string
  timeout: string
  mqttVersion: string
  wait: boolean
  print?: boolean
  username?: string
  password?: string
  ca?: string
}

function cmdCommand(io: Io, deviceCommands: DeviceCommandSpecs): Command {
  const width = Math.max(...deviceCommands.names().map(n => n.length))
  const table = deviceCommands
    .names()
    .map(name => `  ${name.padEnd(width)}  ${deviceCommands.get(name)?.summary ?? ''}`)
    .join('\n')
  return withBrokerFlags(new Command('cmd'))
    .description('sign one command, send it to a device (QoS 1) and print its reply')
    .argument('<device>', 'the device id (cairn id prints it)')
    .argument('<command>', 'the command name (listed below)')
    .argument('[json-body]', 'the command body as JSON', '{}')
    .requiredOption('--fleet <name>', 'the fleet name')
    .requiredOption('--key <file>', "the operator's private key file (cairn fleet keygen)")
    .option('--ttl <s>', 'the command expires after this many seconds', '300')
    .option('--timeout <s>', 'how long to wait for the reply', '15')
    .option('--no-wait', 'publish and exit without waiting for the reply (it stays queued until it expires)')
    .option('--print', 'print the signed envelope instead of sending it (to send it by other means)')
    .addHelpText(
      'after',
      `
Commands a device answers:
${table}

Examples:
  cairn fleet cmd <device-id> ping --broker mqtt://broker:1883 --fleet demo --key op
  cairn fleet cmd <device-id> logs '{"lines":50}' --broker mqtt://broker:1883 --fleet demo --key op
  cairn fleet cmd <device-id> pin-version '{"version":"1.4.0"}' --fleet demo --key op --print`,
    )
    .action(async (device: string, name: string, bodyText: string, opts: CmdOptions) => {
      const body = checkCommand(deviceCommands, device, name, bodyText)
      const ttl = Number(opts.ttl)
      const timeout = Number(opts.timeout)
      if (!(ttl > 0)) throw new CairnError('BAD_REQUEST', '--ttl must be a positive number of seconds')
      if (!(timeout >= 0)) throw new CairnError('BAD_REQUEST', '--timeout must be a number of seconds')
      const { url, mqttVersion: version, clientOptions } = brokerConnection(opts)
      const env = signCommand({ fleet: opts.fleet, device, name, body, key: readKeyPairFile(opts.key), ttlMs: ttl * 1000 })
      if (opts.print) {
        io.out.write(JSON.stringify(env) + '\n')
        return
      }
      const reply = await sendCommand(env, { url, mqttVersion: version, clientOptions, timeoutMs: opts.wait ? timeout * 1000 : 0 })
      if (!reply) {
        io.out.write(JSON.stringify({ id: env.id, queued: true }) + '\n')
        return
      }
      io.out.write(JSON.stringify(reply, null, 2) + '\n')
      io.setExitCode(reply.status === 'ok' ? 0 : 1)
    })
}

/** The body of a command that a device would accept in shape: the device id, the name
 * and the body checked here, as the device checks them (its signature aside). */
function checkCommand(table: DeviceCommandSpecs, device: string, name: string, bodyText: string): Json {
  if (!new RegExp(NAME_PATTERN).test(device)) {
    throw new CairnError('BAD_REQUEST', `${JSON.stringify(device.slice(0, 80))} is not a device id: lowercase letters, digits, - and _, at most 64 (cairn id prints one)`)
  }
  const def = table.get(name)
  if (!def) {
    const near = closest(name, table.names())
    throw new CairnError('BAD_REQUEST', `unknown command ${JSON.stringify(name.slice(0, 80))}${near ? `; did you mean ${near}?` : ''} (known: ${table.names().join(', ')})`)
  }
  let body: Json
  try {
    body = JSON.parse(bodyText) as Json
  } catch {
    throw new CairnError('BAD_REQUEST', `json-body is not JSON: ${bodyText}`)
  }
  const error = Value.Errors(def.body, body).First()
  if (error) throw new CairnError('BAD_REQUEST', `body of ${name}: ${error.path || '/'} ${error.message} (got ${bodyText})`)
  return body
}

/** The known name nearest to `name` (at most 3 edits away), if any. */
function closest(name: string, known: readonly string[]): string | undefined {
  let best: string | undefined
  let bestDistance = 4
  for (const k of known) {
    const d = editDistance(name, k)
    if (d < bestDistance) [best, bestDistance] = [k, d]
  }
  return best
}

/** Levenshtein distance, one row at a time. */
function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j)
  for (let i = 1; i <= a.length; i++) {
    const row = [i]
    for (let j = 1; j <= b.length; j++) row[j] = Math.min(prev[j]! + 1, row[j - 1]! + 1, prev[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1))
    prev = row
  }
  return prev[b.length]!
}
