// The fleet service's HTTP API on a real socket: every route refuses bad input with a 4xx
// and one error shape, and keeps serving; the OpenAPI document it serves is the one in
// docs/api/fleet-openapi.json (`npm run docs:gen` writes it).

import t from 'tap'
import { readFileSync } from 'node:fs'
import { buildApi } from '../../../fleet/service/http-api.js'
import { SqliteFleetStore } from '../../../fleet/service/sqlite-store.js'
import { DEFAULT_ALERT_RULES } from '../../../fleet/service/alerts.js'
import { ChangeFeed } from '../../../fleet/service/change-feed.js'
import { CommandDesk } from '../../../fleet/service/commands.js'
import { defaultConsoleDir } from '../../../fleet/service/fleet-service.js'
import { ManualClock } from '../../../protocol/clock.js'
import { createLogger } from '../../../protocol/log.js'
import { tmp } from '../../helpers/agent.js'

const T0 = Date.UTC(2026, 11, 7, 10, 0, 0)
const DEV = 'c'.repeat(52)

t.test('bad input: 4xx with a clear error, the service keeps running', async t => {
  const store = new SqliteFleetStore(tmp('cairn-fleet-'))
  await store.applyStatus({ device: DEV, id: 'on-1', state: 'online', key: [T0, T0, 0, T0], receivedAt: T0, board: 'rpi5', model: 'Raspberry Pi 5', version: '1.0.0', problems: [] })
  const app = await buildApi({
    store,
    fleet: 'demo',
    clock: new ManualClock(T0 + 1000),
    stats: () => ({ stored: { status: 1, telemetry: 0, event: 0 }, refused: 0, transitions: 1 }),
    alertRules: DEFAULT_ALERT_RULES,
  })
  const base = await app.listen({ host: '127.0.0.1', port: 0 })
  t.teardown(async () => {
    await app.close()
    await store.close()
  })
  const call = async (path: string, init?: RequestInit) => {
    const res = await fetch(`${base}${path}`, init)
    return { status: res.status, body: (await res.json()) as { error?: { code: string; message: string } } & Record<string, unknown> }
  }
  const cases: Array<[string, string, RequestInit | undefined, number, string, RegExp]> = [
    ['a page size too large', '/api/v1/devices?limit=100000', undefined, 400, 'BAD_REQUEST', /limit/],
    ['a negative offset', '/api/v1/devices?offset=-1', undefined, 400, 'BAD_REQUEST', /offset/],
    ['a wrong type', '/api/v1/devices?limit=ten', undefined, 400, 'BAD_REQUEST', /limit/],
    ['an unknown field', '/api/v1/devices?colour=red', undefined, 400, 'BAD_REQUEST', /additional/],
    ['an unknown sort', '/api/v1/devices?sort=password', undefined, 400, 'BAD_REQUEST', /sort/],
    ['a search too long', `/api/v1/devices?search=${'x'.repeat(101)}`, undefined, 400, 'BAD_REQUEST', /search/],
    ['a malformed device id', '/api/v1/devices/..%2F..%2Fetc', undefined, 400, 'BAD_REQUEST', /id/],
    ['an unknown device', `/api/v1/devices/${'d'.repeat(52)}`, undefined, 404, 'NOT_FOUND', /no device/],
    ['a range backwards', `/api/v1/devices/${DEV}/telemetry?from=${T0}&to=${T0 - 1}`, undefined, 400, 'BAD_REQUEST', /from is after to/],
    ['a range too long', `/api/v1/devices/${DEV}/telemetry?from=0&to=${T0}`, undefined, 400, 'BAD_REQUEST', /at most 400 days/],
    ['a resolution that is not one', `/api/v1/devices/${DEV}/telemetry?resolution=1s`, undefined, 400, 'BAD_REQUEST', /resolution/],
    ['an unknown route', '/api/v1/secrets', undefined, 404, 'NOT_FOUND', /no route GET \/api\/v1\/secrets/],
    ['malformed JSON', `/api/v1/devices/${DEV}/labels`, { method: 'PUT', headers: { 'content-type': 'application/json' }, body: '{"labels":' }, 400, 'BAD_REQUEST', /JSON/],
    [
      'a body too large',
      `/api/v1/devices/${DEV}/labels`,
      { method: 'PUT', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ labels: { a: 'x'.repeat(70_000) } }) },
      413,
      'TOO_LARGE',
      /too large/i,
    ],
    [
      'a label key with markup',
      `/api/v1/devices/${DEV}/labels`,
      { method: 'PUT', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ labels: { '<b>': 'x' } }) },
      400,
      'BAD_REQUEST',
      /labels/,
    ],
    [
      'too many labels',
      `/api/v1/devices/${DEV}/labels`,
      { method: 'PUT', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ labels: Object.fromEntries(Array.from({ length: 33 }, (_, i) => [`k${i}`, 'v'])) }) },
      400,
      'BAD_REQUEST',
      /labels/,
    ],
    ['a body of another type', `/api/v1/devices/${DEV}/labels`, { method: 'PUT', headers: { 'content-type': 'text/plain' }, body: 'site=x' }, 415, 'UNSUPPORTED_MEDIA_TYPE', /content-type/i],
    ['a page cursor that is no cursor', `/api/v1/devices/${DEV}/events?before=yesterday`, undefined, 400, 'BAD_REQUEST', /before/],
    ['a cursor with a key too many', `/api/v1/devices/${DEV}/events?before=${T0}.${DEV}.e0000001`, undefined, 400, 'BAD_REQUEST', /1 key\(s\) after its time, not 2/],
  ]
  for (const [what, path, init, status, code, message] of cases) {
    const r = await call(path, init)
    t.equal(r.status, status, `${what}: ${status}`)
    t.match(r.body.error, { code, message }, `${what}: ${r.body.error?.message}`)
  }
  const ok = await call(`/api/v1/devices/${DEV}/labels`, { method: 'PUT', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ labels: { site: '<script>alert(1)</script>' } }) })
  t.equal(ok.status, 200, 'after all that, a good request is served')
  t.same(ok.body.labels, { site: '<script>alert(1)</script>' }, 'a label value is text, kept as given (the renderer escapes it)')
  const list = await call('/api/v1/devices?label=site&limit=500')
  t.match(list.body, { total: 1, limit: 500, items: [{ id: DEV, state: 'online' }] })
  t.match((await call('/api/v1/fleet')).body, { fleet: 'demo', counts: { devices: 1, online: 1 } })
})

