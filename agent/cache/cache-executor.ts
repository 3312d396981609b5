// The `cache` task: fetch the listed objects from their origins into the store,
// verified against their content ids, optionally pinned. Idempotent: an object already
// stored is not fetched again, so a re-run (after a restart) finds the work done.

import { Type, type Static } from '@sinclair/typebox'
import { Value } from '@sinclair/typebox/value'
import { CairnError } from '../../protocol/errors.js'
import type { Logger } from '../../protocol/log.js'
import type { AdmitResult, HashedBlob, TaskExecutor, TaskOutcome, TaskRunContext } from '../task/executor-port.js'
import { cidFromSha256, toSha256 } from './cid.js'
import type { ContentStore } from './store.js'

const MAX_TASK_OBJECTS = 64

const CacheObjectSchema = Type.Object(
  {
    cid: Type.Optional(Type.String({ maxLength: 128, description: 'CIDv1 raw sha2-256 (bafkrei…); give this or sha256' })),
    sha256: Type.Optional(Type.String({ pattern: '^[0-9a-f]{64}$', description: 'lowercase hex SHA-256 of the bytes' })),
    origins: Type.Array(Type.String({ pattern: '^https?://', maxLength: 2048 }), { minItems: 1, maxItems: 8, description: 'URLs to fetch from, tried in order' }),
    bytes: Type.Optional(Type.Integer({ minimum: 0, description: 'expected length; any other is refused' })),
    pin: Type.Optional(Type.Boolean({ description: 'keep it out of LRU eviction' })),
  },
  { additionalProperties: false },
)
export const CacheParamsSchema = Type.Object(
  { objects: Type.Array(CacheObjectSchema, { minItems: 1, maxItems: MAX_TASK_OBJECTS }) },
  { additionalProperties: false, $id: 'https://cairn.dev/schemas/cache-task-params.json', title: 'cache task params' },
)

interface CacheObjectParams {
  sha256: string
  cid: string
  origins: string[]
  bytes?: number
  pin: boolean
}
export interface CacheParams {
  objects: CacheObjectParams[]
}

export interface CacheExecutorOptions {
  store: ContentStore
  log?: Logger
}

export function createCacheExecutor(o: CacheExecutorOptions): TaskExecutor<CacheParams> {
  return {
    type: 'cache',
    parse: params => parseCacheParams(params),
    admit: params => admit(o.store, params),
    run: (params, ctx) => run(o, params, ctx),
  }
}

function parseCacheParams(params: unknown): CacheParams {
  if (!Value.Check(CacheParamsSchema, params)) {
    const first = [...Value.Errors(CacheParamsSchema, params)][0]
    throw new CairnError('BAD_REQUEST', `cache params: ${first ? `${first.path || '/'} ${first.message}` : 'invalid'}`)
  }
  const p = params as Static<typeof CacheParamsSchema>
  const seen = new Set<string>()
  const objects: CacheObjectParams[] = []
  p.objects.forEach((obj, i) => {
    const at = `cache params: /objects/${i}`
    if (obj.cid === undefined && obj.sha256 === undefined) throw new CairnError('BAD_REQUEST', `${at}: give cid or sha256`)
    const fromCid = obj.cid === undefined ? undefined : toSha256(obj.cid, `${at}/cid`)
    if (fromCid !== undefined && obj.sha256 !== undefined && fromCid !== obj.sha256) throw new CairnError('BAD_REQUEST', `${at}: cid and sha256 name different content`)
    const sha256 = fromCid ?? obj.sha256!
    for (const [j, u] of obj.origins.entries()) {
      try {
        new URL(u)
      } catch {
        throw new CairnError('BAD_REQUEST', `${at}/origins/${j}: not a URL`)
      }
    }
    if (seen.has(sha256)) throw new CairnError('BAD_REQUEST', `${at}: ${sha256} is listed twice`)
    seen.add(sha256)
    objects.push({ sha256, cid: cidFromSha256(sha256), origins: obj.origins, ...(obj.bytes !== undefined ? { bytes: obj.bytes } : {}), pin: obj.pin ?? false })
  })
  return { objects }
}

function admit(store: ContentStore, params: CacheParams): AdmitResult {
  let total = 0
  for (const obj of params.objects) {
    const have = store.stat(obj.sha256)
    if (have) continue
    const one = store.admit(obj.bytes)
    if (!one.ok) return { ok: false, code: one.code, message: `${obj.sha256}: ${one.message}` }
    total += obj.bytes ?? 0
  }
  const all = store.admit(total)
  return all.ok ? all : { ok: false, code: all.code, message: `together: ${all.message}` }
}

async function run(o: CacheExecutorOptions, params: CacheParams, ctx: TaskRunContext): Promise<TaskOutcome> {
  const t0 = performance.now()
  const inputs: HashedBlob[] = []
  const outputs: HashedBlob[] = []
  const results: Array<Record<string, string | number | boolean>> = []
  let bytesFetched = 0
  const n = params.objects.length
  for (const [i, obj] of params.objects.entries()) {
    ctx.signal.throwIfAborted()
    ctx.progress(i / n, obj.cid)
    const lease = await o.store.lease(obj.sha256, obj.origins, { signal: ctx.signal, ...(obj.bytes !== undefined ? { expectBytes: obj.bytes } : {}) })
    try {
      if (obj.pin) o.store.pin(obj.sha256)
      const origin = lease.fetched ? (o.store.origin(obj.sha256) ?? obj.origins[0]!) : 'local'
      if (lease.fetched) bytesFetched += lease.bytes
      inputs.push({ name: origin, sha256: obj.sha256, bytes: lease.bytes })
      outputs.push({ name: obj.cid, sha256: obj.sha256, bytes: lease.bytes })
      results.push({ sha256: obj.sha256, cid: obj.cid, bytes: lease.bytes, fetched: lease.fetched, pinned: obj.pin || (o.store.stat(obj.sha256)?.pinned ?? false), origin })
    } finally {
      lease.release()
    }
  }
  ctx.progress(1)
  o.log?.info({ objects: n, bytesFetched }, 'cache task done')
  return {
    inputs,
    outputs,
    result: { objects: results },
    backend: 'http',
    timings: { fetch: Math.round(performance.now() - t0) },
    resources: { bytesFetched },
  }
}
