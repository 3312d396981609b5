// The fleet service's reading of device messages: topics, the presence order key, the
// numbers kept of a telemetry sample, and `--listen`'s loopback rule.

import t from 'tap'
import { FleetIngest, metricsOf, parseTopic, presenceKey, type Attempt } from '../../../fleet/service/ingest.js'
import { SqliteFleetStore } from '../../../fleet/service/sqlite-store.js'
import { systemClock } from '../../../protocol/clock.js'
import { newId } from '../../../protocol/ids.js'
import { createLogger } from '../../../protocol/log.js'
import { tmp } from '../../helpers/agent.js'
import { parseListen } from '../../../fleet/service/serve-cli.js'
import type { TelemetrySample } from '../../../hw/schema.js'

const D = 'e'.repeat(52)

t.test('topics: the three kinds of this fleet, nothing else', async t => {
  t.same(parseTopic(`cairn/v1/demo/${D}/status`, 'demo'), { device: D, kind: 'status' })
  t.same(parseTopic(`cairn/v1/demo/${D}/event`, 'demo'), { device: D, kind: 'event' })
  for (const topic of [`cairn/v1/other/${D}/status`, `cairn/v1/demo/${D}/reply`, `cairn/v1/demo/${D}/task/update`, `cairn/v2/demo/${D}/status`, 'cairn/v1/demo/status'])
    t.equal(parseTopic(topic, 'demo'), null, topic)
})

t.test('presence key: a Will sorts after its connection’s online status; the next connection after both', async t => {
  const online = presenceKey({ since: 100, conn: 200, state: 'online', ts: 210 })
  const will = presenceKey({ since: 100, conn: 200, state: 'offline', ts: 200 })
  const next = presenceKey({ since: 100, conn: 5000, state: 'online', ts: 5010 })
  // the order the store applies: lexicographic, as SQL row values compare
  const cmp = (a: readonly number[], b: readonly number[]): number => {
    for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return Math.sign(a[i]! - b[i]!)
    return 0
  }
  t.equal(cmp(will, online), 1, 'the Will (older ts) after the online status')
  t.equal(cmp(next, will), 1)
  t.same(presenceKey({ state: 'online', ts: 7 }), [0, 0, 0, 7], 'an agent without since and conn: by ts')
})

t.test('metrics: what a Pi 5 sample gives, and null for what a board has not', async t => {
  const pi5 = {
    board: { kind: 'rpi5', model: 'Raspberry Pi 5 Model B Rev 1.0', arch: 'aarch64' },
    load: [1.12, 0.88, 0.71],
    cpu: { percent: 12.5 },
    memory: { totalBytes: 4, availableBytes: 3, usedPercent: 17.7 },
    disk: [
      { path: '/data', totalBytes: 10, freeBytes: 1, availableBytes: 1, usedPercent: 90 },
      { path: '/', totalBytes: 10, freeBytes: 8, availableBytes: 8, usedPercent: 21.6 },
    ],
    net: [
      { iface: 'eth0', rxBytes: 1, txBytes: 1, rxBytesPerS: 100, txBytesPerS: 10 },
      { iface: 'wlan0', rxBytes: 1, txBytes: 1, rxBytesPerS: 50 },
    ],
    thermal: [
      { zone: 'thermal_zone0', type: 'cpu-thermal', celsius: 58.05 },
      { zone: 'thermal_zone1', type: 'rp1', celsius: 61.5 },
    ],
    throttle: { source: 'vcgencmd', now: { underVoltage: true, throttled: false, armFreqCapped: false, softTempLimit: false } },
    fan: { rpm: 2871 },
    power: { source: 'pmic', rails: [], totalWatts: 4.2 },
  } as unknown as TelemetrySample
  t.same(metricsOf(pi5), {
    load1: 1.12,
    cpuPercent: 12.5,
    memPercent: 17.7,
    diskPercent: 21.6,
    tempC: 61.5,
    rxBps: 150,
    txBps: 10,
    throttled: 0,
    underVoltage: 1,
    fanRpm: 2871,
    powerW: 4.2,
    gpuPercent: null,
  })
  const bare = { board: { kind: 'generic', model: 'x', arch: 'x86_64' } } as unknown as TelemetrySample
  t.same(Object.values(metricsOf(bare)), Array(12).fill(null), 'a sample with nothing: all null')
})

t.test('--listen: host:port, and whether the host is loopback', async t => {
  t.same(parseListen('127.0.0.1:8080'), { host: '127.0.0.1', port: 8080, loopback: true })
  t.same(parseListen('[::1]:0'), { host: '::1', port: 0, loopback: true })
  t.same(parseListen('localhost:9000'), { host: 'localhost', port: 9000, loopback: true })
  for (const [s, host] of [
    ['0.0.0.0:8080', '0.0.0.0'],
    ['192.168.1.5:80', '192.168.1.5'],
    ['[::]:8080', '::'],
    ['example.org:80', 'example.org'],
  ] as const)
    t.match(parseListen(s), { host, loopback: false }, s)
  for (const bad of ['8080', '127.0.0.1', '127.0.0.1:99999', ':80']) t.throws(() => parseListen(bad), { code: 'BAD_REQUEST', message: /host:port/ }, bad)
})