t.test("pages: each list's `next` gives the following page; rows of one millisecond neither skipped nor repeated", async t => {
  const store = new SqliteFleetStore(tmp('cairn-fleet-'))
  await store.applyStatus({ device: DEV, id: 'on-1', state: 'online', key: [T0, T0, 0, T0], receivedAt: T0, board: 'rpi5', model: 'Raspberry Pi 5', version: '1.0.0', problems: [] })
  const ids = Array.from({ length: 7 }, (_, i) => `e000000${i}`)
  for (const id of ids) await store.addEvent({ device: DEV, id, ts: T0 + (id < 'e0000003' ? 0 : 1), kind: 'k', data: '{}' })
  const app = await buildApi({
    store,
    fleet: 'demo',
    clock: new ManualClock(T0 + 1000),
    stats: () => ({ stored: { status: 0, telemetry: 0, event: 0 }, refused: 0, transitions: 0 }),
    alertRules: DEFAULT_ALERT_RULES,
  })
  const base = await app.listen({ host: '127.0.0.1', port: 0 })
  t.teardown(async () => {
    await app.close()
    await store.close()
  })
  for (const path of [`/api/v1/devices/${DEV}/events`, '/api/v1/events']) {
    const seen: string[] = []
    let next: string | null = null
    let pages = 0
    do {
      const res = await fetch(`${base}${path}?from=${T0}&limit=3${next ? `&before=${next}` : ''}`)
      const body = (await res.json()) as { items: Array<{ id: string }>; next: string | null }
      t.equal(res.status, 200)
      seen.push(...body.items.map(e => e.id))
      next = body.next
    } while (next && ++pages < 10)
    t.same(seen, [...ids].reverse(), `${path}: all 7 in three pages, newest first, none twice`)
  }
})

t.test('the OpenAPI document served is the one in docs/api/fleet-openapi.json', async t => {
  const store = new SqliteFleetStore(tmp('cairn-fleet-'))
  const app = await buildApi({
    store,
    fleet: 'demo',
    clock: new ManualClock(T0),
    stats: () => ({ stored: { status: 0, telemetry: 0, event: 0 }, refused: 0, transitions: 0 }),
    alertRules: DEFAULT_ALERT_RULES,
    changes: new ChangeFeed(),
    commands: new CommandDesk({ store, fleet: 'demo', clock: new ManualClock(T0), log: createLogger({ level: 'fatal' }), operators: null, publish: () => undefined, ready: () => true }),
  })
  const base = await app.listen({ host: '127.0.0.1', port: 0 })
  t.teardown(async () => {
    await app.close()
    await store.close()
  })
  const served = (await (await fetch(`${base}/api/v1/openapi.json`)).json()) as { paths: Record<string, unknown> }
  t.ok(served.paths['/api/v1/devices'] && served.paths['/api/v1/devices/{id}/telemetry'], 'it lists the routes')
  const docs = JSON.parse(readFileSync(new URL('../../../docs/api/fleet-openapi.json', import.meta.url), 'utf8')) as unknown
  t.same(served, docs, 'docs/api/fleet-openapi.json is up to date (npm run docs:gen)')
})

