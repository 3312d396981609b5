// The fleet service's HTTP API, JSON under /api/v1 (fastify 5): thin routes over the
// store, each input described by a TypeBox schema that fastify checks before the route
// runs (unknown fields and wrong types are a 400, never dropped or coerced into
// something else), every query bounded (page sizes, time ranges), every error one shape:
// {"error": {"code", "message"}}. The OpenAPI document is served at /api/v1/openapi.json
// and kept in docs/api/fleet-openapi.json (a test checks they match).

import { existsSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import Fastify, { type FastifyInstance, type FastifyError, type FastifyReply } from 'fastify'
import swagger from '@fastify/swagger'
import { Type, type Static } from '@sinclair/typebox'
import type { Clock } from '../../protocol/clock.js'
import { ID_PATTERN } from '../../protocol/envelope.js'
import { isCairnError, type ErrorCode } from '../../protocol/errors.js'
import { ALERTS, ALERT_TEXT, alertsOf, type AlertRules } from './alerts.js'
import { installAuth } from './auth.js'
import type { ChangeFeed } from './change-feed.js'
import type { CommandDesk } from './commands.js'
import type { RepositoryState } from './releases.js'
import { OTA_SCAN_LIMIT, RELEASE_HISTORY, outcomeBucket, publishedReleases, rolloutSummary, type PauseState } from './rollouts.js'
import { METRICS, SORTS, resolutionFor, type DeviceRow, type FleetStore, type PageCursor } from './fleet-store.js'
import type { IngestStats } from './ingest.js'

const DeviceId = Type.String({ pattern: '^[a-z2-7]{52}$', description: 'device id' })
const Ms = Type.Integer({ minimum: 0, maximum: 8_640_000_000_000_000, description: 'ms since the Unix epoch' })
/** The longest range one query may span: a year and a month. */
const MAX_RANGE_MS = 400 * 86_400_000
const LabelKey = '^[a-z0-9][a-z0-9_.-]{0,31}$'

const ErrorBody = Type.Object({ error: Type.Object({ code: Type.String(), message: Type.String() }) }, { $id: 'Error' })

const DevicesQuery = Type.Object(
  {
    search: Type.Optional(Type.String({ maxLength: 100 })),
    state: Type.Optional(Type.Union([Type.Literal('online'), Type.Literal('offline')])),
    board: Type.Optional(Type.String({ maxLength: 64 })),
    version: Type.Optional(Type.String({ maxLength: 64 })),
    label: Type.Optional(Type.String({ maxLength: 200, description: '`key` or `key=value`' })),
    alert: Type.Optional(Type.Union([Type.Literal('any'), ...ALERTS.map(a => Type.Literal(a))], { description: 'devices with this alert now (GET /api/v1/fleet lists the rules)' })),
    sort: Type.Optional(Type.Union(SORTS.map(s => Type.Literal(s)))),
    order: Type.Optional(Type.Union([Type.Literal('asc'), Type.Literal('desc')])),
    offset: Type.Optional(Type.Integer({ minimum: 0, maximum: 10_000_000 })),
    limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 500 })),
  },
  { additionalProperties: false },
)
const Range = (maxLimit: number) =>
  Type.Object(
    {
      from: Type.Optional(Ms),
      to: Type.Optional(Ms),
      limit: Type.Optional(Type.Integer({ minimum: 1, maximum: maxLimit })),
    },
    { additionalProperties: false },
  )
const TelemetryQuery = Type.Composite(
  [
    Range(5000),
    Type.Object({
      resolution: Type.Optional(Type.Union([Type.Literal('auto'), Type.Literal('raw'), Type.Literal('1m'), Type.Literal('1h')])),
      points: Type.Optional(Type.Integer({ minimum: 10, maximum: 5000, description: 'at most this many points: averaged into equal buckets over the range (a chart asks for its width)' })),
    }),
  ],
  {
    additionalProperties: false,
  },
)
const IdParams = Type.Object({ id: DeviceId }, { additionalProperties: false })
const LabelsBody = Type.Object(
  {
    labels: Type.Record(Type.String({ pattern: LabelKey }), Type.String({ maxLength: 128 }), { maxProperties: 32, additionalProperties: false, description: `keys ${LabelKey}` }),
  },
  { additionalProperties: false },
)

/** The next page of a newest-first list: the previous page's `next`, which is its last
 * row's time (ms) and keys joined by dots; a time alone gives the rows before it. */
