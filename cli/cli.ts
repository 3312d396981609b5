// The `cairn` command line: one binary, one commander tree. Each program brings its own
// commands and flags (its *-cli.ts); this room puts them together and turns what went
// wrong into an exit code and one line on stderr: usage errors 2, a CairnError 2 or 1 by
// its code, a broker out of reach 1. Only a genuine bug reaches bin.ts's stack trace.

import { spawn } from 'node:child_process'
import { existsSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { Command, CommanderError } from 'commander'
import { CairnError, isCairnError } from '../protocol/errors.js'
import { VERSION } from '../protocol/version.js'
import { agentCommand, idCommand } from './agent-cli.js'
import { deviceCommandTable } from './command-table.js'
import { demoCommand } from './demo.js'
import { fleetCommand } from '../fleet/fleet-cli.js'
import { simCommand } from '../fleet/sim/sim-cli.js'
import { taskCommand } from '../fleet/task-cli.js'
import { validatorCommand, verifyCommand } from '../validator/validator-cli.js'
import { cacheCommand } from '../agent/cache/cache-cli.js'
import { releaseCommand } from '../ota/release-cli.js'
import { packCommand } from '../ota/pack-cli.js'
import { packOsCommand } from '../image-build/os-update/pack-os-cli.js'

type Out = { write(s: string): unknown }
type CliIo = { out: Out; err: Out; env: NodeJS.ProcessEnv }
/** What each command is given: where to write, and where to leave its exit code. */
type CommandIo = CliIo & { setExitCode(code: number): void }

const DOCS = `
Run cairn <command> --help (or cairn help <command>) for a command's options and examples.

Examples:
  cairn demo                  # a fleet of one on this machine, no set-up
  cairn agent --broker mqtt://broker:1883 --fleet demo --state-dir /var/lib/cairn --operator-key op.pub
  cairn fleet cmd <device-id> ping --broker mqtt://broker:1883 --fleet demo --key op

Docs: docs/configuration.md (settings), docs/protocol.md (topics, signing),
docs/proofs.md (uptime proofs), docs/validator.md (running a validator),
docs/ota.md (updates), docs/tasks.md (tasks and receipts).`

/** The whole command tree, writing to `io`. */
export function cairnProgram(io: CommandIo): Command {
  const release = releaseCommand(io).addCommand(packCommand(io)).addCommand(packOsCommand(io))
  const program = new Command('cairn')
    .description(`cairn ${VERSION}: the agent for DePIN edge nodes`)
    .version(VERSION, '--version', 'print the version')
    .addCommand(agentCommand(io))
    .addCommand(idCommand(io))
    .addCommand(fleetCommand(io, deviceCommandTable()))
    .addCommand(validatorCommand(io))
    .addCommand(verifyCommand(io))
    .addCommand(simCommand(io))
    .addCommand(taskCommand(io))
    .addCommand(cacheCommand(io))
    .addCommand(release)
    .addCommand(demoCommand(io))
    .addCommand(imageCommand(io))
    .addCommand(versionCommand(io))
    .addHelpText('after', DOCS)
  // Commands made apart and added with addCommand inherit nothing: give each the same
  // output, errors that throw rather than exit, and suggestions. Options go with the
  // command they follow (`cairn validator id --key F` is id's --key, not validator's).
  for (const cmd of tree(program)) {
    const name = commandPath(cmd)
    cmd
      .exitOverride()
      .showSuggestionAfterError()
      .enablePositionalOptions()
      .configureOutput({
        writeOut: s => io.out.write(s),
        writeErr: s => io.err.write(s),
        // "error: unknown option '--brokr'" as "cairn agent: unknown option '--brokr'".
        outputError: (s, write) => write(s.replace(/^error: /, `${name}: `)),
      })
  }
  return program
}

export async function main(argv: readonly string[], io: CliIo = { out: process.stdout, err: process.stderr, env: process.env }): Promise<number> {
  let code = 0
  let running: Command | undefined
  const program = cairnProgram({ ...io, setExitCode: c => (code = c) })
  program.hook('preAction', (_root, action) => {
    running = action
  })
  try {
    // `cairn` alone prints the help (to stdout, exit 0), as --help does; a group alone
    // (`cairn fleet`) prints its help as commander does, on stderr, as a usage error.
    await program.parseAsync(argv.length === 0 ? ['--help'] : [...argv], { from: 'user' })
    return code
  } catch (err) {
    return failure(err, running, argv, io.err)
  }
}

/** The exit code of a run that threw, after one line on stderr (commander has written
 * its own). Anything not recognised is a bug: rethrown, for bin.ts's stack trace. */
function failure(err: unknown, running: Command | undefined, argv: readonly string[], errOut: Out): number {
  if (err instanceof CommanderError) {
    if (err.code === 'commander.helpDisplayed' || err.code === 'commander.version') return 0
    if (err.code === 'commander.help') return err.exitCode === 0 ? 0 : 2
    return 2
  }
  const name = running ? commandPath(running) : `cairn ${argv[0] ?? ''}`.trim()
  if (isCairnError(err)) {
    // A message that names its command already ("cache get: …") is not prefixed twice.
    const own = name.replace(/^cairn /, '')
    errOut.write(`${name}: ${err.message.startsWith(`${own}: `) ? err.message.slice(own.length + 2) : err.message}\n`)
    return err.code === 'INVALID_CONFIG' || err.code === 'BAD_REQUEST' ? 2 : 1
  }
  const broker = running?.getOptionValue('broker') as string | undefined
  const why = broker === undefined ? undefined : unreachable(err)
  if (broker !== undefined && why !== undefined) {
    errOut.write(`${name}: ${why.refused ? `the broker at ${broker} refused the connection` : `cannot reach the broker at ${broker}`} (${why.reason})\n`)
    return 1
  }
  // A file named on the command line (--ca, --password-file …) that cannot be opened.
  const e = err as NodeJS.ErrnoException
  if (e instanceof Error && e.syscall === 'open' && typeof e.path === 'string' && FILE_ERRORS.has(e.code ?? '')) {
    errOut.write(`${name}: cannot open ${e.path} (${e.code})\n`)
    return 1
  }
  throw err
}

const FILE_ERRORS = new Set(['ENOENT', 'EACCES', 'EPERM', 'EISDIR', 'ENOTDIR'])

const NETWORK_ERRORS: Readonly<Record<string, string>> = {
  ECONNREFUSED: 'connection refused',
  ENOTFOUND: 'no such host',
  EAI_AGAIN: 'name lookup failed',
  ETIMEDOUT: 'connect timeout',
  EHOSTUNREACH: 'host unreachable',
  ENETUNREACH: 'network unreachable',
  ECONNRESET: 'connection reset',
}

/** Why a broker connection failed, where it is the network's or the broker's doing
 * rather than ours: an errno from the socket, mqtt.js's connect timeout, a TLS
 * certificate refused, or a CONNACK that refuses us (credentials). */
function unreachable(err: unknown): { reason: string; refused?: true } | undefined {
  if (!(err instanceof Error)) return undefined
  const e = err as NodeJS.ErrnoException & { errors?: unknown[] }
  const code = typeof e.code === 'string' ? e.code : (e.errors?.[0] as NodeJS.ErrnoException | undefined)?.code
  if (code !== undefined && NETWORK_ERRORS[code]) return { reason: NETWORK_ERRORS[code] }
  if (code === 'EPROTO' && e.message.startsWith('the server does not speak MQTT')) return { reason: e.message }
  if (e.message === 'connack timeout') return { reason: 'connect timeout' }
  if (code !== undefined && /CERT|SELF_SIGNED|UNABLE_TO_|TLS|SSL/.test(code)) return { reason: e.message }
  if (e.message.startsWith('Connection refused: ')) return { reason: e.message.slice('Connection refused: '.length), refused: true }
  return undefined
}

function* tree(cmd: Command): Generator<Command> {
  yield cmd
  for (const sub of cmd.commands) yield* tree(sub)
}

/** "cairn fleet cmd" for the fleet group's cmd. */
function commandPath(cmd: Command): string {
  const names: string[] = []
  for (let c: Command | null = cmd; c; c = c.parent) names.unshift(c.name())
  return names.join(' ')
}

/** `cairn image build`: the OS image pipeline is a shell script beside the sources
 * (image-build/build.sh); this passes the arguments through. */
function imageCommand(io: CommandIo): Command {
  const build = new Command('build')
    .description('build the Cairn OS image (as root, from a clone of the repository): runs image-build/build.sh with these arguments')
    .argument('[build-args...]', 'the arguments of image-build/build.sh (image-build/build.sh --help lists them)')
    .allowUnknownOption()
    .passThroughOptions()
    .addHelpText('after', '\nExamples:\n  sudo cairn image build --out out/\n  sudo cairn image build --os-release --out out/')
    .action(async (args: string[]) => {
      const script = fileURLToPath(new URL('../image-build/build.sh', import.meta.url))
      if (!existsSync(script)) throw new CairnError('BAD_REQUEST', `${script} not found: cairn image build runs from a clone of the Cairn repository`)
      const child = spawn(script, args, { stdio: 'inherit' })
      io.setExitCode(
        await new Promise<number>(resolve => {
          child.on('error', () => resolve(1))
          child.on('exit', code => resolve(code ?? 1))
        }),
      )
    })
  return new Command('image').description('the Cairn OS image').enablePositionalOptions().addCommand(build).addHelpText('after', '\nExample:\n  sudo cairn image build --out out/')
}

function versionCommand(io: CommandIo): Command {
  return new Command('version')
    .description('print the version')
    .addHelpText('after', '\nExample:\n  cairn version')
    .action(() => {
      io.out.write(VERSION + '\n')
    })
}
