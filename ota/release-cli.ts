// `cairn release …`: argument parsing and output for the release side of OTA. The work is
// in tuf-repo.ts (signing), tuf-serve.ts (static HTTP) and tuf-client.ts (verifying).

import { copyFileSync, existsSync, mkdirSync, renameSync, rmSync } from 'node:fs'
import { join } from 'node:path'
import { parseArgs, type ParseArgsConfig } from 'node:util'
import { CairnError } from '../protocol/errors.js'
import { fetchTarget } from './fetcher.js'
import { sha256File } from '../protocol/hash.js'
import { refreshMetadata, targetInfo, targetUrl } from './tuf-client.js'
import { lockRepo, parseDuration } from './tuf-layout.js'
import { ROLES, type RoleName } from './tuf-keys.js'
import { TufRepo } from './tuf-repo.js'
import { serveStatic } from './tuf-serve.js'
import type { Expiries } from './tuf-layout.js'

type Out = { write(s: string): unknown }
type Io = { out: Out; err: Out }

export const RELEASE_HELP = `  cairn release init --repo DIR [--root-keys N] [--root-threshold M] [--expiry ROLE=DUR]...
  cairn release add --repo DIR --version V --channel NAME [--min-version V] [--arch arm64,x64]
              [--board rpi4,rpi5] [--rollout PCT] [--kind agent|os] FILE...
  cairn release set-rollout --repo DIR --version V --pct P [--channel NAME]
  cairn release refresh --repo DIR [--targets] [--root]
  cairn release rotate --repo DIR --role root|targets|snapshot|timestamp [--root-keys N --root-threshold M]
  cairn release list --repo DIR [--json]
  cairn release serve --repo DIR [--port P]
  cairn release client --metadata-dir D init ROOT_FILE
  cairn release client --metadata-dir D --metadata-url U refresh
  cairn release client --metadata-dir D --metadata-url U --target-name P --target-base-url T --target-dir O download
              (signing commands take --keys DIR, repeatable: where the private keys are, default
              <repo>/keys; new keys from init and rotate go beside the role's old keys)`

const HELP = `cairn release: the signed OTA release channel (TUF). See docs/ota.md.

${RELEASE_HELP}

Roles and defaults: root 2 of 3 keys, 1 year; targets 1 key, 3 months (root and targets
keys offline); snapshot 1 key, 1 week; timestamp 1 key, 1 day (online). Run
\`cairn release refresh\` at least daily (a timer) so the timestamp never expires.`

const REPO_OPTS = { repo: { type: 'string' }, keys: { type: 'string', multiple: true } } as const

function parse(args: readonly string[], options: NonNullable<ParseArgsConfig['options']>, allowPositionals = false, strict = true) {
  return parseArgs({ args: [...args], options, allowPositionals, strict })
}

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
  return String(v).split(',').map(s => s.trim()).filter(s => s !== '')
}

function openRepo(values: Record<string, unknown>): TufRepo {
  const dir = values.repo as string | undefined
  if (!dir) throw new CairnError('BAD_REQUEST', '--repo DIR is required')
  return TufRepo.open({ dir, ...(values.keys ? { keysDir: values.keys as string[] } : {}) })
}

function versions(repo: TufRepo): string {
  return `root v${repo.root.signed.version}, targets v${repo.targets.signed.version}, snapshot v${repo.snapshot.signed.version}, timestamp v${repo.timestamp.signed.version} (expires ${repo.timestamp.signed.expires})`
}

export async function releaseCmd(args: readonly string[], io: Io): Promise<number> {
  const [verb, ...rest] = args
  if (verb === 'init' || verb === 'add' || verb === 'set-rollout' || verb === 'refresh' || verb === 'rotate') {
    const dir = parse(rest, { repo: { type: 'string' } }, true, false).values.repo
    if (typeof dir !== 'string' || dir === '') throw new CairnError('BAD_REQUEST', '--repo DIR is required')
    const unlock = lockRepo(dir)
    try {
      return signingCmd(verb, rest, io)
    } finally {
      unlock()
    }
  }
  switch (verb) {
    case 'list': {
      const { values } = parse(rest, { ...REPO_OPTS, json: { type: 'boolean' } })
      const targets = openRepo(values).list()
      if (values.json) io.out.write(JSON.stringify(targets, null, 2) + '\n')
      else for (const t of targets) io.out.write(`${t.path}  ${t.length} B  ${t.info ? `${t.info.channel} ${t.info.kind} rollout ${t.info.rollout} %` : '(no cairn metadata)'}\n`)
      return 0
    }
    case 'serve':
      return serveCmd(rest, io)
    case 'client':
      return clientCmd(rest, io)
    case undefined:
    case 'help':
    case '--help':
    case '-h':
      io.out.write(HELP + '\n')
      return 0
    default:
      throw new CairnError('BAD_REQUEST', `unknown release command ${JSON.stringify(verb)}: use init, add, set-rollout, refresh, rotate, list, serve or client (cairn release --help)`)
  }
}