const Before = Type.String({
  pattern: '^[0-9]{1,16}([.][A-Za-z0-9_-]{1,64}){0,2}$',
  description: "the previous page's `next` (or a time in ms: the rows before it)",
})
const PageBefore = Type.Object(
  {
    before: Type.Optional(Before),
    limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 200 })),
  },
  { additionalProperties: false },
)
const EventsQuery = Type.Composite([Range(1000), Type.Object({ before: Type.Optional(Before) })], { additionalProperties: false })

const cursorOf = (s: string | undefined): { before?: PageCursor } => {
  if (s === undefined) return {}
  const [at, ...keys] = s.split('.')
  return { before: { at: Number(at), keys } }
}
/** The cursor of the page after this one: none when this one was not full. */
const nextOf = <T>(items: readonly T[], limit: number, cursor: (last: T) => Array<string | number>): string | null =>
  items.length === limit && items.length > 0 ? cursor(items[items.length - 1]!).join('.') : null
const OutcomesQuery = Type.Object(
  {
    kind: Type.Union([Type.Literal('agent'), Type.Literal('os')]),
    version: Type.String({ minLength: 1, maxLength: 64 }),
    from: Type.Optional(Ms),
    to: Type.Optional(Ms),
  },
  { additionalProperties: false },
)
const LimitOnly = Type.Object({ limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 200 })) }, { additionalProperties: false })
const CommandParams = Type.Object({ cmd: Type.String({ pattern: ID_PATTERN, description: 'command id' }) }, { additionalProperties: false })
// Not coerced or checked field by field here: the command is signed, so the service
// checks it whole as the device will (commands.ts), and a coerced field would only
// break its signature.
const SignedCommand = Type.Object({}, { additionalProperties: true, description: 'a signed command envelope (docs/protocol.md, "Commands"), signed by the operator' })

/** The error code of a status, where nothing more precise was said. */
const STATUS_CODES: Record<number, string> = {
  401: 'UNAUTHORIZED',
  403: 'FORBIDDEN',
  404: 'NOT_FOUND',
  413: 'TOO_LARGE',
  415: 'UNSUPPORTED_MEDIA_TYPE',
  429: 'RATE_LIMITED',
  500: 'INTERNAL',
  503: 'UNAVAILABLE',
}

/** HTTP statuses of the command desk's refusals (the rest are 400). */
const COMMAND_STATUS: Partial<Record<ErrorCode, number>> = { NOT_FOUND: 404, UNTRUSTED_KEY: 403, REPLAY: 409, UNAVAILABLE: 503 }

export interface ApiDeps {
  store: FleetStore
  fleet: string
  clock: Clock
  stats: () => IngestStats
  alertRules: AlertRules
  /** the live stream's source; none: /api/v1/stream is a 404 */
  changes?: ChangeFeed
  /** how often an open live stream checks that its session still stands (default 10 s) */
  streamRecheckMs?: number
  /** the built console (dist/console: index.html, app.js, app.css); none or missing: / says how to build it */
  consoleDir?: string
  /** sends signed commands; none: the command routes are 404s */
  commands?: CommandDesk
  /** the validators whose attestations are kept (key ids) */
  validators?: readonly string[]
  /** the signed pause-updates retained on the release topic, as last read */
  pause?: () => (PauseState & { expired: boolean }) | null
  /** the release repository followed (fleet serve --release-url), as last read */
  repository?: () => RepositoryState | null
  /** accounts: `always` beyond loopback (else once one exists); Secure cookies behind TLS */
  auth?: { always: boolean; secureCookies: boolean; sessionMs?: number }
  /** serve HTTPS with this certificate and key (PEM) */
  tls?: { cert: Buffer; key: Buffer }
  /** behind a reverse proxy: the client's address from X-Forwarded-For (sign-in limits) */
  trustProxy?: boolean
}

/** How many live streams one process serves at once (each is one open socket). */
const MAX_STREAMS = 64

/** What the console's page may load: its own files and nothing else (no CDN, no inline script). */
const CONSOLE_HEADERS = {
  'content-security-policy': "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  'cache-control': 'no-cache',
}
const CONSOLE_FILES: Record<string, string> = { 'app.js': 'text/javascript; charset=utf-8', 'app.css': 'text/css; charset=utf-8' }

