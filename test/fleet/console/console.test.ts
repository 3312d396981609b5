// The fleet console in a real browser: Debian's headless Chromium (puppeteer-core pointed
// at /usr/bin/chromium; nothing is downloaded) on a real `fleet serve` (FleetService)
// that a real Mosquitto feeds from 200 `cairn sim` devices, one of them gone dark, and
// one device that sends markup in every field it controls. The overview's counts and
// alerts, the table's search, filter and sort, a device page whose charts hold the
// stored points, the live stream, and the markup shown as text and never run.
// Screenshots of each view go to $CAIRN_CONSOLE_SHOTS (docs/console/ in the docs) or
// this test's temp dir.

import t, { type Test } from 'tap'
import { existsSync, mkdirSync, readFileSync, statSync } from 'node:fs'
import { join } from 'node:path'
import mqtt from 'mqtt'
import puppeteer, { type Browser, type Page } from 'puppeteer-core'
import { FleetService, defaultConsoleDir } from '../../../fleet/service/fleet-service.js'
import { hashPassword, verifyPassword } from '../../../fleet/service/passwords.js'
import { buildApi } from '../../../fleet/service/http-api.js'
import { DEFAULT_ALERT_RULES } from '../../../fleet/service/alerts.js'
import { ChangeFeed } from '../../../fleet/service/change-feed.js'
import { SqliteFleetStore } from '../../../fleet/service/sqlite-store.js'
import { startSim } from '../../../fleet/sim/sim.js'
import { systemClock } from '../../../protocol/clock.js'
import { newId } from '../../../protocol/ids.js'
import { generateKeyPair, publicKeyPem } from '../../../protocol/keys.js'
import { createLogger } from '../../../protocol/log.js'
import { signCommand } from '../../../fleet/command-client.js'
import { startBroker } from '../../helpers/broker.js'
import { signedAttestation, signedReceipt } from '../../helpers/signed-fixtures.js'
import { operatorKey, startTestAgent, tmp, until } from '../../helpers/agent.js'
import { makeRepo, payload, serveRepo } from '../../helpers/release.js'
import { guardMs } from '../../helpers/patience.js'

// What the functions run inside the page use of the DOM (this file is type-checked for Node).
interface PageElement {
  readonly textContent: string | null
  getAttribute(name: string): string | null
}
declare const document: { querySelector(s: string): PageElement | null; querySelectorAll(s: string): { readonly length: number } }
declare const location: { readonly hash: string }
declare const window: { __xss?: string }

const CHROMIUM = process.env.CAIRN_CHROMIUM ?? '/usr/bin/chromium'
const SIM_DEVICES = 200
/** Markup in every field a device controls; none of it may run or become an element. */
const XSS = `<img src=x onerror="window.__xss='img'"><script>window.__xss='script'</script>`

