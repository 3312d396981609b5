// Fleet service benchmark, run by bench/run.ts (`npm run bench`, BENCH_ONLY=fleet):
//  - ingest: telemetry messages through the service's ingest path (size cap, JSON,
//    schema check, up to 256 in flight written together: each is acknowledged once
//    stored) against better-sqlite3 inserting the same rows in one batched transaction;
//  - API: the device table query over HTTP with 10,000 devices (a filter, a sort, a page)
//    and a device's 24 h chart, p50/p95, against the same SQL run straight on the file;
//  - browser: Debian's Chromium from navigation to a rendered table of the 10,000, and to
//    a rendered 7-day chart (skipped, and saying so, without /usr/bin/chromium).

import { existsSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { loadavg } from 'node:os'
import Database from 'better-sqlite3'
import { ALERTS, DEFAULT_ALERT_RULES } from '../fleet/service/alerts.js'
import { ChangeFeed } from '../fleet/service/change-feed.js'
import { defaultConsoleDir } from '../fleet/service/fleet-service.js'
import { METRICS, type MetricValues } from '../fleet/service/fleet-store.js'
import { buildApi } from '../fleet/service/http-api.js'
import { FleetIngest, metricsOf } from '../fleet/service/ingest.js'
import { SqliteFleetStore } from '../fleet/service/sqlite-store.js'
import { systemClock } from '../protocol/clock.js'
import { newId } from '../protocol/ids.js'
import { createLogger } from '../protocol/log.js'
import type { Page } from 'puppeteer-core'
import { CLK_TCK, sample as procSample, sleep, spawnLimited, spawnSims, startMosquitto, terminate, type BenchKit } from './proofs.js'

const pct = (xs: number[], p: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((p / 100) * xs.length))]!
const CHROMIUM = '/usr/bin/chromium'

function sample(i: number) {
  return {
    board: { kind: 'rpi5' as const, model: 'Raspberry Pi 5 Model B Rev 1.0', arch: 'aarch64' },
    uptimeS: 1000 + i,
    load: [0.5, 0.4, 0.3] as [number, number, number],
    cpu: { percent: (i * 7) % 100 },
    memory: { totalBytes: 8_589_934_592, availableBytes: 4_294_967_296, usedPercent: 50 },
    disk: [{ path: '/', totalBytes: 63_000_000_000, freeBytes: 30_000_000_000, availableBytes: 27_000_000_000, usedPercent: 52 }],
    net: [{ iface: 'eth0', rxBytes: i * 1000, txBytes: i * 500, rxBytesPerS: 3000, txBytesPerS: 900 }],
    thermal: [{ zone: 'thermal_zone0', type: 'cpu-thermal', celsius: 40 + (i % 40) }],
    throttle: { source: 'vcgencmd' as const, raw: '0x0', now: { underVoltage: false, throttled: false } },
  }
}

/** A device id: 52 base32 characters, distinct per n (n < 32^4). */
function deviceId(n: number): string {
  const digits = 'abcdefghijklmnopqrstuvwxyz234567'
  let s = ''
  for (let i = 0; i < 4; i++, n = Math.floor(n / 32)) s = digits[n % 32]! + s
  return s.padStart(52, 'a')
}

// What the functions run inside the page use of the DOM (this file is type-checked for Node).
declare const document: { querySelector(s: string): { getAttribute(name: string): string | null; textContent: string | null } | null; querySelectorAll(s: string): { readonly length: number } }

