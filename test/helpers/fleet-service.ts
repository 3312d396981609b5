// A fleet service (`cairn fleet serve` in process) for tests: a fresh SQLite store in a
// temp dir, the API on a free loopback port, quiet logs, a plain subscription; stopped
// when the test ends. Options override any of it.

import type { Test } from 'tap'
import { FleetService, type FleetServiceOptions } from '../../fleet/service/fleet-service.js'
import { SqliteFleetStore } from '../../fleet/service/sqlite-store.js'
import { systemClock } from '../../protocol/clock.js'
import { createLogger } from '../../protocol/log.js'
import { tmp } from './agent.js'
import type { TestBroker } from './broker.js'

export async function startTestService(t: Test, o: { broker: TestBroker; fleet: string; mqttVersion: 4 | 5 } & Partial<FleetServiceOptions>): Promise<{ svc: FleetService; base: string }> {
  const { broker, mqttVersion, ...rest } = o
  const svc = new FleetService({
    brokerUrl: broker.url,
    mqtt: { protocolVersion: mqttVersion },
    store: new SqliteFleetStore(tmp('cairn-fleet-')),
    clock: systemClock,
    log: createLogger({ level: 'fatal' }),
    listen: { host: '127.0.0.1', port: 0 },
    shareGroup: null,
    instance: 'a',
    ...rest,
  })
  t.teardown(() => svc.stop())
  return { svc, base: await svc.start() }
}
