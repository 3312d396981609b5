// `cairn cache ls|get|pin|unpin|gc --state-dir DIR`: the content cache of a stopped
// agent (the store is single-process: with the agent running these fail with LOCKED).

import { copyFileSync } from 'node:fs'
import { join } from 'node:path'
import { Command } from 'commander'
import { CacheSchema } from '../config/config-schema.js'
import { CairnError } from '../../protocol/errors.js'
import { toSha256 } from './cid.js'
import { ContentStore } from './store.js'

type Out = { write(s: string): unknown }

const DEFAULT_QUOTA = CacheSchema.properties.quotaBytes.default as number
const DEFAULT_MAX = CacheSchema.properties.maxObjectBytes.default as number

interface StoreOptions {
  stateDir: string
  quotaBytes?: string
}

const many = (v: string, prev: string[] | undefined): string[] => [...(prev ?? []), v]

const int = (v: string | undefined, what: string, def: number): number => {
  if (v === undefined) return def
  const n = Number(v)
  if (!Number.isSafeInteger(n) || n < 0) throw new CairnError('BAD_REQUEST', `${what} must be a whole number of bytes`)
  return n
}

/** Opens the agent's content store for one action and closes it after. */
async function withStore<T>(o: StoreOptions, fn: (store: ContentStore) => T | Promise<T>): Promise<T> {
  const store = await ContentStore.open({ dir: join(o.stateDir, 'cache'), quotaBytes: int(o.quotaBytes, '--quota-bytes', DEFAULT_QUOTA), maxObjectBytes: DEFAULT_MAX })
  try {
    return await fn(store)
  } finally {
    store.close()
  }
}

/** A cache action: the state dir and quota every one takes, and its example. */
function action(name: string, description: string, example: string): Command {
  return new Command(name)
    .description(description)
    .requiredOption('--state-dir <dir>', "the agent's state dir (the cache is <dir>/cache)")
    .option('--quota-bytes <n>', `the cache quota (default: ${DEFAULT_QUOTA}, as cache.quotaBytes)`)
    .addHelpText('after', `\nExample:\n  ${example}`)
}

export function cacheCommand(io: { out: Out }): Command {
  const ls = action('ls', 'list the objects: sha256, CID, bytes, pinned, last access; then the usage', 'cairn cache ls --state-dir /var/lib/cairn --json')
    .option('--json', 'the list as JSON')
    .action((o: StoreOptions & { json?: boolean }) =>
      withStore(o, store => {
        const list = store.list()
        if (o.json) io.out.write(JSON.stringify(list) + '\n')
        else for (const x of list) io.out.write(`${x.sha256}  ${x.cid}  ${String(x.bytes).padStart(12)}  ${x.pinned ? 'pinned' : '      '}  ${new Date(x.lastAccess).toISOString()}\n`)
        const u = store.usage()
        if (!o.json) io.out.write(`${u.objects} objects, ${u.bytes} bytes (${u.pinnedBytes} pinned), quota ${u.quotaBytes}\n`)
      }),
    )
  const gc = action('gc', 'evict least recently used unpinned objects down to the quota', 'cairn cache gc --state-dir /var/lib/cairn --quota-bytes 1000000000')
    .option('--json', 'accepted for symmetry with ls; the output is JSON anyway')
    .action((o: StoreOptions) =>
      withStore(o, store => {
        const { evicted } = store.gc()
        io.out.write(JSON.stringify({ evicted, usage: store.usage() }) + '\n')
      }),
    )
  const get = action(
    'get',
    'fetch an object into the cache from its origins, verified against its content id',
    "cairn cache get <sha256|cid> --state-dir /var/lib/cairn --origin 'https://mirror.example/{sha256}' --pin",
  )
    .argument('<sha256|cid>', 'the content id: a lowercase hex sha256 or a CIDv1 (bafkrei…)')
    .option('--origin <url>', 'where to fetch it from (repeatable)', many)
    .option('--bytes <n>', 'the expected length')
    .option('--pin', 'pin it (never evicted)')
    .option('--out <file>', 'also copy the verified bytes here')
    .action((name: string, o: StoreOptions & { origin?: string[]; bytes?: string; pin?: boolean; out?: string }) => {
      const sha = toSha256(name, 'cache get')
      return withStore(o, async store => {
        const lease = await store.lease(sha, o.origin ?? [], { signal: AbortSignal.timeout(3600_000), ...(o.bytes !== undefined ? { expectBytes: int(o.bytes, '--bytes', 0) } : {}) })
        try {
          if (o.pin) store.pin(sha)
          if (o.out) copyFileSync(lease.path, o.out)
          io.out.write(JSON.stringify({ ...store.stat(sha), fetched: lease.fetched, origin: store.origin(sha) ?? null }) + '\n')
        } finally {
          lease.release()
        }
      })
    })
  const pin = (verb: 'pin' | 'unpin') =>
    action(verb, verb === 'pin' ? 'pin an object: never evicted' : 'unpin an object: evictable again', `cairn cache ${verb} <sha256|cid> --state-dir /var/lib/cairn`)
      .argument('<sha256|cid>', 'the content id')
      .action((name: string, o: StoreOptions) => {
        const sha = toSha256(name, `cache ${verb}`)
        return withStore(o, store => {
          if (!store.pin(sha, verb === 'pin')) throw new CairnError('NOT_FOUND', `${sha} is not in the cache`)
        })
      })
  return new Command('cache')
    .description('the content cache of a stopped agent (while the agent runs, it holds the store: LOCKED)')
    .addCommand(ls)
    .addCommand(get)
    .addCommand(pin('pin'))
    .addCommand(pin('unpin'))
    .addCommand(gc)
    .addHelpText(
      'after',
      `
Examples:
  cairn cache ls --state-dir /var/lib/cairn
  cairn cache get <sha256|cid> --state-dir /var/lib/cairn --origin URL --pin --out copy.bin`,
    )
}