async function serveCmd(args: readonly string[], io: Io): Promise<number> {
  const { values } = parse(args, { repo: { type: 'string' }, port: { type: 'string' } })
  if (!values.repo) throw new CairnError('BAD_REQUEST', '--repo DIR is required')
  const root = join(values.repo as string, 'published')
  if (!existsSync(join(root, 'metadata'))) throw new CairnError('BAD_REQUEST', `${root}/metadata not found: run \`cairn release init\` first`)
  const port = intFlag(values.port ?? '8080', 'port', 0, 65535)!
  const server = await serveStatic({ root, port, onRequest: (m, p, s) => io.out.write(`${s} ${m} ${p}\n`) })
  io.out.write(`serving ${root} on ${server.url} (loopback only): --release-url ${server.url}\n`)
  await new Promise<void>(resolve => {
    process.once('SIGINT', resolve)
    process.once('SIGTERM', resolve)
  })
  await server.close()
  return 0
}

/** The commands that sign, run while holding the repository lock. */
function signingCmd(verb: string, rest: readonly string[], io: Io): number {
  switch (verb) {
    case 'init': {
      const { values } = parse(rest, { ...REPO_OPTS, 'root-keys': { type: 'string' }, 'root-threshold': { type: 'string' }, expiry: { type: 'string', multiple: true } })
      if (!values.repo) throw new CairnError('BAD_REQUEST', '--repo DIR is required')
      const expiry: Partial<Expiries> = {}
      for (const kv of (values.expiry as string[] | undefined) ?? []) {
        const [role, dur] = kv.split('=', 2)
        if (!ROLES.includes(role as RoleName) || dur === undefined) throw new CairnError('BAD_REQUEST', `--expiry ${kv}: use ROLE=DURATION, e.g. timestamp=1d, root=1y`)
        expiry[role as RoleName] = parseDuration(dur, `--expiry ${role}`)
      }
      const rootKeys = intFlag(values['root-keys'], 'root-keys', 1, 20)
      const rootThreshold = intFlag(values['root-threshold'], 'root-threshold', 1, 20)
      const repo = TufRepo.init({
        dir: values.repo as string,
        ...(values.keys ? { keysDir: values.keys as string[] } : {}),
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
      return 0
    }
    case 'add': {
      const { values, positionals } = parse(
        rest,
        { ...REPO_OPTS, version: { type: 'string' }, channel: { type: 'string' }, 'min-version': { type: 'string' }, arch: { type: 'string' }, board: { type: 'string' }, rollout: { type: 'string' }, kind: { type: 'string' } },
        true,
      )
      for (const req of ['version', 'channel'] as const) if (!values[req]) throw new CairnError('BAD_REQUEST', `--${req} is required`)
      const kind = (values.kind as string | undefined) ?? 'agent'
      if (kind !== 'agent' && kind !== 'os') throw new CairnError('BAD_REQUEST', '--kind must be agent or os')
      const repo = openRepo(values)
      const arch = list(values.arch)
      const boards = list(values.board)
      const added = repo.addRelease(positionals, {
        version: values.version as string,
        channel: values.channel as string,
        rollout: pctFlag(values.rollout, 'rollout') ?? 100,
        kind,
        ...(values['min-version'] ? { minVersion: values['min-version'] as string } : {}),
        ...(arch ? { arch } : {}),
        ...(boards ? { boards } : {}),
      })
      for (const t of added) io.out.write(`added ${t.path} (${t.length} bytes, sha256 ${t.sha256})\n`)
      io.out.write(`signed: ${versions(repo)}\n`)
      return 0
    }
    case 'set-rollout': {
      const { values } = parse(rest, { ...REPO_OPTS, version: { type: 'string' }, pct: { type: 'string' }, channel: { type: 'string' } })
      if (!values.version) throw new CairnError('BAD_REQUEST', '--version is required')
      const pct = pctFlag(values.pct, 'pct')
      if (pct === undefined) throw new CairnError('BAD_REQUEST', '--pct is required (0 halts the release)')
      const repo = openRepo(values)
      const changed = repo.setRollout(values.version as string, pct, values.channel as string | undefined)
      io.out.write(`rollout ${pct} % for ${changed.join(', ')}\nsigned: ${versions(repo)}\n`)
      return 0
    }
    case 'refresh': {
      const { values } = parse(rest, { ...REPO_OPTS, targets: { type: 'boolean' }, root: { type: 'boolean' } })
      const repo = openRepo(values)
      const { signed, warnings } = repo.refresh({ targets: values.targets === true, root: values.root === true })
      io.out.write(`re-signed ${signed.join(', ')}: ${versions(repo)}\n`)
      for (const w of warnings) io.err.write(`warning: ${w}\n`)
      return 0
    }
    case 'rotate': {
      const { values } = parse(rest, { ...REPO_OPTS, role: { type: 'string' }, 'root-keys': { type: 'string' }, 'root-threshold': { type: 'string' } })
      const role = values.role as RoleName | undefined
      if (!role || !ROLES.includes(role)) throw new CairnError('BAD_REQUEST', '--role must be root, targets, snapshot or timestamp')
      const rootKeys = intFlag(values['root-keys'], 'root-keys', 1, 20)
      const rootThreshold = intFlag(values['root-threshold'], 'root-threshold', 1, 20)
      if (role !== 'root' && (rootKeys !== undefined || rootThreshold !== undefined)) throw new CairnError('BAD_REQUEST', '--root-keys and --root-threshold go with --role root')
      const repo = openRepo(values)
      const r = repo.rotate(role, { ...(rootKeys !== undefined ? { rootKeys } : {}), ...(rootThreshold !== undefined ? { rootThreshold } : {}) })
      io.out.write(
        `rotated ${role}: new key${r.newKeyIds.length > 1 ? 's' : ''} ${r.newKeyIds.join(', ')}\n` +
          `old keys moved to ${join(repo.paths.keys, 'retired')}: destroy them once the new root is published everywhere\n` +
          `signed: ${versions(repo)}\n`,
      )
      return 0
    }
    default:
      throw new CairnError('BAD_REQUEST', `unknown release command ${JSON.stringify(verb)}`)
  }
}

/** The tuf-conformance client CLI: exit 0 on success, 1 on any failure. */
async function clientCmd(args: readonly string[], io: Io): Promise<number> {
  try {
    const { values, positionals } = parse(
      args,
      { 'metadata-dir': { type: 'string' }, 'metadata-url': { type: 'string' }, 'target-name': { type: 'string' }, 'target-base-url': { type: 'string' }, 'target-dir': { type: 'string' } },
      true,
    )
    const need = (name: string): string => {
      const v = values[name]
      if (typeof v !== 'string' || v === '') throw new CairnError('BAD_REQUEST', `--${name} is required`)
      return v
    }
    const [command, ...operands] = positionals
    const metadataDir = need('metadata-dir')
    if (command === 'init') {
      if (operands.length !== 1) throw new CairnError('BAD_REQUEST', 'usage: cairn release client --metadata-dir D init ROOT_FILE')
      mkdirSync(metadataDir, { recursive: true })
      copyFileSync(operands[0]!, join(metadataDir, 'root.json'))
      io.out.write(`initialised ${metadataDir} with ${operands[0]}\n`)
      return 0
    }
    if (command === 'refresh') {
      await refreshMetadata({ metadataDir, metadataUrl: need('metadata-url'), fetchRetries: 0 })
      io.out.write(`refreshed ${metadataDir}\n`)
      return 0
    }
    if (command === 'download') {
      const updater = await refreshMetadata({ metadataDir, metadataUrl: need('metadata-url'), fetchRetries: 0 })
      const name = need('target-name')
      const info = await targetInfo(updater, name)
      if (!info) throw new CairnError('TUF_METADATA', `${name}: no such target in the signed metadata`)
      const sha256 = info.hashes.sha256
      if (!sha256) throw new CairnError('TUF_METADATA', `${name}: the signed metadata gives no sha256`)
      const targetDir = need('target-dir')
      mkdirSync(targetDir, { recursive: true })
      const dest = join(targetDir, encodeURIComponent(name))
      if (existsSync(dest) && (await sha256File(dest)) === sha256) {
        io.out.write(`${dest}: already downloaded\n`)
        return 0
      }
      const partial = `${dest}.partial`
      await fetchTarget({ url: targetUrl(need('target-base-url'), name, sha256), file: partial, length: info.length, sha256, retries: 1, retryDelayMs: 200 })
      rmSync(dest, { force: true })
      renameSync(partial, dest)
      io.out.write(`downloaded ${name} to ${dest}\n`)
      return 0
    }
    throw new CairnError('BAD_REQUEST', 'usage: cairn release client … init ROOT_FILE | refresh | download')
  } catch (err) {
    io.err.write(`cairn release client: ${err instanceof Error ? err.message : String(err)}\n`)
    return 1
  }
}
