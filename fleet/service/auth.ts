// Accounts and sessions for the fleet service's API and console (docs/console.md,
// "Accounts"). Sign-in is a password checked against a scrypt hash (passwords.ts); a
// session is a random 256-bit secret in an HttpOnly, SameSite=Strict cookie (Secure
// whenever TLS is in front), kept in the store only as its SHA-256, so every process
// on the store honours it and a copy of the store holds no usable session. Every change
// (POST, PUT, DELETE) also carries the session's CSRF token in a header, which a page
// from another origin cannot read. Roles: viewer (look), operator (also commands and
// labels), admin (also accounts). Failed sign-ins slow the account down (a wait that
// doubles from the fifth failure in a row, up to 15 minutes) and each address is
// limited to 10 tries in 5 minutes (@fastify/rate-limit).
//
// When it applies: always when the service listens beyond loopback (serve-cli.ts will
// not start so without an account), and on loopback as soon as one account exists.
// With none on loopback, the API is open to this machine's users, as before accounts.
//
// The CSRF check is written here rather than with @fastify/csrf-protection: that plugin
// keeps its secret in a cookie or a per-process session, and ours lives with the
// session in the shared store, where a second process can check it.

import { createHash, randomBytes, timingSafeEqual } from 'node:crypto'
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import cookie from '@fastify/cookie'
import rateLimit from '@fastify/rate-limit'
import { Type, type Static } from '@sinclair/typebox'
import type { Clock } from '../../protocol/clock.js'
import { ACCOUNT_NAME, ROLES, type FleetStore, type Role } from './fleet-store.js'
import { burnPasswordTime, hashPassword, verifyPassword } from './passwords.js'

const SESSION_COOKIE = 'cairn_session'
const CSRF_HEADER = 'x-cairn-csrf'
const DEFAULT_SESSION_MS = 12 * 3_600_000
const FREE_FAILURES = 4
const MAX_LOCK_MS = 15 * 60_000
/** Names without an account whose failures are remembered (in this process) */
const MAX_STRANGERS = 10_000

export interface AuthOptions {
  store: FleetStore
  clock: Clock
  /** a session for every call, accounts or not (the service listens beyond loopback) */
  always: boolean
  /** cookies marked Secure: TLS here, or at a reverse proxy */
  secureCookies: boolean
  sessionMs?: number
}

interface Who {
  account: string
  role: Role
}

declare module 'fastify' {
  interface FastifyRequest {
    /** the signed-in account; null where accounts do not apply (loopback, none made) */
    who: Who | null
    /** Whether the session this request came with still stands (not signed out, expired,
     * ended by a new password or a removed account): a long-lived response (the live
     * stream) asks again from time to time. True where no session applies. */
    stillSignedIn: () => Promise<boolean>
  }
  interface FastifyContextConfig {
    /** no session needed (sign-in, the console's files) */
    public?: boolean
    /** the least role a route needs; default viewer for reads, operator for changes */
    role?: Role
  }
}

const rank = (r: Role) => ROLES.indexOf(r)
const httpError = (statusCode: number, apiCode: string, message: string) => Object.assign(new Error(message), { statusCode, apiCode })
const sha256 = (s: string) => createHash('sha256').update(s).digest('base64url')
const READS = new Set(['GET', 'HEAD', 'OPTIONS'])

const Login = Type.Object({ name: Type.String({ pattern: ACCOUNT_NAME }), password: Type.String({ minLength: 1, maxLength: 1024 }) }, { additionalProperties: false })
const AccountParams = Type.Object({ name: Type.String({ pattern: ACCOUNT_NAME }) }, { additionalProperties: false })
const AccountBody = Type.Object(
  {
    role: Type.Optional(
      Type.Union(
        ROLES.map(r => Type.Literal(r)),
        { description: 'needed for a new account' },
      ),
    ),
    password: Type.Optional(Type.String({ maxLength: 1024, description: 'needed for a new account; a new one ends its sessions' })),
  },
  { additionalProperties: false },
)