t.test('the console in Chromium: overview, table, device page, live stream; device text shown as text', async t => {
  if (!existsSync(CHROMIUM)) return t.comment(`SKIPPED: no Chromium at ${CHROMIUM} (apt-get install chromium; CI installs it)`)
  t.ok(existsSync(join(defaultConsoleDir(), 'index.html')), `the console is built (${defaultConsoleDir()}; npm run build)`)

  const broker = await startBroker()
  t.teardown(named('the broker stop', () => broker.close()))
  const mqttVersion = broker.mqtt5 ? 5 : 4
  const fleet = 'console'
  // the validator whose attestations the service keeps
  const validator = generateKeyPair()
  // the release repository the service follows: 2.1.0 at 50 % (raised from 10 % six hours
  // ago and 25 % three hours ago, as the service saw it then), a beta at 5 %
  const { repo } = makeRepo()
  const releaseFiles = tmp('cairn-rel-files-')
  repo.addRelease([payload(releaseFiles, 'cairn-agent-arm64.tar', 2000), payload(releaseFiles, 'cairn-agent-x64.tar', 2000, 2)], { version: '2.1.0', channel: 'stable', rollout: 50, kind: 'agent' })
  repo.addRelease([payload(releaseFiles, 'cairn-agent.tar', 2000, 3)], { version: '2.2.0-beta.1', channel: 'beta', rollout: 5, kind: 'agent' })
  const releaseServer = await serveRepo(repo)
  t.teardown(named('the release server', () => releaseServer.close()))
  const store = new SqliteFleetStore(tmp('cairn-fleet-'))
  const rel = { kind: 'agent' as const, version: '2.1.0', channel: 'stable', targets: 2, arch: null, boards: null }
  const source = releaseServer.url
  await store.recordReleases(Date.now() - 6 * 3_600_000, { source, version: 1, releases: [{ ...rel, rollout: 10 }] })
  await store.recordReleases(Date.now() - 3 * 3_600_000, { source, version: 2, releases: [{ ...rel, rollout: 25 }] })
  const svc = new FleetService({
    brokerUrl: broker.url,
    mqtt: { protocolVersion: mqttVersion },
    fleet,
    store,
    releases: { url: releaseServer.url, root: join(repo.paths.metadata, '1.root.json'), metadataDir: join(tmp('cairn-rel-tuf-'), 'tuf'), everyMs: 3_600_000 },
    clock: systemClock,
    log: createLogger({ level: 'warn', out: { write: () => true } }),
    listen: { host: '127.0.0.1', port: 0 },
    shareGroup: null,
    instance: 'ui',
    validators: [validator.keyId],
    // a device dark for a second already alerts, so the test need not wait ten minutes
    alertRules: { ...DEFAULT_ALERT_RULES, offlineMs: 1000 },
  })
  const base = await svc.start()
  t.teardown(named('the fleet service stop', () => svc.stop()))

  const sim = startSim({
    devices: SIM_DEVICES,
    brokerUrl: broker.url,
    fleet,
    validators: [],
    mqtt: { protocolVersion: mqttVersion },
    periodS: 60,
    telemetryPeriodS: 3,
    rampPerS: 1000,
    misbehave: [
      { kind: 'offline', who: { index: 7 }, arg: 3600, at: 2 },
      { kind: 'hot', who: { index: 10 } },
      { kind: 'under-voltage', who: { index: 13 } },
      { kind: 'backlog', who: { index: 16 } },
    ],
  })
  t.teardown(named('the sim stop', () => sim.stop()))
  await sim.ready
  const dark = sim.devices[7]!.id

  // the device that sends markup: status (board, model, version), three telemetry samples, an event
  const key = generateKeyPair()
  const evil = key.keyId
  const pub = await mqtt.connectAsync(broker.url, { protocolVersion: mqttVersion })
  t.teardown(named('the publisher', () => pub.endAsync(true)))
  const now = Date.now()
  const topic = (k: string) => `cairn/v1/${fleet}/${evil}/${k}`
  const status = {
    v: 1,
    id: newId(now),
    device: evil,
    fleet,
    state: 'online',
    ts: now,
    since: now,
    conn: now,
    version: XSS,
    board: XSS,
    model: XSS,
    mqtt: mqttVersion,
    publicKey: publicKeyPem(key.publicKey),
  }
  await pub.publishAsync(topic('status'), JSON.stringify(status), { qos: 1, retain: true })
  const samples = [now - 20 * 60_000, now - 10 * 60_000, now - 60_000]
  for (const [i, ts] of samples.entries()) {
    const sample = {
      board: { kind: 'rpi5', model: 'x', arch: 'aarch64' },
      uptimeS: 100 + i,
      load: [0.5, 0.4, 0.3],
      thermal: [{ zone: 'z', type: 'cpu', celsius: 50 + i * 5 }],
      throttle: { source: 'vcgencmd', raw: i === 1 ? '0x4' : '0x0', now: { throttled: i === 1, underVoltage: false } },
    }
    await pub.publishAsync(topic('telemetry'), JSON.stringify({ v: 1, id: newId(ts), device: evil, ts, sample }), { qos: 1 })
  }
  await pub.publishAsync(topic('event'), JSON.stringify({ v: 1, id: newId(now), device: evil, ts: now, kind: 'agent.note', data: { text: XSS } }), { qos: 1 })
  // a device with a day behind it (a sample every 4.5 minutes over 21.5 hours, sent now with their own times),
  // an hour of it throttled: the device page's charts and the docs' screenshot
  const hist = generateKeyPair()
  const histTopic = (k: string) => `cairn/v1/${fleet}/${hist.keyId}/${k}`
  await pub.publishAsync(
    histTopic('status'),
    JSON.stringify({ ...status, id: newId(now), device: hist.keyId, version: '0.1.0', board: 'rpi5', model: 'Raspberry Pi 5 Model B Rev 1.0', publicKey: publicKeyPem(hist.publicKey) }),
    { qos: 1, retain: true },
  )
  const DAY_SAMPLES = 288
  for (let i = 0; i < DAY_SAMPLES; i++) {
    const ts = now - 60_000 - (DAY_SAMPLES - 1 - i) * 270_000
    const hour = (i * 4.5) / 60
    const throttled = hour >= 13 && hour < 14
    const wave = Math.sin((hour / 24) * 2 * Math.PI)
    const sample = {
      board: { kind: 'rpi5', model: 'Raspberry Pi 5 Model B Rev 1.0', arch: 'aarch64' },
      uptimeS: 86_400 + i * 300,
      load: [1.2 + wave, 1.1 + wave * 0.8, 1 + wave * 0.6].map(v => Math.max(0, Math.round(v * 100) / 100)),
      cpu: { percent: Math.round((35 + 25 * wave + (throttled ? 40 : 0)) * 10) / 10 },
      memory: { totalBytes: 8_589_934_592, availableBytes: 4_294_967_296, usedPercent: Math.round((48 + 6 * Math.cos(hour)) * 10) / 10 },
      disk: [{ path: '/', totalBytes: 63_000_000_000, freeBytes: 30_000_000_000, availableBytes: 27_000_000_000, usedPercent: Math.round((52 + i / 60) * 10) / 10 }],
      net: [{ iface: 'eth0', rxBytes: i * 1e8, txBytes: i * 4e7, rxBytesPerS: Math.round(300_000 + 250_000 * wave), txBytesPerS: Math.round(90_000 + 60_000 * wave) }],
      thermal: [{ zone: 'thermal_zone0', type: 'cpu-thermal', celsius: Math.round((58 + 9 * wave + (throttled ? 24 : 0)) * 10) / 10 }],
      throttle: { source: 'vcgencmd', raw: throttled ? '0x8' : '0x0', now: { underVoltage: false, armFreqCapped: false, throttled: false, softTempLimit: throttled } },
    }
    await pub.publishAsync(histTopic('telemetry'), JSON.stringify({ v: 1, id: newId(ts), device: hist.keyId, ts, sample }), { qos: 1 })
  }
  // its uptime over three epochs, attested by the pinned validator; two task receipts it
  // signed (one failed, its error message markup); and one forged receipt, refused
  for (const [epoch, score] of [
    [1, 982_000],
    [2, 1_000_000],
    [3, 874_000],
  ] as const)
    await pub.publishAsync(`cairn/v1/${fleet}/attestation/${validator.keyId}/${hist.keyId}`, JSON.stringify(signedAttestation(validator, fleet, hist.keyId, epoch, score)), { qos: 1 })
  const dispatcher = generateKeyPair()
  await pub.publishAsync(histTopic('task/receipt'), JSON.stringify(signedReceipt(hist, fleet, dispatcher, 'task-cache-0001')), { qos: 1 })
  await pub.publishAsync(histTopic('task/receipt'), JSON.stringify(signedReceipt(hist, fleet, dispatcher, 'task-cache-0002', hist, { code: 'INTERNAL', message: XSS })), { qos: 1 })
  await pub.publishAsync(histTopic('task/receipt'), JSON.stringify(signedReceipt(hist, fleet, dispatcher, 'task-cache-0003', dispatcher)), { qos: 1 })
  // a release on its way through the fleet, as the devices' updaters report it: 2.1.0
  // committed on twenty devices, downloading on six, rolled back on two, failed on one
  const rollout: Array<[string, Record<string, unknown>]> = [
    ...Array.from({ length: 20 }, () => ['ota.committed', { version: '2.1.0', from: '2.0.3', slot: 'b' }] as [string, Record<string, unknown>]),
    ...Array.from({ length: 6 }, () => ['ota.download', { version: '2.1.0', state: 'downloading', percent: 35 }] as [string, Record<string, unknown>]),
    ['ota.rolled-back', { version: '2.1.0', from: '2.0.3', reason: 'health-check-failed', slot: 'b' }],
    ['ota.rolled-back', { version: '2.1.0', from: '2.0.3', reason: 'crash-loop', slot: 'b' }],
    ['ota.failed', { version: '2.1.0', from: '2.0.3', step: 'staging', reason: 'stage-failed' }],
  ]
  for (const [i, [kind, data]] of rollout.entries()) {
    const id = sim.devices[20 + i]!.id
    await pub.publishAsync(`cairn/v1/${fleet}/${id}/event`, JSON.stringify({ v: 1, id: newId(now + i), device: id, ts: now - (rollout.length - i) * 60_000, kind, data }), { qos: 1 })
  }
  const api = async <T>(path: string): Promise<T> => (await (await fetch(`${base}${path}`)).json()) as T
  let seen = ''
  await until(
    async () => {
      const f = await api<{ counts: { devices: number; online: number } }>('/api/v1/fleet')
      const e = await api<{ items?: unknown[] }>(`/api/v1/devices/${evil}/events`)
      const s = await api<{ points?: unknown[] }>(`/api/v1/devices/${evil}/telemetry?resolution=raw`)
      seen = `${JSON.stringify(f.counts)}, ${e.items?.length} events, ${s.points?.length} samples; ${JSON.stringify(svc.ingest.stats)}`
      const h = await api<{ points?: unknown[] }>(`/api/v1/devices/${hist.keyId}/telemetry?resolution=raw&from=${now - 86_400_000}&to=${now}&limit=5000`)
      const r = await api<{ items?: unknown[]; refused?: unknown }>(`/api/v1/devices/${hist.keyId}/receipts`)
      const a = await api<{ items?: unknown[] }>(`/api/v1/devices/${hist.keyId}/attestations`)
      return (
        f.counts.devices === SIM_DEVICES + 2 &&
        f.counts.online === SIM_DEVICES + 1 &&
        e.items?.length === 1 &&
        s.points?.length === 3 &&
        h.points?.length === DAY_SAMPLES &&
        r.items?.length === 2 &&
        r.refused !== null &&
        a.items?.length === 3
      )
    },
    120_000,
    `${SIM_DEVICES + 2} devices stored, ${SIM_DEVICES + 1} online (one dark), the markup device's samples and event, a day of samples, receipts and attestations`,
  ).catch(err => {
    throw new Error(`${(err as Error).message}; last seen: ${seen}`)
  })
  // closed minutes rolled up (the service does this every minute)
  await svc.maintain()
  // an operator's label with markup too (label values are free text)
  const put = await fetch(`${base}/api/v1/devices/${evil}/labels`, { method: 'PUT', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ labels: { site: XSS } }) })
  t.equal(put.status, 200, 'a label value with markup is stored (it is text)')

  const page = await openPage(t)
  const pageErrors: string[] = []
  page.on('pageerror', err => pageErrors.push(String(err)))
  page.on('console', msg => {
    if (msg.type() === 'error') pageErrors.push(msg.text())
  })
  page.on('response', r => {
    if (r.status() >= 400) pageErrors.push(`${r.status()} ${r.url()}`)
  })
  const requests = new Set<string>()
  page.on('request', r => requests.add(new URL(r.url()).origin))
  const shots = process.env.CAIRN_CONSOLE_SHOTS ? process.env.CAIRN_CONSOLE_SHOTS : tmp('cairn-console-shots-')
  mkdirSync(shots, { recursive: true })
  const shot = async (name: string) => {
    const file = join(shots, `${name}.png`)
    await page.screenshot({ path: file as `${string}.png`, fullPage: true })
    t.ok(statSync(file).size > 10_000, `screenshot ${file}`)
  }
  const wait = { timeout: guardMs(60_000) }
  const text = (sel: string) => page.$eval(sel, el => el.textContent ?? '')

  // the overview
  await page.goto(`${base}/`, { waitUntil: 'domcontentloaded' })
  await page.waitForFunction((n: number) => document.querySelector('[data-count=devices] b')?.textContent === String(n), wait, SIM_DEVICES + 2)
  t.equal(await text('[data-count=online] b'), String(SIM_DEVICES + 1), 'the overview counts the online devices')
  t.equal(await text('[data-count=offline] b'), '1', 'and the dark one offline')
  // the dark one, a hot one, one short of power (a Pi's firmware flags: the hot one is also
  // at its soft temperature limit); three whose update of 2.1.0 was rolled back or failed;
  // the one with history, whose newest uptime score is 87.4 %; one whose outbox is backed up
  await page.waitForFunction(() => document.querySelector('[data-count=alerting] b')?.textContent === '8', wait)
  for (const [kind, n] of [
    ['offline', 1],
    ['hot', 1],
    ['throttled', 1],
    ['under-voltage', 1],
    ['disk', 0],
    ['update-failed', 3],
    ['low-score', 1],
    ['outbox-backlog', 1],
  ] as const)
    t.equal(await text(`[data-alert=${kind}] b`), String(n), `alert ${kind}: ${n}`)
  t.equal(await text('[data-count=updating] b'), '6', 'six devices updating (downloading 2.1.0)')
  await page.waitForSelector('[data-live=up]', wait)
  t.pass('the live stream is connected')
  const attention = await page.$$eval('table.attention a', as => as.map(a => a.getAttribute('title')))
  t.ok(attention.includes(dark) && attention.includes(sim.devices[10]!.id) && attention.includes(sim.devices[13]!.id), 'the three are listed as needing attention, with links to them')
  await shot('overview')

  // the offline alert links to the table filtered by it
  await domClick(page, '[data-alert=offline]')
  await page.waitForFunction(
    (id: string) => document.querySelectorAll('table.device-table tbody tr').length === 1 && document.querySelector('tbody tr')?.getAttribute('data-device') === id,
    wait,
    dark,
  )
  t.pass('alert offline: the table shows the dark device alone')

  // the device whose outbox is backed up: its page says how much waits, and since when
  await page.goto(`${base}/#/devices/${sim.devices[16]!.id}`)
  await page.waitForSelector('dd.outbox:not([data-queued=none])', wait)
  t.match(await text('dd.outbox'), /^\d+ waiting \([\d.]+ [kM]B\), the oldest \d+ (min|h) old$/, `its page shows the backlog: ${await text('dd.outbox')}`)

  // a Pi with a status LED and two lines a local client holds: its page shows them
  await page.goto(`${base}/#/devices/${sim.devices[4]!.id}`)
  await page.waitForSelector('.io .led[data-led=online]', wait)
  t.match(await text('.io .led'), /Status LED on BCM 17: online \(the agent's state\)/, 'its status LED, as its telemetry reports it')
  t.same(
    await page.$$eval('table.gpio tbody tr', trs => trs.map(tr => [...tr.querySelectorAll('td')].slice(0, 3).map(td => td.textContent))),
    [
      ['17', 'led', 'out'],
      ['22', 'local-api', 'out'],
      ['23', 'local-api', 'in'],
    ],
    'and the GPIO lines held, by pin',
  )

  // the table: 200+1 devices, 50 a page, sort by temperature (descending: two clicks)
  await page.goto(`${base}/#/devices`)
  await page.waitForFunction((n: number) => document.querySelector('.count')?.getAttribute('data-total') === String(n), wait, SIM_DEVICES + 2)
  t.equal((await page.$$('table.device-table tbody tr')).length, 50, 'a page of 50')
  await domClick(page, '[data-sort=tempC]')
  await page.waitForFunction(() => location.hash.includes('sort=tempC') && location.hash.includes('order=asc'), wait)
  await domClick(page, '[data-sort=tempC]')
  await page.waitForFunction(() => location.hash.includes('order=desc') && document.querySelector('th[aria-sort=descending] [data-sort=tempC]') !== null, wait)
  // The rows follow the header by a render (and a live reload may be on its way): wait for
  // a page of them in order, and say what was shown if none comes.
  const shownTemps = () => page.$$eval('table.device-table td.c-tempC', tds => tds.map(td => td.textContent ?? ''))
  const inOrder = () => {
    const cells = Array.from((document as unknown as { querySelectorAll(s: string): ArrayLike<PageElement> }).querySelectorAll('table.device-table td.c-tempC'))
    const v = cells.map(td => Number.parseFloat(td.textContent ?? ''))
    return v.length === 50 && v.every((x, i) => !Number.isNaN(x) && (i === 0 || x <= v[i - 1]!))
  }
  await page.waitForFunction(inOrder, wait).catch(async err => {
    throw new Error(`the table never showed 50 rows sorted by temperature; it shows ${JSON.stringify(await shownTemps())}: ${String(err)}`)
  })
  const temps = (await shownTemps()).map(x => Number.parseFloat(x))
  t.pass(`sorted by temperature, hottest first (${temps.slice(0, 3).join(', ')} … ${temps.at(-1)})`)
  await shot('devices')
  // filters: Jetson boards only, then a search
  await page.goto(`${base}/#/devices?board=jetson-orin`)
  await page.waitForFunction(() => document.querySelector('.count')?.getAttribute('data-total') === '66', wait)
  t.pass('board=jetson-orin: 66 devices (every third of the 200)')
  await page.goto(`${base}/#/devices`)
  await page.waitForSelector('table.device-table tbody tr', wait)
  await page.type('input[name=search]', dark.slice(0, 20))
  await page.waitForFunction((id: string) => location.hash.includes(`search=${id.slice(0, 20)}`) && document.querySelector('.count')?.getAttribute('data-total') === '1', wait, dark)
  t.pass('the search box narrows the table to one device, from the server')

  // a simulated device's page: its charts hold the points the store has for the hour
  const simId = sim.devices[1]!.id
  const before = (await api<{ points: unknown[] }>(`/api/v1/devices/${simId}/telemetry?resolution=raw`)).points.length
  await page.goto(`${base}/#/devices/${simId}`)
  await page.waitForSelector('.chart [data-points]', wait)
  const drawn = Number(await page.$eval('.chart [data-points]', el => el.getAttribute('data-points')))
  const after = (await api<{ points: unknown[] }>(`/api/v1/devices/${simId}/telemetry?resolution=raw`)).points.length
  t.ok(drawn >= before && drawn <= after && drawn > 0, `the chart draws the stored samples (${before} <= ${drawn} <= ${after})`)
  t.ok((await page.$$('.chart canvas')).length >= 3, 'three charts drawn (uPlot canvases): no network, GPU, power or fan chart for a board that reports none')
  await domClick(page, '[data-range="7 d"]')
  await page.waitForSelector('[data-resolution="1m"]', wait)
  t.pass('7 days: drawn from the 1-minute rollups')

  // the device with a day behind it: 24 h is drawn from the 1-minute rollups, every sample's minute
  await page.goto(`${base}/#/devices/${hist.keyId}`)
  await page.waitForSelector('[data-range="24 h"]', wait)
  await domClick(page, '[data-range="24 h"]')
  await page.waitForFunction(
    (n: number) => document.querySelector('[data-resolution="1m"]') !== null && document.querySelector('.chart [data-points]')?.getAttribute('data-points') === String(n),
    wait,
    DAY_SAMPLES,
  )
  t.pass(`24 h: its ${DAY_SAMPLES} samples, one a minute bucket, in the chart`)
  t.equal((await page.$$('.chart canvas')).length, 4, 'four charts: CPU/memory/disk, temperature, load, network')
  await page.waitForSelector('table.attestations tbody tr', wait)
  t.same(
    await page.$$eval('table.attestations tbody tr', trs => trs.map(tr => [tr.getAttribute('data-epoch'), tr.querySelector('.score')?.textContent])),
    [
      ['3', '87.4 %'],
      ['2', '100.0 %'],
      ['1', '98.2 %'],
    ],
    'the uptime score per epoch, from the pinned validator’s attestations, newest first',
  )
  t.same(
    await page.$$eval('table.receipts tbody tr', trs => trs.map(tr => tr.getAttribute('data-task'))).then(ids => ids.sort()),
    ['task-cache-0001', 'task-cache-0002'],
    'its two signed task receipts',
  )
  t.match(await text('table.receipts tr[data-task="task-cache-0002"] td.outcome'), /failed \(INTERNAL\)/)
  t.equal(await page.$eval('.proofs p.refused', el => el.getAttribute('data-refused')), '1', 'and the forged one, refused and counted, not shown')
  await shot('device')

  // the markup device: every field shows the markup as text, none of it ran
  await page.goto(`${base}/#/devices/${evil}`)
  await page.waitForFunction((n: number) => document.querySelector('.chart [data-points]')?.getAttribute('data-points') === String(n), wait, samples.length)
  t.pass(`its chart has exactly its ${samples.length} samples`)
  await page.waitForSelector('td.data', wait)
  t.ok((await text('dd.board')).includes(XSS), 'the board is shown as the text it is')
  t.ok((await text('dd.labels')).includes(XSS), 'the label too')
  t.ok((await text('td.data')).includes(JSON.stringify(XSS).slice(1, -1).slice(0, 20)), 'and the event data')
  await shot('device-markup')
  // 'onerror': no random base32 device id holds it (a three-letter search would, now and then)
  await page.goto(`${base}/#/devices?search=${encodeURIComponent('onerror')}`)
  await page.waitForFunction(() => document.querySelector('.count')?.getAttribute('data-total') === '1', wait)
  t.ok((await text('td.c-board')).includes(XSS), 'the table shows it as text too')
  t.equal(await page.evaluate(() => window.__xss), undefined, 'no injected script ran')
  t.equal(await page.evaluate(() => document.querySelectorAll('img[src=x], main script').length), 0, 'and no injected element exists')

  // the rollouts page: the release on its way, by phase, with the reasons
  await page.goto(`${base}/#/rollouts`)
  await page.waitForSelector('tr[data-release="2.1.0"]', wait)
  const phases = await page.$$eval('tr[data-release="2.1.0"] td[data-phase]', tds => Object.fromEntries(tds.map(td => [td.getAttribute('data-phase'), td.textContent])))
  t.match(phases, { committed: '20', downloading: '6', 'rolled-back': '2', failed: '1', staged: '' }, 'release 2.1.0: 20 committed, 6 downloading, 2 rolled back, 1 failed')
  const why = await text('tr[data-release="2.1.0"]')
  t.ok(
    ['health-check-failed ×1', 'crash-loop ×1', 'stage-failed ×1'].every(w => why.includes(w)),
    'and why: a failed health check, a crash loop, a failed staging',
  )
  // the releases the repository publishes: 2.1.0's rollout over time and its outcomes
  await page.waitForSelector('[data-repository=ok] ~ table.published tr[data-published="2.1.0"]', wait)
  const outcome = await page.$$eval('tr[data-published="2.1.0"] td[data-outcome]', tds => Object.fromEntries(tds.map(td => [td.getAttribute('data-outcome'), td.textContent])))
  t.same(outcome, { committed: '20', 'rolled-back': '2', failed: '1' }, 'published 2.1.0: 20 committed, 2 rolled back, 1 failed')
  t.equal(await page.$eval('tr[data-published="2.1.0"] td.rollout', el => el.getAttribute('data-rollout')), '50', 'at 50 %, as the verified metadata says')
  t.equal(await page.$eval('tr[data-published="2.2.0-beta.1"] td.rollout', el => el.getAttribute('data-rollout')), '5', 'the beta at 5 %')
  await domClick(page, 'tr[data-published="2.2.0-beta.1"]')
  await page.waitForSelector('[data-history="2.2.0-beta.1"] .outcomes [data-committed="0"][data-rollout="5"]', wait)
  await domClick(page, 'tr[data-published="2.1.0"]')
  await page.waitForSelector('[data-history="2.1.0"] .outcomes [data-committed="20"][data-rolled-back="2"][data-failed="1"][data-rollout="50"]', wait)
  t.pass('its chart draws the same totals and the rollout it reached')
  await shot('rollouts')

  // the validators page: the pinned one and what it attested
  await page.goto(`${base}/#/validators`)
  await page.waitForSelector(`tr[data-validator="${validator.keyId}"]`, wait)
  const cells = await page.$$eval(`tr[data-validator="${validator.keyId}"] td`, tds => tds.map(td => td.textContent ?? ''))
  t.match(cells, [validator.keyId, '1', '3', '3', /ago/, '95.2 %'], 'the pinned validator: 1 device, 3 attestations, newest epoch 3, mean 95.2 %')
  await shot('validators')

  // the live stream: a device going dark shows up without a reload
  await page.goto(`${base}/#/`)
  await page.waitForFunction(() => document.querySelector('[data-count=offline] b')?.textContent === '1', wait)
  await sim.devices[2]!.stop()
  await page.waitForFunction(() => document.querySelector('[data-count=offline] b')?.textContent === '2', wait)
  t.pass('a device stopped: the overview shows it offline without a reload (the live stream)')
  t.same(pageErrors, [], 'no script errors in the page, no request refused')
  t.same(
    [...requests].filter(o => o !== base),
    [],
    'nothing was fetched from another host',
  )
})