export async function benchFleet(kit: BenchKit): Promise<Record<string, unknown>> {
  const log = createLogger({ level: 'error', out: { write: () => true } })
  const fleet = 'bench'
  const details: Record<string, unknown> = {}

  // ---- ingest: the service's path against one batched insert of the same rows, in
  // interleaved repetitions (each a fresh store), the median ratio reported: one pair on a
  // shared 2-core machine swings from 0.3x to 0.7x with what else runs
  const N = kit.quick ? 5_000 : 20_000
  const REPS = kit.quick ? 3 : 7
  const DEVICES = 1000
  const pairs: Array<{ ingest: number; raw: number }> = []
  for (let rep = 0; rep < REPS; rep++) pairs.push(await ingestPair(kit, log, fleet, N, DEVICES))
  const byRatio = [...pairs].sort((x, y) => x.ingest / x.raw - y.ingest / y.raw)
  const mid = byRatio[Math.floor(byRatio.length / 2)]!
  const ingestRate = mid.ingest
  const rawRate = mid.raw
  const ratios = byRatio.map(x => x.ingest / x.raw)
  kit.row({
    bench: 'fleet',
    figure: 'ingest: telemetry messages stored per second',
    value: ingestRate,
    unit: 'msg/s',
    baseline: rawRate,
    ratio: ingestRate / rawRate,
    goal: '>= 0.5x a batched better-sqlite3 insert',
    verdict: ingestRate / rawRate >= 0.5 ? 'pass' : 'FAIL',
    note: `median of ${REPS} interleaved pairs (ratios ${ratios.map(r => r.toFixed(2)).join(', ')}; load average ${loadavg()[0]!.toFixed(1)}); ${N} messages each, up to 256 in flight, stored together per turn of the event loop (each acknowledged once stored); baseline: the same rows parsed and inserted in one transaction`,
  })
  kit.log(`ingest ${ingestRate.toFixed(0)} msg/s, batched insert ${rawRate.toFixed(0)} rows/s`)
  // 10,000 devices at one sample every 10 s is 1,000 messages a second
  kit.row({
    bench: 'fleet',
    figure: 'ingest: CPU per 1,000 msg/s (10,000 devices every 10 s)',
    value: (1000 / ingestRate) * 100,
    unit: '% of a core',
    goal: '<= 50 %',
    verdict: (1000 / ingestRate) * 100 <= 50 ? 'pass' : 'FAIL',
    note: 'the ingest loop alone (its wall time, single-threaded), without MQTT; the whole service over MQTT is the "service: CPU" row',
  })

  // ---- the API over HTTP with 10,000 devices
  const api10k = kit.tmp('cairn-bench-fleet-10k-')
  const big = new SqliteFleetStore(api10k)
  const D = 10_000
  const now = Date.now()
  for (let d = 0; d < D; d++) {
    const id = deviceId(d)
    await big.applyStatus({
      device: id,
      id: `s${d}`,
      state: d % 17 === 0 ? 'offline' : 'online',
      key: [now, now, d % 17 === 0 ? 1 : 0, now],
      receivedAt: now,
      board: ['rpi4', 'rpi5', 'jetson-orin'][d % 3]!,
      model: 'm',
      version: d % 5 === 0 ? '1.1.0' : '1.0.0',
      problems: [],
    })
    const v = metricsOf(sample(d))
    await big.addTelemetry({ device: id, id: `t${d}`, ts: now - 1000, receivedAt: now, values: v })
  }
  // one device with 7 days of samples every 10 s, rolled up
  const busy = deviceId(1)
  for (let ts = now - 7 * 86_400_000; ts < now; ts += 10_000) await big.addTelemetry({ device: busy, id: `h${ts}`, ts, receivedAt: ts, values: metricsOf(sample(ts / 10_000)) })
  await big.maintain(now, { rawMs: 8 * 86_400_000, minuteMs: 30 * 86_400_000, hourMs: 365 * 86_400_000 })
  const app = await buildApi({
    store: big,
    fleet,
    clock: systemClock,
    stats: () => ({ stored: { status: 0, telemetry: 0, event: 0 }, refused: 0, transitions: 0 }),
    alertRules: DEFAULT_ALERT_RULES,
    changes: new ChangeFeed(),
    consoleDir: defaultConsoleDir(),
  })
  const base = await app.listen({ host: '127.0.0.1', port: 0 })
  const direct = new Database(join(api10k, 'fleet.db'), { readonly: true })
  const queries: Array<[string, string, () => unknown]> = [
    [
      'API: device table, 10,000 devices (state + board filter, sort by temperature, page 3)',
      '/api/v1/devices?state=online&board=rpi5&sort=tempC&order=desc&offset=100&limit=50',
      () => {
        const where = "WHERE state = 'online' AND board = 'rpi5'"
        direct.prepare(`SELECT COUNT(*) FROM devices ${where}`).get()
        return direct.prepare(`SELECT * FROM devices ${where} ORDER BY tempC IS NULL, tempC DESC, id ASC LIMIT 50 OFFSET 100`).all()
      },
    ],
    [
      'API: device table, 10,000 devices (a search matching a third, sort by last seen)',
      '/api/v1/devices?search=jetson&sort=lastSeen&order=desc&limit=50',
      () => {
        const like = '%jetson%'
        direct.prepare('SELECT COUNT(*) FROM devices WHERE (id LIKE ? OR board LIKE ? OR model LIKE ? OR version LIKE ? OR labels LIKE ?)').get(like, like, like, like, like)
        return direct
          .prepare('SELECT * FROM devices WHERE (id LIKE ? OR board LIKE ? OR model LIKE ? OR version LIKE ? OR labels LIKE ?) ORDER BY last_seen DESC, id LIMIT 50')
          .all(like, like, like, like, like)
      },
    ],
    [
      "API: a device's 24 h chart (1-minute rollups, 1,440 points)",
      `/api/v1/devices/${busy}/telemetry?from=${now - 86_400_000}&to=${now}`,
      () => direct.prepare(`SELECT ts, ${METRICS.join(', ')} FROM telemetry_1m WHERE device = ? AND ts >= ? AND ts <= ? ORDER BY ts DESC LIMIT 2000`).all(busy, now - 86_400_000, now),
    ],
    ['API: the overview (counts and the alert counts over 10,000 devices)', '/api/v1/fleet', () => ALERTS.length],
  ]
  const reps = kit.quick ? 50 : 200
  for (const [figure, path, sql] of queries) {
    for (let i = 0; i < 10; i++) await (await fetch(`${base}${path}`)).arrayBuffer()
    const http: number[] = []
    for (let i = 0; i < reps; i++) {
      const a = performance.now()
      const res = await fetch(`${base}${path}`)
      if (!res.ok) throw new Error(`${path}: ${res.status} ${await res.text()}`)
      await res.arrayBuffer()
      http.push(performance.now() - a)
    }
    const bare: number[] = []
    for (let i = 0; i < reps; i++) {
      const a = performance.now()
      sql()
      bare.push(performance.now() - a)
    }
    const p95 = pct(http, 95)
    kit.row({
      bench: 'fleet',
      figure: `${figure}: p95`,
      value: p95,
      unit: 'ms',
      baseline: path === '/api/v1/fleet' ? undefined : pct(bare, 95),
      ratio: path === '/api/v1/fleet' ? undefined : p95 / pct(bare, 95),
      goal: '<= 50 ms',
      verdict: p95 <= 50 ? 'pass' : 'FAIL',
      note: `p50 ${pct(http, 50).toFixed(2)} ms over HTTP on 127.0.0.1, ${reps} requests${path === '/api/v1/fleet' ? '' : `; baseline: the same SQL on the file, p50 ${pct(bare, 50).toFixed(2)} ms`}`,
    })
    details[figure] = { p50: pct(http, 50), p95, bareP50: pct(bare, 50), bareP95: pct(bare, 95) }
  }
  direct.close()

  // ---- the browser: navigation to a rendered table, and to a rendered 7-day chart
  if (!existsSync(CHROMIUM) || !existsSync(join(defaultConsoleDir(), 'index.html'))) {
    kit.log(`browser: SKIPPED (needs ${CHROMIUM} and the built console: npm run build)`)
  } else {
    const { default: puppeteer } = await import('puppeteer-core')
    const browser = await puppeteer.launch({ executablePath: CHROMIUM, headless: true, args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'] })
    try {
      const table: number[] = []
      const chart: number[] = []
      // a fresh page for each measurement, closed after it: a page's live stream holds one
      // of the browser's six connections to the host until the page is gone
      const fresh = async () => {
        const page = await browser.newPage()
        await page.setViewport({ width: 1400, height: 900 })
        return page
      }
      for (let i = 0; i < (kit.quick ? 3 : 7); i++) {
        let page = await fresh()
        let a = performance.now()
        await page.goto(`${base}/#/devices?sort=tempC&order=desc`)
        await page.waitForFunction(() => document.querySelectorAll('table.device-table tbody tr').length === 50)
        table.push(performance.now() - a)
        await page.close()
        page = await fresh()
        a = performance.now()
        await page.goto(`${base}/#/devices/${busy}`)
        await domClick(page, '[data-range="7 d"]')
        await page
          .waitForFunction(() => document.querySelector('[data-resolution="1m"]') !== null && Number(document.querySelector('.chart [data-points]')?.getAttribute('data-points')) >= 1400)
          .catch(async (err: unknown) => {
            const shown = await page.evaluate(() => document.querySelector('main')?.textContent?.slice(0, 600))
            throw new Error(`${String(err)}; the page shows: ${shown}`)
          })
        chart.push(performance.now() - a)
        await page.close()
      }
      for (const [figure, xs] of [
        ['browser: navigation to a rendered device table (10,000 devices, 50 a page)', table],
        ['browser: navigation to a rendered 7-day chart (10,080 minute rollups averaged to 1,500 points)', chart],
      ] as const) {
        kit.row({
          bench: 'fleet',
          figure,
          value: pct(xs, 50),
          unit: 'ms',
          goal: '<= 1000 ms',
          verdict: pct(xs, 50) <= 1000 ? 'pass' : 'FAIL',
          note: `median of ${xs.length}, headless Chromium on this machine`,
        })
      }
    } finally {
      await browser.close()
    }
  }
  await app.close()
  await big.close()
  details.service = await benchService(kit)
  return details
}

/** A click through the DOM (element.click()), not at the element's coordinates: a view
 * that is still loading moves its buttons, and a coordinate click can land beside them. */
async function domClick(page: Page, selector: string): Promise<void> {
  await page.waitForSelector(selector)
  await page.$eval(selector, el => (el as unknown as { click(): void }).click())
}

/** The whole service as an operator runs it: `cairn fleet serve` (a process of its own)
 * on a real Mosquitto, with N simulated devices (`cairn sim`, their own connections)
 * each sending a status and a telemetry sample every 10 s. Its CPU beside the broker's
 * for the same messages, what it stored against what the broker acknowledged to the
 * devices, and the bytes a device's raw samples take a day. */
async function benchService(kit: BenchKit): Promise<Record<string, unknown>> {
  const n = Number(process.env.BENCH_FLEET_DEVICES ?? (kit.quick ? 2000 : 10_000))
  const periodS = 10
  const windowS = kit.quick ? 30 : 60
  const perProc = 5000
  const nProcs = Math.ceil(n / perProc)
  const fleet = 'benchsvc'
  const { url, proc: mosq } = await startMosquitto(kit)
  const dir = kit.tmp('cairn-bench-fleetsvc-')
  const svc = spawnLimited(kit, [process.execPath, kit.bundle, 'fleet', 'serve', '--broker', url, '--fleet', fleet, '--state-dir', dir, '--listen', '127.0.0.1:0', '--log-level', 'warn'])
  const base = /(http:\/\/127\.0\.0\.1:\d+)/.exec(await svc.waitLine(l => l.includes('fleet service for'), 60_000))![1]!
  const ingest = async () => (await (await fetch(`${base}/api/v1/fleet`)).json()) as { counts: { online: number }; ingest: { stored: { telemetry: number }; refused: number } }
  kit.log(`  whole service: ${n} devices in ${nProcs} sim process(es), a sample every ${periodS} s…`)
  const sims = await spawnSims(kit, { n, perProc, rampTotal: 500, dir, url, fleet, args: ['--period', '3600', '--telemetry-period', String(periodS)] })
  const onlineBy = Date.now() + 120_000
  while ((await ingest()).counts.online < n) {
    if (Date.now() > onlineBy) throw new Error(`the service sees ${(await ingest()).counts.online} of ${n} devices online`)
    await sleep(1000)
  }
  // a whole period more, so every device is sending
  await sleep(periodS * 1000)
  const pids = [svc.child.pid!, mosq.child.pid!]
  const first = pids.map(procSample)
  const stored0 = (await ingest()).ingest.stored.telemetry
  const w0 = Date.now()
  await sleep(windowS * 1000)
  const last = pids.map(procSample)
  const stored1 = (await ingest()).ingest.stored.telemetry
  const dt = (Date.now() - w0) / 1000
  const [svcCpu, mosqCpu] = pids.map((_, i) => ((last[i]!.ticks - first[i]!.ticks) / CLK_TCK / dt) * 100) as [number, number]
  const rate = (stored1 - stored0) / dt
  // stop the devices (each waits for its PUBACKs), then see the service catch up
  await Promise.all(sims.map(s => terminate(s.c, 60_000)))
  const acked = sims.map(s => (JSON.parse(readFileSync(s.summaryFile, 'utf8')) as { totals: { telemetry: number } }).totals.telemetry).reduce((a, b) => a + b, 0)
  const caughtUpBy = Date.now() + 60_000
  let final = await ingest()
  while (final.ingest.stored.telemetry < acked && Date.now() < caughtUpBy) {
    await sleep(500)
    final = await ingest()
  }
  await terminate(svc, 30_000)
  // the raw samples' bytes (table and indexes), once the service has closed the file
  const db = new Database(join(dir, 'fleet.db'), { readonly: true })
  const bytes = (db.prepare("SELECT SUM(pgsize) AS b FROM dbstat WHERE name IN (SELECT name FROM sqlite_master WHERE tbl_name = 'telemetry_raw')").get() as { b: number }).b
  const rows = (db.prepare('SELECT COUNT(*) AS c FROM telemetry_raw').get() as { c: number }).c
  db.close()
  // rows, not the count of writes: a sample sent again is one row, and may not hide a lost one
  const lost = Math.max(0, acked - rows)
  const perDeviceDayMb = ((bytes / rows) * (86_400 / periodS)) / 1e6
  kit.row({
    bench: 'fleet',
    figure: `service: CPU with ${n.toLocaleString('en')} devices, a sample each every ${periodS} s`,
    value: svcCpu,
    unit: '% of a core',
    baseline: mosqCpu,
    ratio: svcCpu / mosqCpu,
    goal: '<= 50 %',
    verdict: n >= 10_000 ? (svcCpu <= 50 ? 'pass' : 'FAIL') : 'info',
    note: `\`cairn fleet serve\` storing ${rate.toFixed(0)} samples/s over ${dt.toFixed(0)} s; baseline: Mosquitto carrying the same messages, ${mosqCpu.toFixed(1)} %${n < 10_000 ? ' (a quick run: the goal is for 10,000)' : ''}`,
  })
  kit.row({
    bench: 'fleet',
    figure: 'service: samples lost (acknowledged to a device, never stored)',
    value: lost,
    unit: 'samples',
    goal: '0',
    verdict: lost === 0 ? 'pass' : 'FAIL',
    note: `${acked} acknowledged by the broker, ${rows} rows stored; ${final.ingest.refused} refused`,
  })
  kit.row({
    bench: 'fleet',
    figure: 'service: raw telemetry store growth per device per day',
    value: perDeviceDayMb,
    unit: 'MB',
    verdict: 'info',
    note: `${(bytes / rows).toFixed(0)} B a sample (table and indexes, ${rows} samples), one every ${periodS} s; kept 48 h by default, then 1-minute (1,440 a day) and 1-hour rollups`,
  })
  kit.log(`  service ${svcCpu.toFixed(1)} % CPU (mosquitto ${mosqCpu.toFixed(1)} %), ${rate.toFixed(0)} samples/s, ${lost} lost, ${(bytes / rows).toFixed(0)} B/sample`)
  await terminate(mosq, 10_000)
  return { devices: n, windowS: dt, svcCpu, mosqCpu, rate, acked, stored: final.ingest.stored.telemetry, bytesPerSample: bytes / rows }
}

/** One repetition of the ingest figure: the service's ingest path storing N telemetry
 * messages into a fresh store, then the same rows inserted by bare better-sqlite3. */
async function ingestPair(kit: BenchKit, log: ReturnType<typeof createLogger>, fleet: string, N: number, DEVICES: number): Promise<{ ingest: number; raw: number }> {
  const store = new SqliteFleetStore(kit.tmp('cairn-bench-fleet-'))
  const ingest = new FleetIngest({ store, fleet, clock: systemClock, log })
  const t0 = Date.now()
  for (let d = 0; d < DEVICES; d++) {
    const id = deviceId(d)
    const status = { v: 1, id: newId(t0), device: id, fleet, state: 'online', ts: t0, since: t0, conn: t0, version: '1.0.0', board: 'rpi5', model: 'Raspberry Pi 5', mqtt: 5, publicKey: 'x' }
    await ingest.handle(`cairn/v1/${fleet}/${id}/status`, Buffer.from(JSON.stringify(status)))
  }
  const messages = Array.from({ length: N }, (_, i) => {
    const id = deviceId(i % DEVICES)
    const ts = t0 + i
    return { topic: `cairn/v1/${fleet}/${id}/telemetry`, payload: Buffer.from(JSON.stringify({ v: 1, id: newId(ts), device: id, ts, sample: sample(i) })) }
  })
  // as the service takes them from its broker connection: up to 256 at once
  // (MqttConnectOptions.inFlight), each resolved once stored; what arrives together is
  // stored in one transaction
  let start = process.hrtime.bigint()
  let next = 0
  await Promise.all(
    Array.from({ length: 256 }, async () => {
      while (next < N) {
        const m = messages[next++]!
        await ingest.handle(m.topic, m.payload)
      }
    }),
  )
  const ingestS = Number(process.hrtime.bigint() - start) / 1e9
  if (ingest.stats.stored.telemetry !== N) throw new Error(`ingest stored ${ingest.stats.stored.telemetry} of ${N}`)
  ingest.close()
  await store.close()
  // the baseline: the same rows (values as the ingest extracts them), one transaction
  const raw = new Database(join(kit.tmp('cairn-bench-fleet-raw-'), 'raw.db'))
  raw.pragma('journal_mode = WAL')
  raw.pragma('synchronous = NORMAL')
  raw.exec(`CREATE TABLE t (device TEXT NOT NULL, ts INTEGER NOT NULL, id TEXT NOT NULL, ${METRICS.map(m => `${m} REAL`).join(', ')}, PRIMARY KEY (device, ts, id))`)
  const insert = raw.prepare(`INSERT INTO t VALUES (?, ?, ?, ${METRICS.map(() => '?').join(', ')})`)
  start = process.hrtime.bigint()
  const rows = messages.map(m => JSON.parse(m.payload.toString()) as { device: string; ts: number; id: string; sample: ReturnType<typeof sample> })
  raw.transaction(() => {
    for (const r of rows) {
      const v: MetricValues = metricsOf(r.sample)
      insert.run(r.device, r.ts, r.id, ...METRICS.map(k => v[k]))
    }
  })()
  const rawS = Number(process.hrtime.bigint() - start) / 1e9
  raw.close()
  return { ingest: N / ingestS, raw: N / rawS }
}
