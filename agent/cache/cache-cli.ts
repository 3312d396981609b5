// `cairn cache ls|get|pin|unpin|gc --state-dir DIR`: the content cache of a stopped
// agent (the store is single-process: with the agent running these fail with LOCKED).

import { copyFileSync } from 'node:fs'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { CacheSchema } from '../config/config-schema.js'
import { CairnError } from '../../protocol/errors.js'
import { toSha256 } from './cid.js'
import { ContentStore } from './store.js'

type Out = { write(s: string): unknown }

export const CACHE_HELP = `  cairn cache ls|gc --state-dir DIR [--quota-bytes N] [--json]
  cairn cache get <sha256|cid> --state-dir DIR --origin URL... [--bytes N] [--pin] [--out FILE]
  cairn cache pin|unpin <sha256|cid> --state-dir DIR`

const DEFAULT_QUOTA = CacheSchema.properties.quotaBytes.default as number
const DEFAULT_MAX = CacheSchema.properties.maxObjectBytes.default as number

export async function cacheCmd(argv: readonly string[], io: { out: Out; err: Out }): Promise<number> {
  const { values, positionals } = parseArgs({
    args: [...argv],
    allowPositionals: true,
    options: {
      'state-dir': { type: 'string' },
      'quota-bytes': { type: 'string' },
      origin: { type: 'string', multiple: true },
      bytes: { type: 'string' },
      pin: { type: 'boolean' },
      out: { type: 'string' },
      json: { type: 'boolean' },
    },
  })
  const [action, name] = positionals
  if (!values['state-dir']) throw new CairnError('BAD_REQUEST', `--state-dir is required\n${CACHE_HELP}`)
  const int = (v: string | undefined, what: string, def: number) => {
    if (v === undefined) return def
    const n = Number(v)
    if (!Number.isSafeInteger(n) || n < 0) throw new CairnError('BAD_REQUEST', `${what} must be a whole number of bytes`)
    return n
  }
  const quotaBytes = int(values['quota-bytes'], '--quota-bytes', DEFAULT_QUOTA)
  const needName = () => {
    if (!name) throw new CairnError('BAD_REQUEST', `cache ${action}: name the object (sha256 or CID)`)
    return toSha256(name, `cache ${action}`)
  }
  if (!['ls', 'get', 'pin', 'unpin', 'gc'].includes(action ?? '')) throw new CairnError('BAD_REQUEST', `cache: unknown action ${JSON.stringify(action ?? '')}\n${CACHE_HELP}`)
  const store = await ContentStore.open({ dir: join(values['state-dir'], 'cache'), quotaBytes, maxObjectBytes: DEFAULT_MAX })
  try {
    switch (action) {
      case 'ls': {
        const list = store.list()
        if (values.json) io.out.write(JSON.stringify(list) + '\n')
        else for (const o of list) io.out.write(`${o.sha256}  ${o.cid}  ${String(o.bytes).padStart(12)}  ${o.pinned ? 'pinned' : '      '}  ${new Date(o.lastAccess).toISOString()}\n`)
        const u = store.usage()
        if (!values.json) io.out.write(`${u.objects} objects, ${u.bytes} bytes (${u.pinnedBytes} pinned), quota ${u.quotaBytes}\n`)
        return 0
      }
      case 'get': {
        const sha = needName()
        const lease = await store.lease(sha, values.origin ?? [], { signal: AbortSignal.timeout(3600_000), ...(values.bytes !== undefined ? { expectBytes: int(values.bytes, '--bytes', 0) } : {}) })
        try {
          if (values.pin) store.pin(sha)
          if (values.out) copyFileSync(lease.path, values.out)
          io.out.write(JSON.stringify({ ...store.stat(sha), fetched: lease.fetched, origin: store.origin(sha) ?? null }) + '\n')
        } finally {
          lease.release()
        }
        return 0
      }
      case 'pin':
      case 'unpin': {
        const sha = needName()
        if (!store.pin(sha, action === 'pin')) throw new CairnError('NOT_FOUND', `${sha} is not in the cache`)
        return 0
      }
      default: {
        const { evicted } = store.gc()
        io.out.write(JSON.stringify({ evicted, usage: store.usage() }) + '\n')
        return 0
      }
    }
  } finally {
    store.close()
  }
}
