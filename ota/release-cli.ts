// `cairn release …`: argument parsing and output for the release side of OTA. The work is
// in tuf-repo.ts (signing), tuf-serve.ts (static HTTP) and tuf-client.ts (verifying).

import { copyFileSync, existsSync, mkdirSync, renameSync, rmSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { Command } from 'commander'
import { CairnError } from '../protocol/errors.js'
import { fetchTarget } from './fetcher.js'
import { refreshMetadata, targetInfo, targetUrl } from './tuf-client.js'
import type { TrustedTargets } from './tuf-delegations.js'
import { hashMismatch, namingHash, verifiableHashes } from './tuf-hashes.js'
import { lockRepo, parseDuration } from './tuf-layout.js'
import { ROLES, type RoleName } from './tuf-keys.js'
import { TufRepo } from './tuf-repo.js'
import { serveStatic } from './tuf-serve.js'
import type { Expiries } from './tuf-layout.js'

type Out = { write(s: string): unknown }
type Io = { out: Out; err: Out; setExitCode(code: number): void }

const SYNOPSIS = `  cairn release init --repo DIR [--root-keys N] [--root-threshold M] [--expiry ROLE=DUR]...
  cairn release add --repo DIR --version V --channel NAME [--min-version V] [--arch arm64,x64]
              [--board rpi4,rpi5] [--rollout PCT] [--kind agent|os] FILE...
  cairn release set-rollout --repo DIR --version V --pct P [--channel NAME] [--kind agent|os]
  cairn release refresh --repo DIR [--targets] [--root]
  cairn release rotate --repo DIR --role root|targets|snapshot|timestamp [--root-keys N --root-threshold M]
  cairn release list --repo DIR [--json]
  cairn release serve --repo DIR [--port P]
  cairn release client --metadata-dir D init ROOT_FILE
  cairn release client --metadata-dir D --metadata-url U refresh
  cairn release client --metadata-dir D --metadata-url U --target-name P [--target-name P]...
              --target-base-url T --target-dir O download
              (signing commands take --keys DIR, repeatable: where the private keys are, default
              <repo>/keys; new keys from init and rotate go beside the role's old keys)`

const ROLES_NOTE = `Roles and defaults: root 2 of 3 keys, 1 year; targets 1 key, 3 months (root and targets
keys offline); snapshot 1 key, 1 week; timestamp 1 key, 1 day (online). Run
\`cairn release refresh\` at least daily (a timer) so the timestamp never expires.`

const many = (v: string, prev: string[] | undefined): string[] => [...(prev ?? []), v]

function intFlag(v: unknown, flag: string, min: number, max: number): number | undefined {
  if (v === undefined) return undefined
  const n = Number(v)
  if (!Number.isInteger(n) || n < min || n > max) throw new CairnError('BAD_REQUEST', `--${flag} must be an integer from ${min} to ${max}, got ${JSON.stringify(v)}`)
  return n
}

function pctFlag(v: unknown, flag: string): number | undefined {
  if (v === undefined) return undefined
  const n = Number(v)
  if (typeof v !== 'string' || v.trim() === '' || !(n >= 0 && n <= 100)) throw new CairnError('BAD_REQUEST', `--${flag} must be a percentage from 0 to 100, got ${JSON.stringify(v)}`)
  return n
}

function list(v: unknown): string[] | undefined {
  if (v === undefined) return undefined
  return String(v)
    .split(',')
    .map(s => s.trim())
    .filter(s => s !== '')
}

interface RepoOptions {
  repo: string
  keys?: string[]
}

function openRepo(o: RepoOptions): TufRepo {
  return TufRepo.open({ dir: o.repo, ...(o.keys ? { keysDir: o.keys } : {}) })
}

function versions(repo: TufRepo): string {
  return `root v${repo.root.signed.version}, targets v${repo.targets.signed.version}, snapshot v${repo.snapshot.signed.version}, timestamp v${repo.timestamp.signed.version} (expires ${repo.timestamp.signed.expires})`
}

/** A command on a repository: --repo, and --keys where it signs. */
function repoCommand(name: string, description: string, example: string, signs = true): Command {
  const cmd = new Command(name).description(description).requiredOption('--repo <dir>', 'the release repository')
  if (signs) cmd.option('--keys <dir>', 'where the private keys are (repeatable; default <repo>/keys)', many)
  return cmd.addHelpText('after', `\nExample:\n  ${example}`)
}

/** Runs a signing command while holding the repository lock. */
function withLock(dir: string, fn: () => void): void {
  const unlock = lockRepo(dir)
  try {
    fn()
  } finally {
    unlock()
  }
}

/** \`cairn release\`: the signed OTA release channel (TUF). \`release pack\` and \`pack-os\`
 * are added beside these by the composition room. */
export function releaseCommand(io: Io): Command {
  const init = repoCommand('init', 'create a repository: root, targets, snapshot and timestamp keys and signed metadata', 'cairn release init --repo ./releases')
    .option('--root-keys <n>', 'how many root keys (default 3)')
    .option('--root-threshold <m>', 'how many of them must sign (default 2)')
    .option('--expiry <role=dur>', "how long a role's metadata lives, e.g. timestamp=1d, root=1y (repeatable)", many)
    .action((o: RepoOptions & { rootKeys?: string; rootThreshold?: string; expiry?: string[] }) =>
      withLock(o.repo, () => {
        const expiry: Partial<Expiries> = {}
        for (const kv of o.expiry ?? []) {
          const [role, dur] = kv.split('=', 2)
          if (!ROLES.includes(role as RoleName) || dur === undefined) throw new CairnError('BAD_REQUEST', `--expiry ${kv}: use ROLE=DURATION, e.g. timestamp=1d, root=1y`)
          expiry[role as RoleName] = parseDuration(dur, `--expiry ${role}`)
        }
        const rootKeys = intFlag(o.rootKeys, 'root-keys', 1, 20)
        const rootThreshold = intFlag(o.rootThreshold, 'root-threshold', 1, 20)
        const repo = TufRepo.init({
          dir: o.repo,
          ...(o.keys ? { keysDir: o.keys } : {}),
          ...(rootKeys !== undefined ? { rootKeys } : {}),
          ...(rootThreshold !== undefined ? { rootThreshold } : {}),
          expiry,
        })
        const root = repo.root.signed.roles.root!
        io.out.write(
          `created ${repo.paths.published} (${versions(repo)})\n` +
            `keys in ${repo.paths.keys} (0600): root ${root.threshold} of ${root.keyIDs.length}, targets, snapshot, timestamp\n` +
            `trusted root to ship with the agent: ${join(repo.paths.metadata, '1.root.json')}\n` +
            `next: move the root and targets keys offline (docs/ota.md, key ceremony)\n`,
        )
      }),
    )
  const add = repoCommand(
    'add',
    'add a release: its files as signed targets (cairn release pack makes an agent one, pack-os an OS one)',
    'cairn release add --repo ./releases --version 1.4.0 --channel stable --arch arm64 cairn-agent-arm64.tar',
  )
    .argument('<file...>', 'the release files')
    .requiredOption('--version <v>', 'the release version (semver)')
    .requiredOption('--channel <name>', 'the channel, e.g. stable or beta')
    .option('--min-version <v>', 'devices older than this skip it')
    .option('--arch <list>', 'architectures it is for, comma-separated (arm64,x64)')
    .option('--board <list>', 'boards it is for, comma-separated (rpi4,rpi5)')
    .option('--rollout <pct>', 'percentage of devices that take it', '100')
    .option('--kind <kind>', 'agent or os', 'agent')
    .action((files: string[], o: RepoOptions & { version: string; channel: string; minVersion?: string; arch?: string; board?: string; rollout: string; kind: string }) =>
      withLock(o.repo, () => {
        if (o.kind !== 'agent' && o.kind !== 'os') throw new CairnError('BAD_REQUEST', '--kind must be agent or os')
        const repo = openRepo(o)
        const arch = list(o.arch)
        const boards = list(o.board)
        const added = repo.addRelease(files, {
          version: o.version,
          channel: o.channel,
          rollout: pctFlag(o.rollout, 'rollout') ?? 100,
          kind: o.kind,
          ...(o.minVersion ? { minVersion: o.minVersion } : {}),
          ...(arch ? { arch } : {}),
          ...(boards ? { boards } : {}),
        })
        for (const t of added) io.out.write(`added ${t.path} (${t.length} bytes, sha256 ${t.sha256})\n`)
        io.out.write(`signed: ${versions(repo)}\n`)
      }),
    )
  const setRollout = repoCommand('set-rollout', 'change the share of devices that take a release (0 halts it)', 'cairn release set-rollout --repo ./releases --version 1.4.0 --pct 50')
    .requiredOption('--version <v>', 'the release version')
    .requiredOption('--pct <p>', 'percentage of devices, 0 to 100 (0 halts the release)')
    .option('--channel <name>', 'only in this channel')
    .option('--kind <kind>', 'only releases of this kind: agent or os (agent and OS releases may share version numbers)')
    .action((o: RepoOptions & { version: string; pct: string; channel?: string; kind?: string }) =>
      withLock(o.repo, () => {
        const pct = pctFlag(o.pct, 'pct')!
        if (o.kind !== undefined && o.kind !== 'agent' && o.kind !== 'os') throw new CairnError('BAD_REQUEST', `--kind must be agent or os, not ${JSON.stringify(o.kind)}`)
        const repo = openRepo(o)
        const changed = repo.setRollout(o.version, pct, o.channel, o.kind)
        io.out.write(`rollout ${pct} % for ${changed.join(', ')}\nsigned: ${versions(repo)}\n`)
      }),
    )
  const refresh = repoCommand('refresh', 're-sign the timestamp and snapshot (daily, from a timer), and targets or root when asked', 'cairn release refresh --repo /srv/releases')
    .option('--targets', 'also re-sign targets')
    .option('--root', 'also re-sign root')
    .action((o: RepoOptions & { targets?: boolean; root?: boolean }) =>
      withLock(o.repo, () => {
        const repo = openRepo(o)
        const { signed, warnings } = repo.refresh({ targets: o.targets === true, root: o.root === true })
        io.out.write(`re-signed ${signed.join(', ')}: ${versions(repo)}\n`)
        for (const w of warnings) io.err.write(`warning: ${w}\n`)
      }),
    )
  const rotate = repoCommand('rotate', "replace a role's keys; the old ones move to <keys>/retired", 'cairn release rotate --repo R --keys /media/root-keys --keys R/keys --role timestamp')
    .requiredOption('--role <role>', 'root, targets, snapshot or timestamp')
    .option('--root-keys <n>', 'with --role root: how many new root keys')
    .option('--root-threshold <m>', 'with --role root: how many must sign')
    .action((o: RepoOptions & { role: string; rootKeys?: string; rootThreshold?: string }) =>
      withLock(o.repo, () => {
        const role = o.role as RoleName
        if (!ROLES.includes(role)) throw new CairnError('BAD_REQUEST', '--role must be root, targets, snapshot or timestamp')
        const rootKeys = intFlag(o.rootKeys, 'root-keys', 1, 20)
        const rootThreshold = intFlag(o.rootThreshold, 'root-threshold', 1, 20)
        if (role !== 'root' && (rootKeys !== undefined || rootThreshold !== undefined)) throw new CairnError('BAD_REQUEST', '--root-keys and --root-threshold go with --role root')
        const repo = openRepo(o)
        const r = repo.rotate(role, { ...(rootKeys !== undefined ? { rootKeys } : {}), ...(rootThreshold !== undefined ? { rootThreshold } : {}) })
        io.out.write(
          `rotated ${role}: new key${r.newKeyIds.length > 1 ? 's' : ''} ${r.newKeyIds.join(', ')}\n` +
            `old keys moved to ${join(repo.paths.keys, 'retired')}: destroy them once the new root is published everywhere\n` +
            `signed: ${versions(repo)}\n`,
        )
      }),
    )
  const listCommand = repoCommand('list', 'list the targets and their channel, kind and rollout', 'cairn release list --repo ./releases --json')
    .option('--json', 'the list as JSON')
    .action((o: RepoOptions & { json?: boolean }) => {
      const targets = openRepo(o).list()
      if (o.json) io.out.write(JSON.stringify(targets, null, 2) + '\n')
      else for (const t of targets) io.out.write(`${t.path}  ${t.length} B  ${t.info ? `${t.info.channel} ${t.info.kind} rollout ${t.info.rollout} %` : '(no cairn metadata)'}\n`)
    })
  const serve = repoCommand(
    'serve',
    'serve the published repository over HTTP on 127.0.0.1 (for tests and demos; use any static host in production)',
    'cairn release serve --repo ./releases --port 8080',
    false,
  )
    .option('--port <p>', 'the port (0: any free one)', '8080')
    .action((o: { repo: string; port: string }) => serveCmd(o, io))
  const client = new Command('client')
    .description('a TUF client, as the tuf-conformance suite runs one: exit 0 on success, 1 on any failure')
    .argument('[command]', 'init ROOT_FILE, refresh or download')
    .argument('[operands...]', 'init: the trusted root file')
    // The conformance suite takes any failure, a usage error too, as exit 1: unknown
    // flags come through to clientCmd, which refuses them with the rest.
    .allowUnknownOption()
    .option('--metadata-dir <d>', 'where the trusted metadata is kept (required)')
    .option('--metadata-url <u>', 'refresh, download: the metadata base URL')
    .option('--target-name <p>', 'download: the target path (repeatable: downloaded in order, stopping at the first failure)', many)
    .option('--target-base-url <t>', 'download: the targets base URL')
    .option('--target-dir <o>', 'download: where to put it')
    .addHelpText(
      'after',
      `
Examples:
  cairn release client --metadata-dir D init ROOT_FILE
  cairn release client --metadata-dir D --metadata-url U refresh
  cairn release client --metadata-dir D --metadata-url U --target-name P --target-base-url T --target-dir O download`,
    )
    .action(async (command: string | undefined, operands: string[], o: ClientOptions) => io.setExitCode(await clientCmd(command, operands, o, io)))
  return new Command('release')
    .description('the signed OTA release channel (TUF): make and sign releases, serve them; see docs/ota.md')
    .addCommand(init)
    .addCommand(add)
    .addCommand(setRollout)
    .addCommand(refresh)
    .addCommand(rotate)
    .addCommand(listCommand)
    .addCommand(serve)
    .addCommand(client)
    .addHelpText('after', `\nForms:\n${SYNOPSIS}\n\n${ROLES_NOTE}\n\nExample:\n  cairn release init --repo ./releases`)
}

async function serveCmd(o: { repo: string; port: string }, io: Io): Promise<void> {
  const root = join(o.repo, 'published')
  if (!existsSync(join(root, 'metadata'))) throw new CairnError('BAD_REQUEST', `${root}/metadata not found: run \`cairn release init\` first`)
  const port = intFlag(o.port, 'port', 0, 65535)!
  const server = await serveStatic({ root, port, onRequest: (m, p, s) => io.out.write(`${s} ${m} ${p}\n`) })
  io.out.write(`serving ${root} on ${server.url} (loopback only): --release-url ${server.url}\n`)
  await new Promise<void>(resolve => {
    process.once('SIGINT', resolve)
    process.once('SIGTERM', resolve)
  })
  await server.close()
}

interface ClientOptions {
  metadataDir?: string
  metadataUrl?: string
  targetName?: string[]
  targetBaseUrl?: string
  targetDir?: string
}

/** The tuf-conformance client CLI: exit 0 on success, 1 on any failure. */
async function clientCmd(command: string | undefined, operands: string[], o: ClientOptions, io: Io): Promise<number> {
  try {
    const unknown = [command, ...operands].find(a => a?.startsWith('-'))
    if (unknown !== undefined) throw new CairnError('BAD_REQUEST', `unknown option ${unknown}`)
    const need = (flag: string, v: string | undefined): string => {
      if (v === undefined || v === '') throw new CairnError('BAD_REQUEST', `--${flag} is required`)
      return v
    }
    const metadataDir = need('metadata-dir', o.metadataDir)
    if (command === 'init') {
      if (operands.length !== 1) throw new CairnError('BAD_REQUEST', 'usage: cairn release client --metadata-dir D init ROOT_FILE')
      mkdirSync(metadataDir, { recursive: true })
      copyFileSync(operands[0]!, join(metadataDir, 'root.json'))
      io.out.write(`initialised ${metadataDir} with ${operands[0]}\n`)
      return 0
    }
    if (command === 'refresh') {
      await refreshMetadata({ metadataDir, metadataUrl: need('metadata-url', o.metadataUrl), fetchRetries: 0 })
      io.out.write(`refreshed ${metadataDir}\n`)
      return 0
    }
    if (command === 'download') {
      const names = o.targetName ?? []
      if (names.length === 0) throw new CairnError('BAD_REQUEST', '--target-name is required')
      const target = { baseUrl: need('target-base-url', o.targetBaseUrl), dir: need('target-dir', o.targetDir) }
      // One refresh for every target, then each in the order given (the conformance
      // contract): the first that fails ends the command.
      const trusted = await refreshMetadata({ metadataDir, metadataUrl: need('metadata-url', o.metadataUrl), fetchRetries: 0 })
      for (const name of names) await downloadTarget(trusted, name, target, io)
      return 0
    }
    throw new CairnError('BAD_REQUEST', 'usage: cairn release client … init ROOT_FILE | refresh | download')
  } catch (err) {
    io.err.write(`cairn release client: ${err instanceof Error ? err.message : String(err)}\n`)
    return 1
  }
}

/** Downloads one target into `target.dir` under its URL-encoded path, verified against
 * every hash Cairn knows that the signed metadata lists; one already there that matches
 * is kept without a request. */
async function downloadTarget(trusted: TrustedTargets, name: string, target: { baseUrl: string; dir: string }, io: Io): Promise<void> {
  const info = await targetInfo(trusted, name)
  if (!info) throw new CairnError('TUF_METADATA', `${name}: no such target in the signed metadata`)
  const hashes = verifiableHashes(info.hashes, name)
  mkdirSync(target.dir, { recursive: true })
  const dest = join(target.dir, encodeURIComponent(name))
  if (existsSync(dest) && statSync(dest).size === info.length && (await hashMismatch(dest, hashes)) === null) {
    io.out.write(`${dest}: already downloaded\n`)
    return
  }
  const partial = `${dest}.partial`
  const url = targetUrl(target.baseUrl, name, trusted.consistentSnapshot ? namingHash(hashes) : null)
  await fetchTarget({ url, file: partial, length: info.length, hashes, retries: 1, retryDelayMs: 200 })
  rmSync(dest, { force: true })
  renameSync(partial, dest)
  io.out.write(`downloaded ${name} to ${dest}\n`)
}