export async function buildApi(d: ApiDeps): Promise<FastifyInstance> {
  const app = Fastify({
    logger: false,
    // close() ends every connection, busy ones too (a stream, a slow client): a stop is a stop
    forceCloseConnections: true,
    ...(d.tls ? { https: { cert: d.tls.cert, key: d.tls.key } } : {}),
    // only a proxy on this machine is believed about the client's address (X-Forwarded-For
    // from anyone else, or the part a client wrote itself, is not)
    ...(d.trustProxy ? { trustProxy: 'loopback' } : {}),
    bodyLimit: 64 * 1024,
    ajv: { customOptions: { removeAdditional: false, coerceTypes: true, useDefaults: false, allErrors: false } },
  })
  await app.register(swagger, {
    openapi: {
      openapi: '3.1.0',
      info: { title: 'Cairn fleet service', version: '1', description: "The fleet operator's API: `cairn fleet serve` (docs/console.md)" },
    },
  })
  app.addSchema(ErrorBody)
  // JSON only: a text body is a 415, not a string handed to a route that wants an object
  app.removeContentTypeParser('text/plain')

  app.setErrorHandler((err: FastifyError & { apiCode?: string }, _req, reply) => {
    // a refusal with the protocol's own code (a command's BAD_SIGNATURE, EXPIRED, ...)
    if (isCairnError(err)) {
      const status = COMMAND_STATUS[err.code] ?? (err.code === 'INTERNAL' ? 500 : 400)
      if (status === 500) app.log.error(err)
      return reply.status(status).send({ error: { code: err.code, message: status === 500 ? 'internal error (see the service log)' : err.message } })
    }
    // 4xx as given, 503 (too many live streams) as given, anything else an internal error
    const status = err.statusCode && ((err.statusCode >= 400 && err.statusCode < 500) || err.statusCode === 503) ? err.statusCode : 500
    const code = err.apiCode ?? (err.validation ? 'BAD_REQUEST' : (STATUS_CODES[status] ?? 'BAD_REQUEST'))
    const message = status === 500 ? 'internal error (see the service log)' : status === 415 ? 'the content-type must be application/json' : err.message
    if (status === 500) app.log.error(err)
    return reply.status(status).send({ error: { code, message } })
  })
  await installAuth(app, {
    store: d.store,
    clock: d.clock,
    always: d.auth?.always ?? false,
    secureCookies: d.auth?.secureCookies ?? false,
    ...(d.auth?.sessionMs ? { sessionMs: d.auth.sessionMs } : {}),
  })
  app.setNotFoundHandler((req, reply) => reply.status(404).send({ error: { code: 'NOT_FOUND', message: `no route ${req.method} ${req.url.split('?')[0]!.slice(0, 200)}` } }))

  const range = (q: { from?: number; to?: number }, defaultMs: number): { from: number; to: number } => {
    const to = q.to ?? d.clock.now()
    const from = q.from ?? to - defaultMs
    if (from > to) throw Object.assign(new Error('from is after to'), { statusCode: 400 })
    if (to - from > MAX_RANGE_MS) throw Object.assign(new Error(`a range spans at most ${MAX_RANGE_MS / 86_400_000} days`), { statusCode: 400 })
    return { from, to }
  }
  const notFound = (id: string) => Object.assign(new Error(`no device ${id} in fleet ${d.fleet}`), { statusCode: 404, code: 'NOT_FOUND' })

  const withAlerts = (row: DeviceRow, now: number) => ({ ...row, alerts: alertsOf(row, d.alertRules, now) })

  app.get('/api/v1/fleet', { schema: { summary: 'the fleet: counts, alerts by kind (and the rules), ingest figures' } }, async () => {
    const now = d.clock.now()
    return {
      fleet: d.fleet,
      now,
      counts: await d.store.counts(),
      alerts: await d.store.alertCounts(d.alertRules, now),
      alertRules: d.alertRules,
      alertText: ALERT_TEXT,
      ingest: d.stats(),
    }
  })

  app.get('/api/v1/devices', { schema: { summary: 'devices: search, filter, sort, page', querystring: DevicesQuery } }, async req => {
    const q = req.query as Static<typeof DevicesQuery>
    const limit = q.limit ?? 50
    const offset = q.offset ?? 0
    const now = d.clock.now()
    const page = await d.store.listDevices({
      ...(q.search ? { search: q.search } : {}),
      ...(q.state ? { state: q.state } : {}),
      ...(q.board ? { board: q.board } : {}),
      ...(q.version ? { version: q.version } : {}),
      ...(q.label ? { label: q.label } : {}),
      ...(q.alert ? { alert: { kind: q.alert, rules: d.alertRules, now } } : {}),
      sort: q.sort ?? 'id',
      order: q.order ?? 'asc',
      offset,
      limit,
    })
    return { total: page.total, offset, limit, items: page.items.map(row => withAlerts(row, now)) }
  })

  app.get('/api/v1/devices/:id', { schema: { summary: 'one device', params: IdParams } }, async req => {
    const { id } = req.params as Static<typeof IdParams>
    const device = await d.store.getDevice(id)
    if (!device) throw notFound(id)
    return withAlerts(device, d.clock.now())
  })

  app.get('/api/v1/devices/:id/presence', { schema: { summary: "a device's online/offline transitions", params: IdParams, querystring: Range(1000) } }, async req => {
    const { id } = req.params as Static<typeof IdParams>
    const q = req.query as Static<ReturnType<typeof Range>>
    if (!(await d.store.getDevice(id))) throw notFound(id)
    const { from, to } = range(q, 7 * 86_400_000)
    return { from, to, items: await d.store.transitions(id, from, to, q.limit ?? 200) }
  })

  app.get('/api/v1/devices/:id/telemetry', { schema: { summary: "a device's telemetry series", params: IdParams, querystring: TelemetryQuery } }, async req => {
    const { id } = req.params as Static<typeof IdParams>
    const q = req.query as Static<typeof TelemetryQuery>
    if (!(await d.store.getDevice(id))) throw notFound(id)
    const { from, to } = range(q, 3_600_000)
    const resolution = !q.resolution || q.resolution === 'auto' ? resolutionFor(to - from) : q.resolution
    const bucketMs = q.points !== undefined ? Math.ceil((to - from + 1) / q.points) : undefined
    return { from, to, resolution, ...(bucketMs !== undefined ? { bucketMs } : {}), metrics: METRICS, points: await d.store.series(id, resolution, from, to, q.limit ?? 2000, bucketMs) }
  })

  app.get('/api/v1/devices/:id/events', { schema: { summary: "a device's events, newest first", params: IdParams, querystring: EventsQuery } }, async req => {
    const { id } = req.params as Static<typeof IdParams>
    const q = req.query as Static<typeof EventsQuery>
    if (!(await d.store.getDevice(id))) throw notFound(id)
    const { from, to } = range(q, 7 * 86_400_000)
    const limit = q.limit ?? 100
    const items = await d.store.events({ device: id, from, to, ...cursorOf(q.before), limit })
    return { from, to, items, next: nextOf(items, limit, e => [e.ts, e.id]) }
  })

  app.get('/api/v1/validators', { schema: { summary: 'the pinned validators, and what each has attested here; attestations refused (unpinned, forged)' } }, async () => {
    const [stats, refused] = await Promise.all([d.store.validatorStats(), d.store.refusedTotal('attestation')])
    const pinned = d.validators ?? []
    const none = { devices: 0, attestations: 0, lastEpoch: null, lastAt: null, meanScore: null }
    return { items: pinned.map(v => ({ validator: v, ...(stats.find(s => s.validator === v) ?? none) })), refused }
  })

  app.get(
    '/api/v1/rollouts',
    {
      schema: {
        summary:
          "the fleet's agent versions, each release's devices by update phase (from their newest ota.* event), the pause, and (with --release-url) the releases the repository publishes with their rollout over time and their outcomes",
      },
    },
    async () => {
      const [latest, versions, osVersions, published, totals] = await Promise.all([
        d.store.otaLatest(OTA_SCAN_LIMIT),
        d.store.versionCounts(),
        d.store.osVersionCounts(),
        d.store.releases(RELEASE_HISTORY),
        d.store.outcomeTotals(),
      ])
      return {
        ...rolloutSummary(latest, versions),
        pause: d.pause?.() ?? null,
        repository: d.repository?.() ?? null,
        published: publishedReleases(published, totals, versions, osVersions),
      }
    },
  )

  app.get(
    '/api/v1/rollouts/outcomes',
    {
      schema: {
        summary:
          "one release's updates that ended (committed, rolled back, failed) per time bucket over a range (default the last 7 days), how many ended before it, and its rollout's changes per channel",
        querystring: OutcomesQuery,
      },
    },
    async req => {
      const q = req.query as Static<typeof OutcomesQuery>
      const { from, to } = range(q, 7 * 86_400_000)
      const bucketMs = outcomeBucket(to - from)
      const release = (await d.store.releases(RELEASE_HISTORY)).filter(r => r.kind === q.kind && r.version === q.version)
      const earlier = (await d.store.outcomeTotals({ before: from })).find(r => r.kind === q.kind && r.version === q.version)
      return {
        kind: q.kind,
        version: q.version,
        from,
        to,
        bucketMs,
        before: { committed: earlier?.committed ?? 0, rolledBack: earlier?.rolledBack ?? 0, failed: earlier?.failed ?? 0 },
        items: await d.store.outcomes({ kind: q.kind, version: q.version, from, to, bucketMs }),
        rollout: release.map(r => ({ channel: r.channel, history: r.history })),
      }
    },
  )

  app.get(
    '/api/v1/devices/:id/receipts',
    { schema: { summary: "a device's verified task receipts, newest first, and how many were refused", params: IdParams, querystring: PageBefore } },
    async req => {
      const { id } = req.params as Static<typeof IdParams>
      const q = req.query as Static<typeof PageBefore>
      if (!(await d.store.getDevice(id))) throw notFound(id)
      const limit = q.limit ?? 50
      const [items, refused] = await Promise.all([d.store.receipts({ device: id, ...cursorOf(q.before), limit }), d.store.refusals(id)])
      return { items, next: nextOf(items, limit, r => [r.finished, r.id]), refused: refused.find(r => r.kind === 'receipt') ?? null }
    },
  )

  app.get(
    '/api/v1/devices/:id/attestations',
    { schema: { summary: "a device's uptime score per epoch, from the pinned validators' verified attestations, and how many were refused", params: IdParams, querystring: LimitOnly } },
    async req => {
      const { id } = req.params as Static<typeof IdParams>
      const q = req.query as Static<typeof LimitOnly>
      if (!(await d.store.getDevice(id))) throw notFound(id)
      const [items, refused] = await Promise.all([d.store.attestations({ device: id, limit: q.limit ?? 50 }), d.store.refusals(id)])
      return { items, refused: refused.find(r => r.kind === 'attestation') ?? null }
    },
  )

  app.get('/api/v1/events', { schema: { summary: "the fleet's events, newest first", querystring: EventsQuery } }, async req => {
    const q = req.query as Static<typeof EventsQuery>
    const { from, to } = range(q, 86_400_000)
    const limit = q.limit ?? 100
    const items = await d.store.events({ from, to, ...cursorOf(q.before), limit })
    return { from, to, items, next: nextOf(items, limit, e => [e.ts, e.device, e.id]) }
  })

  app.put('/api/v1/devices/:id/labels', { schema: { summary: "set a device's labels (replaces them all)", params: IdParams, body: LabelsBody } }, async req => {
    const { id } = req.params as Static<typeof IdParams>
    const { labels } = req.body as Static<typeof LabelsBody>
    if (!(await d.store.setLabels(id, labels))) throw notFound(id)
    return { id, labels: (await d.store.getDevice(id))!.labels }
  })

  if (d.commands) {
    const desk = d.commands
    app.post(
      '/api/v1/devices/:id/commands',
      {
        schema: {
          summary: 'send a command signed by the operator (the service checks it as the device will, logs it, publishes it)',
          params: IdParams,
          body: SignedCommand,
        },
      },
      async (req, reply) => {
        const { id } = req.params as Static<typeof IdParams>
        // without accounts every caller is on loopback (serve-cli.ts refuses other addresses)
        return reply.status(202).send(await desk.send(req.body, id, req.who?.account ?? 'loopback'))
      },
    )
    app.post(
      '/api/v1/rollouts/pause',
      {
        schema: {
          summary: 'pause (or resume) updates fleet-wide: a pause-updates command signed by the operator (sub `*`), published retained on the release topic',
          body: SignedCommand,
        },
      },
      async (req, reply) => reply.status(202).send(await desk.pauseUpdates(req.body, req.who?.account ?? 'loopback')),
    )
    app.get('/api/v1/devices/:id/commands', { schema: { summary: "a device's commands and their verified replies, newest first", params: IdParams, querystring: PageBefore } }, async req => {
      const { id } = req.params as Static<typeof IdParams>
      const q = req.query as Static<typeof PageBefore>
      if (!(await d.store.getDevice(id))) throw notFound(id)
      const limit = q.limit ?? 50
      const items = await d.store.commands({ device: id, ...cursorOf(q.before), limit, now: d.clock.now() })
      return { items, next: nextOf(items, limit, c => [c.sentAt, c.id]) }
    })
    app.get('/api/v1/commands', { schema: { summary: 'the command audit log, newest first', querystring: PageBefore } }, async req => {
      const q = req.query as Static<typeof PageBefore>
      const limit = q.limit ?? 50
      const items = await d.store.commands({ ...cursorOf(q.before), limit, now: d.clock.now() })
      return { items, next: nextOf(items, limit, c => [c.sentAt, c.id]) }
    })
    app.get('/api/v1/commands/:cmd', { schema: { summary: 'one command, with the signed command and the signed reply (to check again)', params: CommandParams } }, async req => {
      const { cmd } = req.params as Static<typeof CommandParams>
      const row = await d.store.getCommand(cmd, d.clock.now())
      if (!row) throw Object.assign(new Error(`no command ${cmd}`), { statusCode: 404 })
      return row
    })
  }

  if (d.changes) {
    const changes = d.changes
    const streams = new Set<import('node:http').ServerResponse>()
    app.get('/api/v1/stream', { schema: { summary: 'the live stream (Server-Sent Events): a `change` event at most once a second naming the devices that changed' } }, async (req, reply) => {
      if (changes.size >= MAX_STREAMS) throw Object.assign(new Error(`at most ${MAX_STREAMS} live streams at once`), { statusCode: 503 })
      reply.hijack()
      const res = reply.raw
      res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache', 'x-content-type-options': 'nosniff', connection: 'keep-alive' })
      // the client reconnects by itself after 2 s when the stream drops (a restart)
      res.write('retry: 2000\n: cairn fleet stream\n\n')
      const unsubscribe = changes.subscribe(n => res.write(`event: change\ndata: ${JSON.stringify(n)}\n\n`))
      // a comment every 15 s keeps proxies from closing an idle stream
      const keepAlive = setInterval(() => res.write(': keep-alive\n\n'), 15_000)
      // The session was checked when the stream opened; a stream outlives requests, so
      // it asks again: signed out elsewhere, expired, a new password, the account gone, or
      // opened with no session before the first account was made; the stream says so
      // and ends (the page then signs in).
      const recheck = setInterval(() => {
        req
          .stillSignedIn()
          .then(ok => {
            if (ok || res.writableEnded) return
            res.end('event: signed-out\ndata: {}\n\n')
          })
          .catch(() => res.end())
      }, d.streamRecheckMs ?? 10_000)
      streams.add(res)
      req.raw.on('close', () => {
        streams.delete(res)
        clearInterval(keepAlive)
        clearInterval(recheck)
        unsubscribe()
      })
    })
    // an open stream would hold close() forever: end them first
    app.addHook('preClose', async () => {
      for (const res of streams) res.end()
    })
  }

  // The console: three files, read once, served with a policy that lets the page load
  // nothing but them (docs/console.md, "Security").
  const consoleFiles = d.consoleDir && existsSync(join(d.consoleDir, 'index.html')) ? loadConsole(d.consoleDir) : undefined
  const sendConsole = (reply: FastifyReply, file: string) => {
    if (!consoleFiles) {
      return reply
        .status(503)
        .type('text/plain; charset=utf-8')
        .send(`The console is not built here${d.consoleDir ? ` (no ${join(d.consoleDir, 'index.html')})` : ''}: run npm run build. The API is under /api/v1/.\n`)
    }
    const f = consoleFiles.get(file)!
    return reply.headers(CONSOLE_HEADERS).type(f.type).send(f.body)
  }
  // the page and its code are public (they hold no data): the page asks for a sign-in
  app.get('/', { config: { public: true }, schema: { hide: true } }, (_req, reply) => sendConsole(reply, 'index.html'))
  app.get('/console/:file', { config: { public: true }, schema: { hide: true } }, (req, reply) => {
    const { file } = req.params as { file: string }
    if (!Object.hasOwn(CONSOLE_FILES, file)) return reply.status(404).send({ error: { code: 'NOT_FOUND', message: `no console file ${file.slice(0, 100)}` } })
    return sendConsole(reply, file)
  })

  app.get('/api/v1/openapi.json', { config: { public: true }, schema: { hide: true } }, async () => app.swagger())
  await app.ready()
  return app
}

function loadConsole(dir: string): Map<string, { type: string; body: Buffer }> {
  const files = new Map<string, { type: string; body: Buffer }>()
  files.set('index.html', { type: 'text/html; charset=utf-8', body: readFileSync(join(dir, 'index.html')) })
  for (const [name, type] of Object.entries(CONSOLE_FILES)) files.set(name, { type, body: readFileSync(join(dir, name)) })
  return files
}
