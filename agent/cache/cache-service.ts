// The cache as the agent runs it: the store under <stateDir>/cache, and when
// `cache.enabled` the HTTP server and its serve-receipt aggregator. One start, one stop,
// so agent.ts wires it in a few lines.

import { join } from 'node:path'
import type { Clock } from '../../protocol/clock.js'
import type { Config } from '../config/config-schema.js'
import type { KeyPair } from '../../protocol/keys.js'
import type { Logger } from '../../protocol/log.js'
import type { Outbox } from '../core/outbox.js'
import type { Db } from '../core/state-db.js'
import { startCacheServer, type CacheServer } from './http-server.js'
import { ServeReceipts } from './serve-receipts.js'
import { ContentStore } from './store.js'

export interface CacheService {
  readonly store: ContentStore
  /** Undefined when cache.enabled is false or the port could not be bound. */
  readonly server: CacheServer | undefined
  readonly receipts: ServeReceipts | undefined
  stop(): Promise<void>
}

export interface CacheServiceDeps {
  config: Readonly<Config>
  db: Db
  outbox: Outbox
  identity: KeyPair
  clock: Clock
  log: Logger
}

export async function startCacheService(d: CacheServiceDeps): Promise<CacheService> {
  const c = d.config.cache
  const store = await ContentStore.open({
    dir: join(d.config.stateDir, 'cache'),
    quotaBytes: c.quotaBytes,
    maxObjectBytes: c.maxObjectBytes,
    fetchTimeoutMs: c.fetchTimeoutS * 1000,
    clock: d.clock,
    log: d.log,
  })
  // A lowered quota takes effect at start.
  store.gc()
  let server: CacheServer | undefined
  let receipts: ServeReceipts | undefined
  if (c.enabled) {
    receipts = new ServeReceipts({ db: d.db, identity: d.identity, fleet: d.config.fleet, outbox: d.outbox, clock: d.clock, periodS: c.receiptPeriodS, log: d.log })
    const r = receipts
    try {
      server = await startCacheServer({ store, host: c.host, port: c.port, clock: d.clock, log: d.log, onServed: rec => r.record(rec) })
      d.log.info({ url: `${server.url}/c/<sha256|cid>` }, 'cache server up')
    } catch (err) {
      // Like the health endpoint: a busy port must not keep the device off its fleet.
      d.log.error({ err, port: c.port }, 'cache server not started')
    }
    receipts.start()
  }
  return {
    store,
    server,
    receipts,
    stop: async () => {
      await server?.close()
      // Responses are counted one turn after they close (server.ts): let the last ones land.
      await new Promise(r => setImmediate(r))
      // After the server: the last responses are counted before the counters are written.
      receipts?.stop()
      store.close()
    },
  }
}