t.test('sign-in, then commands from the console: signed in the browser with a key it cannot export, answered by a real agent', async t => {
  if (!existsSync(CHROMIUM)) return t.comment(`SKIPPED: no Chromium at ${CHROMIUM} (apt-get install chromium; CI installs it)`)
  const broker = await startBroker()
  t.teardown(named('the broker stop', () => broker.close()))
  const mqttVersion = broker.mqtt5 ? 5 : 4
  const fleet = 'consolecmd'
  // a release the operator will halt
  const { repo } = makeRepo()
  repo.addRelease([payload(tmp('cairn-rel-files-'), 'cairn-agent.tar', 2000)], { version: '3.0.0', channel: 'stable', rollout: 20, kind: 'agent' })
  const releaseServer = await serveRepo(repo)
  t.teardown(named('the release server', () => releaseServer.close()))
  // an account: the service and its console ask for a sign-in
  const store = new SqliteFleetStore(tmp('cairn-fleet-'))
  const PASSWORD = 'correct horse battery'
  await store.putAccount({ name: 'otto', role: 'operator', passwordHash: await hashPassword(PASSWORD), created: Date.now() })
  const svc = new FleetService({
    brokerUrl: broker.url,
    mqtt: { protocolVersion: mqttVersion },
    fleet,
    store,
    clock: systemClock,
    log: createLogger({ level: 'warn', out: { write: () => true } }),
    listen: { host: '127.0.0.1', port: 0 },
    shareGroup: null,
    instance: 'ui',
    releases: { url: releaseServer.url, root: join(repo.paths.metadata, '1.root.json'), metadataDir: join(tmp('cairn-rel-tuf-'), 'tuf'), everyMs: 3_600_000 },
  })
  const base = await svc.start()
  t.teardown(named('the fleet service stop', () => svc.stop()))
  // the operator's key from `cairn keygen`, which the agent trusts
  const op = operatorKey(tmp())
  const agent = await startTestAgent({ url: broker.url, fleet, mqttVersion, operatorKeys: [op.pub] })
  t.teardown(named('the agent stop', () => agent.stop()))
  const device = agent.agent.deviceId
  // this test's own session, for what it asks the API directly
  const mine = await fetch(`${base}/api/v1/session`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ name: 'otto', password: PASSWORD }) })
  const auth = { cookie: mine.headers.get('set-cookie')!.split(';')[0]!, 'x-cairn-csrf': ((await mine.json()) as { csrf: string }).csrf }
  const get = async <T>(path: string) => (await (await fetch(`${base}${path}`, { headers: auth })).json()) as T
  await until(async () => (await get<{ state?: string }>(`/api/v1/devices/${device}`)).state === 'online', 30_000, 'the agent online')

  const page = await openPage(t)
  const pageErrors: string[] = []
  page.on('pageerror', err => pageErrors.push(String(err)))
  // everything the page sends: the private key must be in none of it
  const sent: string[] = []
  page.on('request', r => sent.push(`${r.url()} ${r.postData() ?? ''}`))
  page.on('dialog', d => void d.accept())
  const wait = { timeout: guardMs(60_000) }
  const text = (sel: string) => page.$eval(sel, el => el.textContent ?? '')
  const shot = async (name: string) => {
    const dir = process.env.CAIRN_CONSOLE_SHOTS ?? tmp('cairn-console-shots-')
    await page.screenshot({ path: join(dir, `${name}.png`) as `${string}.png`, fullPage: true })
  }
  const keyIdShown = () => page.$eval('[data-key-id]', el => el.getAttribute('data-key-id'))
  const newestRow = async (state: string) => {
    await page.waitForSelector(`table.command-log tbody tr:first-child[data-state=${state}]`, wait)
    return page.$eval('table.command-log tbody tr:first-child', el => ({ id: el.getAttribute('data-command'), text: el.textContent ?? '' }))
  }

  await page.goto(`${base}/#/devices/${device}`, { waitUntil: 'domcontentloaded' })
  await page.waitForSelector('[data-action=sign-in]', wait)
  t.pass('an account exists: the console asks for a sign-in')
  await page.type('[data-field=name]', 'otto')
  await page.type('[data-field=password]', 'not the password')
  await domClick(page, '[data-action=sign-in]')
  await page.waitForFunction(() => /wrong name or password/.test(document.querySelector('.error')?.textContent ?? ''), wait)
  t.pass('a wrong password: told so')
  await page.$eval('[data-field=password]', el => void ((el as unknown as { value: string }).value = ''))
  await page.type('[data-field=password]', PASSWORD)
  await domClick(page, '[data-action=sign-in]')
  await page.waitForSelector('[data-account=otto]', wait)
  t.pass('signed in as otto, on the device page asked for')
  t.notMatch(await page.evaluate('document.cookie'), /cairn_session/, 'the session cookie is HttpOnly: no script in the page can read it')
  await page.waitForSelector('[data-action=make-key]', wait)
  t.pass('no key in a new browser: it offers to make one or import one')
  const input = await page.waitForSelector('input[data-action=import-key]', wait)
  await input!.uploadFile(op.file)
  await page.waitForSelector('[data-key-id]', wait)
  t.equal(await keyIdShown(), op.keyId, 'the imported key file: its key id shown')
  const stored = (await page.evaluate(`new Promise((resolve, reject) => {
    const open = indexedDB.open('cairn-console')
    open.onerror = () => reject(open.error)
    open.onsuccess = () => {
      const get = open.result.transaction('keys').objectStore('keys').get('operator')
      get.onsuccess = async () => {
        const k = get.result.privateKey
        let exported = false
        try { await crypto.subtle.exportKey('pkcs8', k); exported = true } catch {}
        resolve({ extractable: k.extractable, exported, algorithm: k.algorithm.name })
      }
    }
  })`)) as { extractable: boolean; exported: boolean; algorithm: string }
  t.same(stored, { extractable: false, exported: false, algorithm: 'Ed25519' }, 'kept in IndexedDB as an Ed25519 key that cannot be exported')

  await domClick(page, '[data-action=send]')
  const ping = await newestRow('ok')
  t.match(ping.text, /ping.*ok.*"pong":true/, 'ping, signed in the browser: the agent answered')
  const row = await get<{ operator: string; name: string; state: string; by: string }>(`/api/v1/commands/${ping.id}`)
  t.match(row, { operator: op.keyId, name: 'ping', state: 'ok', by: 'otto' }, 'the audit log: sent by otto, signed by the imported key, answered')
  await shot('device-commands')

  // a key made in the browser: the device does not trust it yet, and says so, signed
  await domClick(page, '[data-action=forget-key]')
  await page.waitForSelector('[data-action=make-key]', wait)
  await domClick(page, '[data-action=make-key]')
  await page.waitForFunction((old: string) => document.querySelector('[data-key-id]')?.getAttribute('data-key-id') !== old, wait, op.keyId)
  const made = (await keyIdShown())!
  t.match(made, /^[a-z2-7]{52}$/, 'a key made here: its key id')
  await domClick(page, '[data-action=send]')
  const refused = await newestRow('error')
  t.match(refused.text, /UNTRUSTED_KEY/, 'the agent refused the key it does not trust, and the console shows its signed refusal')

  // trusted with operator-add, signed by the key the agent already trusts: now it obeys
  const add = signCommand({ fleet, device, name: 'operator-add', body: { publicKey: made }, key: op, ttlMs: 60_000 })
  const res = await fetch(`${base}/api/v1/devices/${device}/commands`, { method: 'POST', headers: { ...auth, 'content-type': 'application/json' }, body: JSON.stringify(add) })
  t.equal(res.status, 202)
  await until(async () => (await get<{ state: string }>(`/api/v1/commands/${add.id}`)).state === 'ok', 30_000, 'operator-add answered')
  await page.select('select[data-field=command]', 'logs')
  t.equal(await page.$eval('input[data-field=body]', el => (el as unknown as { value: string }).value), '{"lines": 100}', 'logs: its body filled in')
  await page.$eval('input[data-field=body]', el => void ((el as unknown as { value: string }).value = ''))
  await page.type('input[data-field=body]', '{"lines": 3}')
  await domClick(page, '[data-action=send]')
  // the newest row is the logs command once it is answered: not the refused ping, nor
  // the operator-add this test sent through the API meanwhile (also answered ok)
  await page.waitForFunction(
    (older: string[]) => {
      const tr = document.querySelector('table.command-log tbody tr:first-child')
      return tr !== null && !older.includes(tr.getAttribute('data-command') ?? '') && tr.getAttribute('data-state') === 'ok'
    },
    wait,
    [refused.id!, add.id],
  )
  const logs = await page.$eval('table.command-log tbody tr:first-child', el => el.textContent ?? '')
  t.match(logs, /logs.*ok.*"lines":\[/, 'logs, signed by the key made in the browser once the agent trusts it: answered')

  const pem = readFileSync(op.file, 'utf8')
  const secret = pem.split('\n').filter(l => l && !l.startsWith('-----'))[0]!
  t.ok(
    sent.every(s => !s.includes('PRIVATE KEY') && !s.includes(secret)),
    `the private key is in none of the ${sent.length} requests the page made`,
  )
  t.same(pageErrors, [], 'no script errors in the page')

  // the rollouts page: the fleet by version, and the brake, signed here with the same key
  await page.goto(`${base}/#/rollouts`)
  await page.waitForSelector('table.versions tr[data-version="0.0.0-test"]', wait)
  t.match(await text('table.versions tr[data-version="0.0.0-test"]'), /0\.0\.0-test\s*1\s*1/, 'the agent, by its version')
  await page.waitForSelector('[data-paused=no] [data-action=halt]', wait)
  await domClick(page, '[data-action=halt]')
  await page.waitForSelector('[data-paused=yes]', wait)
  t.match(await text('.pause'), new RegExp(`Updates are paused.*${made.slice(0, 12)}`), 'paused fleet-wide, signed by the key made in the browser (read back from the release topic)')
  await domClick(page, '[data-action=resume]')
  await page.waitForSelector('[data-paused=no] [data-action=halt]', wait)
  t.pass('and resumed')
  // halting one release: the pause at once, signed here; then its rollout cut to 0 by
  // the holder of the targets key, which the page ticks off once it reads it verified
  await page.waitForSelector('tr[data-published="3.0.0"] [data-action=halt-release]', wait)
  await domClick(page, 'tr[data-published="3.0.0"] [data-action=halt-release]')
  await page.waitForSelector('[data-paused=yes]', wait)
  await page.waitForSelector('[data-halt="3.0.0"][data-halted=no] li[data-step=pause].done', wait)
  t.match(
    await text('[data-halt="3.0.0"] li[data-step=rollout]'),
    /cairn release set-rollout --repo DIR --version 3\.0\.0 --pct 0 --channel stable --kind agent/,
    'and what the targets key holder runs',
  )
  repo.setRollout('3.0.0', 0)
  await svc.releases!.poll()
  await page.waitForSelector('[data-halt="3.0.0"][data-halted=yes] li[data-step=rollout].done', wait)
  t.pass('halted: paused, and 0 % in the signed metadata')
  t.equal(await page.$('tr[data-published="3.0.0"] [data-action=halt-release]'), null, 'nothing left to halt')
  await domClick(page, '[data-action=halt-done]')
  await domClick(page, '[data-action=resume]')
  await page.waitForSelector('[data-paused=no] [data-action=halt]', wait)
  const pauses = (await get<{ items: Array<{ name: string; device: string; operator: string; by: string }> }>('/api/v1/commands')).items.filter(c => c.name === 'pause-updates')
  t.match(
    pauses,
    [
      { device: '*', operator: made, by: 'otto' },
      { device: '*', operator: made, by: 'otto' },
      { device: '*', operator: made, by: 'otto' },
      { device: '*', operator: made, by: 'otto' },
    ],
    'all four (pause, resume, the halt, resume) in the audit log, sent by otto',
  )

  await domClick(page, '[data-action=sign-out]')
  await page.waitForSelector('[data-action=sign-in]', wait)
  const after = (await page.evaluate(`fetch('/api/v1/devices').then(r => r.status)`)) as number
  t.equal(after, 401, 'signed out: the sign-in form again, and the API answers 401')

  // signed in again, then the session ends elsewhere (a new password): the page, which
  // asks nothing more of the API while it waits on its live stream, is told by the stream
  await page.type('[data-field=name]', 'otto')
  await page.type('[data-field=password]', PASSWORD)
  await domClick(page, '[data-action=sign-in]')
  await page.waitForSelector('[data-account=otto]', wait)
  await page.waitForSelector('[data-live=up]', wait)
  await store.putAccount({ name: 'otto', role: 'operator', passwordHash: await hashPassword('another good password'), created: Date.now() })
  await page.waitForSelector('[data-action=sign-in]', wait)
  t.pass('a new password set elsewhere: the open page goes back to its sign-in form')
})