export async function installAuth(app: FastifyInstance, o: AuthOptions): Promise<void> {
  const sessionMs = o.sessionMs ?? DEFAULT_SESSION_MS
  await app.register(cookie)
  await app.register(rateLimit, { global: false })
  app.decorateRequest('who', null)
  app.decorateRequest('stillSignedIn', async () => true)

  const required = async () => o.always || (await o.store.accountCount()) > 0
  /** names being checked now, and failures of names that have no account */
  const checking = new Set<string>()
  const strangers = new Map<string, { failed: number; lockedUntil: number }>()
  const lockUntil = (now: number) => (failed: number) => (failed > FREE_FAILURES ? now + Math.min(MAX_LOCK_MS, 1000 * 2 ** (failed - FREE_FAILURES - 1)) : 0)
  const session = async (req: FastifyRequest) => {
    const secret = req.cookies[SESSION_COOKIE]
    return secret && secret.length <= 100 ? o.store.getSession(sha256(secret), o.clock.now()) : undefined
  }

  app.addHook('onRequest', async req => {
    const config = req.routeOptions.config
    if (config.public) return
    if (!(await required())) {
      // no account yet: the API is open on loopback, but not the making of accounts (a
      // local user or a page rebinding a name to 127.0.0.1 would make the first admin)
      if (config.role === 'admin') throw httpError(403, 'FORBIDDEN', 'no account exists yet: make the first with cairn fleet account add NAME --role admin --state-dir DIR')
      // a stream opened now ends once accounts apply: it came with no session
      req.stillSignedIn = async () => !(await required())
      return
    }
    const s = await session(req)
    if (!s) throw httpError(401, 'UNAUTHORIZED', 'sign in first (POST /api/v1/session)')
    const need = config.role ?? (READS.has(req.method) ? 'viewer' : 'operator')
    if (rank(s.role) < rank(need)) throw httpError(403, 'FORBIDDEN', `this needs the ${need} role; ${s.account} is a ${s.role}`)
    if (!READS.has(req.method)) {
      const sent = req.headers[CSRF_HEADER]
      const a = Buffer.from(typeof sent === 'string' ? sent : '')
      const b = Buffer.from(s.csrf)
      if (a.length !== b.length || !timingSafeEqual(a, b)) throw httpError(403, 'CSRF', `a change needs the session's ${CSRF_HEADER} header (GET /api/v1/session gives it)`)
    }
    req.who = { account: s.account, role: s.role }
    req.stillSignedIn = async () => {
      const now = await session(req)
      return now !== undefined && now.account === s.account && rank(now.role) >= rank(need)
    }
  })

  const setCookie = (reply: FastifyReply, value: string, maxAgeS: number) =>
    reply.setCookie(SESSION_COOKIE, value, { httpOnly: true, sameSite: 'strict', path: '/', secure: o.secureCookies, maxAge: maxAgeS })

  app.get('/api/v1/session', { config: { public: true }, schema: { summary: 'whether accounts apply, and who is signed in (with the CSRF token for changes)' } }, async req => {
    const auth = await required()
    const s = auth ? await session(req) : undefined
    return { auth, ...(s ? { account: { name: s.account, role: s.role }, csrf: s.csrf, expires: s.expires } : {}) }
  })

  app.post(
    '/api/v1/session',
    {
      config: { public: true, rateLimit: { max: 10, timeWindow: 5 * 60_000 } },
      schema: { summary: 'sign in: sets the session cookie; answers with the CSRF token', body: Login },
    },
    async (req, reply) => {
      const { name, password } = req.body as Static<typeof Login>
      const now = o.clock.now()
      const wait = (until: number) => {
        const waitS = Math.ceil((until - now) / 1000)
        reply.header('retry-after', String(waitS))
        return httpError(429, 'RATE_LIMITED', `too many failed sign-ins for ${name}: try again in ${waitS} s`)
      }
      // one check of a name at a time: parallel guesses would each be checked before the
      // first failure's wait was set
      if (checking.has(name)) throw wait(now + 1000)
      checking.add(name)
      let role: Role
      try {
        const account = await o.store.getAccount(name)
        // a name with no account waits as an account would, so neither the answer nor its
        // timing tells which names exist
        const lockedUntil = account ? account.lockedUntil : (strangers.get(name)?.lockedUntil ?? 0)
        if (lockedUntil > now) throw wait(lockedUntil)
        if (!account) {
          await burnPasswordTime(password)
          if (strangers.size >= MAX_STRANGERS) strangers.clear()
          const failed = (strangers.get(name)?.failed ?? 0) + 1
          strangers.set(name, { failed, lockedUntil: lockUntil(now)(failed) })
          throw httpError(401, 'UNAUTHORIZED', 'wrong name or password')
        }
        if (!(await verifyPassword(password, account.passwordHash))) {
          await o.store.loginFailed(name, lockUntil(now))
          throw httpError(401, 'UNAUTHORIZED', 'wrong name or password')
        }
        role = account.role
      } finally {
        checking.delete(name)
      }
      const secret = randomBytes(32).toString('base64url')
      const csrf = randomBytes(24).toString('base64url')
      const expires = now + sessionMs
      await o.store.addSession({ idHash: sha256(secret), account: name, csrf, created: now, expires })
      setCookie(reply, secret, Math.floor(sessionMs / 1000))
      return { auth: true, account: { name, role }, csrf, expires }
    },
  )

  app.delete('/api/v1/session', { config: { public: true }, schema: { summary: 'sign out: ends the session' } }, async (req, reply) => {
    const secret = req.cookies[SESSION_COOKIE]
    if (secret && secret.length <= 100) await o.store.deleteSession(sha256(secret))
    setCookie(reply, '', 0)
    return { auth: await required() }
  })

  app.get('/api/v1/accounts', { config: { role: 'admin' }, schema: { summary: 'the accounts (admin)' } }, async () => ({ items: await o.store.listAccounts() }))
  app.put(
    '/api/v1/accounts/:name',
    {
      config: { role: 'admin' },
      schema: {
        summary:
          "add an account (role and password; with `If-None-Match: *` only if none of that name exists, else 412), or change one's role or password, only what is sent (admin, not one's own; a new password ends its sessions)",
        params: AccountParams,
        body: AccountBody,
      },
    },
    async req => {
      const { name } = req.params as Static<typeof AccountParams>
      const { role, password } = req.body as Static<typeof AccountBody>
      if (req.who?.account === name) throw httpError(400, 'BAD_REQUEST', 'an admin changes their own account with cairn fleet account, not here')
      if (role === undefined && password === undefined) throw httpError(400, 'BAD_REQUEST', 'nothing to change: send a role, a password or both')
      const passwordHash = password !== undefined ? await hashPassword(password) : undefined
      const change = { ...(role !== undefined ? { role } : {}), ...(passwordHash !== undefined ? { passwordHash } : {}) }
      const createOnly = req.headers['if-none-match'] === '*'
      // an existing account: only what was sent changes (a role change cannot undo a
      // password set meanwhile by the CLI or another admin, nor a password a role)
      if (!createOnly && (await o.store.updateAccount(name, change))) return { name, result: 'updated' as const }
      if (role === undefined || passwordHash === undefined) throw httpError(400, 'BAD_REQUEST', `no account ${name}; a new one needs a role and a password`)
      if (await o.store.addAccount({ name, role, passwordHash, created: o.clock.now() })) return { name, result: 'added' as const }
      throw httpError(createOnly ? 412 : 409, 'EXISTS', `an account ${name} exists`)
    },
  )
  app.delete('/api/v1/accounts/:name', { config: { role: 'admin' }, schema: { summary: 'remove an account and its sessions (admin)', params: AccountParams } }, async req => {
    const { name } = req.params as Static<typeof AccountParams>
    if (req.who?.account === name) throw httpError(400, 'BAD_REQUEST', 'an admin cannot remove their own account here (use cairn fleet account remove)')
    if (!(await o.store.removeAccount(name))) throw httpError(404, 'NOT_FOUND', `no account ${name}`)
    return { removed: name }
  })
}