t.test("an updater event puts the device's update phase on its row; an event of any other kind does not, whatever its name", async t => {
  const store = new SqliteFleetStore(tmp('cairn-fleet-'))
  t.teardown(() => store.close())
  const ingest = new FleetIngest({ store, fleet: 'demo', clock: systemClock, log: createLogger({ level: 'fatal' }) })
  const now = Date.now()
  const send = (kind: string, payload: object) => ingest.handle(`cairn/v1/demo/${D}/${kind}`, Buffer.from(JSON.stringify({ v: 1, device: D, ...payload })))
  t.equal(await send('status', { id: newId(now), fleet: 'demo', state: 'online', ts: now, since: now, conn: now, version: '1.0.0', board: 'rpi5', model: 'Pi 5', mqtt: 5, publicKey: 'x' }), 'stored')
  // constructor: a name Object.prototype has (a lookup that is not own would find it)
  for (const [i, kind] of ['constructor', 'ota.committed'].entries())
    t.equal(await send('event', { id: newId(now + i), ts: now + i, kind, data: { version: '2.0.0' } }), 'stored', `an event of kind ${kind}`)
  t.match(await store.getDevice(D), { ota: { phase: 'committed', version: '2.0.0' } }, 'ota.committed: committed, of 2.0.0')
  await send('event', { id: newId(now + 10), ts: now + 10, kind: 'ota.download', data: { version: { not: 'a string' } } })
  t.match(await store.getDevice(D), { ota: { phase: 'downloading', version: null } }, 'a version that is not text is not kept')
})

t.test('a batch that cannot be stored is written again message by message: one message that fails holds up only itself', async t => {
  // the real store, with one device whose writes fail (a message the store refuses)
  const POISON = 'p'.repeat(52)
  class FailingFor extends SqliteFleetStore {
    batches: number[] = []
    /** set: the whole store fails with this code (busy), not one message */
    wide: string | undefined
    override async ingest(items: Parameters<SqliteFleetStore['ingest']>[0]): Promise<boolean[]> {
      this.batches.push(items.length)
      if (this.wide) throw Object.assign(new Error('database is locked'), { code: this.wide })
      if (items.some(i => i.record.device === POISON)) throw Object.assign(new Error('CHECK constraint failed'), { code: 'SQLITE_CONSTRAINT_CHECK' })
      return super.ingest(items)
    }
  }
  const store = new FailingFor(tmp('cairn-fleet-'))
  t.teardown(() => store.close())
  const ingest = new FleetIngest({ store, fleet: 'demo', clock: systemClock, log: createLogger({ level: 'fatal' }) })
  const now = Date.now()
  const status = (device: string, i: number, attempt?: Attempt) =>
    ingest.handle(
      `cairn/v1/demo/${device}/status`,
      Buffer.from(
        JSON.stringify({ v: 1, id: newId(now + i), device, fleet: 'demo', state: 'online', ts: now, since: now, conn: now, version: '1.0.0', board: 'rpi5', model: 'Pi 5', mqtt: 5, publicKey: 'x' }),
      ),
      attempt,
    )
  const devices = ['f', 'g', POISON, 'h'].map(c => (c.length === 1 ? c.repeat(52) : c))
  // handed over in one turn, as messages read together are: one batch
  const results = await Promise.allSettled(devices.map((d, i) => status(d, i)))
  t.same(
    results.map(r => r.status),
    ['fulfilled', 'fulfilled', 'rejected', 'fulfilled'],
    'the poisoned one fails, the others are stored',
  )
  t.same(store.batches, [4, 1, 1, 1, 1], 'one batch of four, then each alone')
  for (const d of devices) t.equal((await store.getDevice(d)) !== undefined, d !== POISON, `${d.slice(0, 4)}…: ${d === POISON ? 'not stored' : 'stored'}`)

  // a message that depends on the registry waits on drained(): by then the failure is counted
  const attempt: Attempt = { failed: false }
  const failed = status(POISON, 9, attempt).catch(() => 'failed')
  await ingest.drained()
  t.equal(ingest.failing, 1, 'a failed write is counted before anyone waiting on drained() goes on')
  t.equal(await failed, 'failed')
  await status(POISON, 10, attempt).catch(() => undefined)
  t.equal(ingest.failing, 1, 'counted once across its retries')
  ingest.recovered(attempt)
  t.equal(ingest.failing, 0, 'until it is stored or given up')

  // the store failing as a whole (busy): the batch waits whole, not message by message
  store.batches = []
  store.wide = 'SQLITE_BUSY'
  const busy = await Promise.allSettled(['i', 'j', 'k'].map((c, i) => status(c.repeat(52), 20 + i)))
  t.same(
    busy.map(r => r.status),
    ['rejected', 'rejected', 'rejected'],
  )
  t.same(store.batches, [3], 'one try for the batch, none per message')
})