t.test('the accounts page: an admin adds an account, changes a role, sets a password, removes one; others do not see it', async t => {
  if (!existsSync(CHROMIUM)) return t.comment(`SKIPPED: no Chromium at ${CHROMIUM} (apt-get install chromium; CI installs it)`)
  const PASSWORD = 'correct horse battery'
  const store = new SqliteFleetStore(tmp('cairn-fleet-'))
  for (const [name, role] of [
    ['ada', 'admin'],
    ['vera', 'viewer'],
  ] as const)
    await store.putAccount({ name, role, passwordHash: await hashPassword(PASSWORD), created: Date.now() - 86_400_000 })
  const changes = new ChangeFeed()
  const app = await buildApi({
    store,
    fleet: 'accounts',
    clock: systemClock,
    stats: () => ({ stored: { status: 0, telemetry: 0, event: 0 }, refused: 0, transitions: 0 }),
    alertRules: DEFAULT_ALERT_RULES,
    auth: { always: false, secureCookies: false },
    consoleDir: defaultConsoleDir(),
    changes,
  })
  const base = await app.listen({ host: '127.0.0.1', port: 0 })
  t.teardown(
    named('the API stop', async () => {
      changes.close()
      await app.close()
      await store.close()
    }),
  )
  const page = await openPage(t)
  page.on('dialog', d => void d.accept())
  const wait = { timeout: guardMs(60_000) }
  const signIn = async (name: string) => {
    await page.waitForSelector('[data-action=sign-in]', wait)
    await page.type('[data-field=name]', name)
    await page.type('[data-field=password]', PASSWORD)
    await domClick(page, '[data-action=sign-in]')
    await page.waitForSelector(`[data-account=${name}]`, wait)
  }
  const doneSays = async (re: RegExp) => {
    await page.waitForFunction((src: string) => new RegExp(src).test(document.querySelector('[data-done]')?.textContent ?? ''), wait, re.source)
  }

  await page.goto(`${base}/#/accounts`, { waitUntil: 'domcontentloaded' })
  await signIn('ada')
  await page.waitForSelector('[data-account-row=vera]', wait)
  t.ok(await page.$('nav a[href="#/accounts"]'), 'an admin has the Accounts link')
  t.equal(await page.$('[data-account-row=ada] [data-action=remove-account]'), null, 'no way to remove or demote oneself here')

  await page.type('[data-field=new-name]', 'bob')
  await page.select('[data-field=new-role]', 'operator')
  await page.type('[data-field=new-account-password]', 'bobs long password')
  await domClick(page, '[data-action=add-account]')
  await page.waitForSelector('[data-account-row=bob]', wait)
  await page.waitForSelector('[data-live=up]', wait)
  const bob = await store.getAccount('bob')
  t.match(bob, { role: 'operator' }, 'bob added as an operator')
  t.ok(bob && (await verifyPassword('bobs long password', bob.passwordHash)), 'with the password typed')
  await page.screenshot({ path: join(process.env.CAIRN_CONSOLE_SHOTS ?? tmp('cairn-console-shots-'), 'accounts.png') as `${string}.png`, fullPage: true })

  await page.select('[data-account-row=vera] [data-field=role]', 'operator')
  await doneSays(/vera is now operator/)
  t.match(await store.getAccount('vera'), { role: 'operator' }, "vera's role changed")
  t.ok(await verifyPassword(PASSWORD, (await store.getAccount('vera'))!.passwordHash), 'and her password kept')

  t.ok(await page.$eval('[data-account-row=bob] [data-action=set-password]', el => (el as unknown as { disabled: boolean }).disabled), 'a password too short cannot be sent')
  await page.type('[data-account-row=bob] [data-field=new-password]', 'another long password')
  await domClick(page, '[data-account-row=bob] [data-action=set-password]')
  await doneSays(/new password for bob/)
  t.ok(await verifyPassword('another long password', (await store.getAccount('bob'))!.passwordHash), "bob's new password set")

  await domClick(page, '[data-account-row=vera] [data-action=remove-account]')
  await page.waitForFunction(() => document.querySelector('[data-account-row=vera]') === null, wait)
  t.equal(await store.getAccount('vera'), undefined, 'vera removed (after the confirmation)')

  // an operator: no Accounts link, and the page says it is for admins
  await domClick(page, '[data-action=sign-out]')
  await page.waitForSelector('[data-action=sign-in]', wait)
  await page.type('[data-field=name]', 'bob')
  await page.type('[data-field=password]', 'another long password')
  await domClick(page, '[data-action=sign-in]')
  await page.waitForSelector('[data-account=bob]', wait)
  t.equal(await page.$('nav a[href="#/accounts"]'), null, 'an operator has no Accounts link')
  await page.goto(`${base}/#/accounts`, { waitUntil: 'domcontentloaded' })
  await page.waitForFunction(() => /Accounts are for admins/.test(document.querySelector('main')?.textContent ?? ''), wait)
  t.pass('and #/accounts says it is for admins')
})