t.test('the console: its files with a policy that loads nothing else; a clear word when it is not built', async t => {
  const store = new SqliteFleetStore(tmp('cairn-fleet-'))
  t.teardown(() => store.close())
  const deps = { store, fleet: 'demo', clock: new ManualClock(T0), stats: () => ({ stored: { status: 0, telemetry: 0, event: 0 }, refused: 0, transitions: 0 }), alertRules: DEFAULT_ALERT_RULES }
  const built = await buildApi({ ...deps, consoleDir: defaultConsoleDir() })
  const base = await built.listen({ host: '127.0.0.1', port: 0 })
  t.teardown(() => built.close())
  const index = await fetch(`${base}/`)
  t.equal(index.status, 200, `/ is the console (built by npm run build into ${defaultConsoleDir()})`)
  t.match(index.headers.get('content-security-policy'), /default-src 'none'; script-src 'self'; style-src 'self'/, 'a policy: scripts and styles from this origin only, none inline')
  t.equal(index.headers.get('x-content-type-options'), 'nosniff')
  t.match(await index.text(), /<script type="module" src="\/console\/app.js">/)
  for (const [file, type] of [
    ['app.js', /javascript/],
    ['app.css', /css/],
  ] as const) {
    const r = await fetch(`${base}/console/${file}`)
    t.equal(r.status, 200, file)
    t.match(r.headers.get('content-type'), type)
  }
  for (const path of ['/console/..%2F..%2Fpackage.json', '/console/index.html.map', '/console/']) t.equal((await fetch(`${base}${path}`)).status, 404, `${path}: 404 (three files, no directory)`)

  const bare = await buildApi({ ...deps, consoleDir: tmp('cairn-no-console-') })
  const bareBase = await bare.listen({ host: '127.0.0.1', port: 0 })
  t.teardown(() => bare.close())
  const missing = await fetch(`${bareBase}/`)
  t.equal(missing.status, 503, 'not built: 503')
  t.match(await missing.text(), /npm run build/, 'and how to build it')
  t.equal((await fetch(`${bareBase}/api/v1/fleet`)).status, 200, 'the API serves without it')
})

t.test('the live stream: coalesced change notices over Server-Sent Events; closing the service ends it', async t => {
  const store = new SqliteFleetStore(tmp('cairn-fleet-'))
  t.teardown(() => store.close())
  const changes = new ChangeFeed(50)
  const app = await buildApi({
    store,
    fleet: 'demo',
    clock: new ManualClock(T0),
    stats: () => ({ stored: { status: 0, telemetry: 0, event: 0 }, refused: 0, transitions: 0 }),
    alertRules: DEFAULT_ALERT_RULES,
    changes,
  })
  const base = await app.listen({ host: '127.0.0.1', port: 0 })
  const res = await fetch(`${base}/api/v1/stream`)
  t.equal(res.status, 200)
  t.match(res.headers.get('content-type'), /^text\/event-stream/)
  const reader = res.body!.getReader()
  let text = ''
  const readUntil = async (re: RegExp) => {
    while (!re.test(text)) {
      const { value, done } = await reader.read()
      if (done) return false
      text += Buffer.from(value).toString('utf8')
    }
    return true
  }
  await readUntil(/cairn fleet stream/)
  t.equal(changes.size, 1, 'one subscriber')
  changes.notify('a'.repeat(52), 'telemetry')
  changes.notify('a'.repeat(52), 'telemetry')
  changes.notify('b'.repeat(52), 'status')
  t.ok(await readUntil(/event: change\ndata: (.+)\n\n/), 'a change event')
  const data = JSON.parse(/event: change\ndata: (.+)\n\n/.exec(text)![1]!) as { devices: string[]; more: number; presence: boolean }
  t.same(data, { devices: ['a'.repeat(52), 'b'.repeat(52)], more: 0, presence: true, releases: false }, 'three changes, two devices, one notice')
  for (let i = 0; i < 250; i++) changes.notify(String(i).padStart(52, 'c'), 'telemetry')
  text = ''
  await readUntil(/event: change\ndata: (.+)\n\n/)
  const big = JSON.parse(/data: (.+)\n\n/.exec(text)![1]!) as { devices: string[]; more: number }
  t.same([big.devices.length, big.more], [200, 50], 'at most 200 named, the rest counted')
  // at most 64 streams at once: the 65th is refused with a 503, the others keep theirs
  const more = await Promise.all(Array.from({ length: 63 }, () => fetch(`${base}/api/v1/stream`)))
  t.ok(
    more.every(r => r.status === 200),
    '63 more streams: 64 in all',
  )
  const refused = await fetch(`${base}/api/v1/stream`)
  t.equal(refused.status, 503, 'the 65th: 503')
  t.match(await refused.json(), { error: { code: 'UNAVAILABLE', message: /at most 64 live streams/ } })
  await app.close()
  t.equal(await readUntil(/never/), false, 'close() ends the stream')
  t.equal(changes.size, 0, 'and unsubscribes it')
})