/** Debian's Chromium, headless, closed (or killed) when the test ends; a page on it. */
async function openPage(t: Test): Promise<Page> {
  const browser: Browser = await puppeteer.launch({
    executablePath: CHROMIUM,
    headless: true,
    // root in CI: Chromium's sandbox needs an unprivileged user
    args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--no-first-run', '--no-default-browser-check'],
    protocolTimeout: guardMs(120_000),
  })
  t.teardown(() => closeBrowser(browser))
  const page = await browser.newPage()
  await page.setViewport({ width: 1400, height: 900 })
  return page
}

/** A teardown that says so on stderr when it is still running after a minute, and
 * when it fails: a failure is told, not thrown, since tap runs no further teardown after
 * one throws, and a service or broker left running holds the test file open until its
 * timeout (CI's left-over-process check still sees anything left behind). */
function named(what: string, run: () => Promise<unknown>): () => Promise<void> {
  return async () => {
    const timer = setTimeout(() => process.stderr.write(`# teardown: ${what} still running after a minute\n`), 60_000)
    try {
      await run()
    } catch (err) {
      process.stderr.write(`# teardown: ${what} failed: ${String(err)}\n`)
    } finally {
      clearTimeout(timer)
    }
  }
}

/** Closes Chromium; one that does not close within a minute, or whose close fails (its
 * connection lost on a loaded machine), is killed, so a test's end never waits on it. */
async function closeBrowser(browser: Browser): Promise<void> {
  let timer: NodeJS.Timeout | undefined
  const stuck = new Promise<string>(r => (timer = setTimeout(() => r('did not close within a minute'), 60_000)))
  const how = await Promise.race([
    browser.close().then(
      () => 'closed',
      (err: unknown) => `close failed: ${String(err)}`,
    ),
    stuck,
  ])
  clearTimeout(timer)
  if (how !== 'closed') {
    process.stderr.write(`# Chromium ${how}: killed\n`)
    browser.process()?.kill('SIGKILL')
  }
}

/** A click through the DOM (element.click()), not at the element's coordinates: a view
 * that is still loading moves its buttons, and a coordinate click can land beside them. */
async function domClick(page: Page, selector: string): Promise<void> {
  await page.waitForSelector(selector)
  await page.$eval(selector, el => (el as unknown as { click(): void }).click())
}
