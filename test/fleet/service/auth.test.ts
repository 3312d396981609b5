// Accounts and sessions on a real socket (fleet/service/auth.ts): open on loopback with
// no account, closed once one exists or when listening beyond loopback; the cookie's
// flags; roles; the CSRF header on every change; sign-out, expiry, a removed account and
// a new password ending sessions; failed sign-ins slowing an account down (on a stepped
// clock) and one address limited to 10 tries in 5 minutes.

import t, { type Test } from 'tap'
import { buildApi } from '../../../fleet/service/http-api.js'
import { SqliteFleetStore } from '../../../fleet/service/sqlite-store.js'
import { DEFAULT_ALERT_RULES } from '../../../fleet/service/alerts.js'
import { ChangeFeed } from '../../../fleet/service/change-feed.js'
import { hashPassword, verifyPassword } from '../../../fleet/service/passwords.js'
import type { Role } from '../../../fleet/service/fleet-store.js'
import { ManualClock } from '../../../protocol/clock.js'
import { tmp } from '../../helpers/agent.js'
import { guardMs } from '../../helpers/patience.js'

const T0 = Date.UTC(2026, 11, 7, 10, 0, 0)
const DEV = 'c'.repeat(52)
const PASSWORD = 'correct horse battery'

async function setup(t: Test, o: { always?: boolean; secureCookies?: boolean; accounts?: Array<[string, Role]> } = {}) {
  const store = new SqliteFleetStore(tmp('cairn-fleet-'))
  await store.applyStatus({ device: DEV, id: 'on-1', state: 'online', key: [T0, T0, 0, T0], receivedAt: T0, board: 'rpi5', model: 'Raspberry Pi 5', version: '1.0.0', problems: [] })
  const hash = await hashPassword(PASSWORD)
  for (const [name, role] of o.accounts ?? []) await store.putAccount({ name, role, passwordHash: hash, created: T0 })
  const clock = new ManualClock(T0)
  const changes = new ChangeFeed(5)
  const app = await buildApi({
    store,
    fleet: 'demo',
    clock,
    stats: () => ({ stored: { status: 0, telemetry: 0, event: 0 }, refused: 0, transitions: 0 }),
    alertRules: DEFAULT_ALERT_RULES,
    auth: { always: o.always ?? false, secureCookies: o.secureCookies ?? false },
    changes,
    streamRecheckMs: 20,
  })
  const base = await app.listen({ host: '127.0.0.1', port: 0 })
  t.teardown(async () => {
    changes.close()
    await app.close()
    await store.close()
  })
  type Res = { status: number; body: Record<string, unknown> & { error?: { code: string; message: string } }; cookie: string | null; headers: Headers }
  const call = async (method: string, path: string, o: { cookie?: string; csrf?: string; body?: unknown; ifNoneMatch?: boolean } = {}): Promise<Res> => {
    const res = await fetch(`${base}${path}`, {
      method,
      headers: {
        ...(o.ifNoneMatch ? { 'if-none-match': '*' } : {}),
        ...(o.cookie ? { cookie: o.cookie } : {}),
        ...(o.csrf ? { 'x-cairn-csrf': o.csrf } : {}),
        ...(o.body !== undefined ? { 'content-type': 'application/json' } : {}),
      },
      ...(o.body !== undefined ? { body: JSON.stringify(o.body) } : {}),
    })
    const text = await res.text()
    return { status: res.status, body: text.startsWith('{') ? (JSON.parse(text) as Res['body']) : {}, cookie: res.headers.get('set-cookie'), headers: res.headers }
  }
  const login = async (name: string, password = PASSWORD) => {
    const r = await call('POST', '/api/v1/session', { body: { name, password } })
    if (r.status !== 200) throw new Error(`sign-in as ${name}: ${r.status} ${JSON.stringify(r.body)}`)
    return { cookie: r.cookie!.split(';')[0]!, csrf: r.body.csrf as string, setCookie: r.cookie! }
  }
  return { store, clock, call, login, base, changes }
}

/** An open live stream: what it has said so far, and whether it has ended. */
async function openStream(base: string, cookie: string) {
  const res = await fetch(`${base}/api/v1/stream`, { headers: { cookie } })
  if (res.status !== 200) throw new Error(`stream: ${res.status}`)
  const s = { text: '', ended: false, waiters: new Set<() => void>() }
  const reader = res.body!.getReader()
  void (async () => {
    try {
      for (;;) {
        const { done, value } = await reader.read()
        if (done) break
        s.text += Buffer.from(value).toString()
        for (const w of s.waiters) w()
      }
    } catch {
      // the socket cut: ended as well
    }
    s.ended = true
    for (const w of s.waiters) w()
  })()
  // waits for what the stream says, not for a time; the guard only turns a stream that
  // never says it into a failure rather than a hang
  const until = (ok: () => boolean, what: string) =>
    new Promise<void>((resolve, reject) => {
      if (ok()) return resolve()
      const guard = setTimeout(() => reject(new Error(`the stream never showed ${what}; it said: ${s.text.slice(-300)}`)), guardMs(30_000))
      const w = () => ok() && (s.waiters.delete(w), clearTimeout(guard), resolve())
      s.waiters.add(w)
    })
  return { s, until, cancel: () => reader.cancel().catch(() => undefined) }
}

t.test('passwords: scrypt, salted, self-describing; a wrong or malformed one is false', async t => {
  const a = await hashPassword(PASSWORD)
  const b = await hashPassword(PASSWORD)
  t.match(a, /^scrypt\$15\$8\$1\$[A-Za-z0-9_-]{22}\$[A-Za-z0-9_-]{43}$/)
  t.not(a, b, 'a fresh salt each time')
  t.ok(await verifyPassword(PASSWORD, a))
  t.notOk(await verifyPassword('correct horse battery!', a))
  t.notOk(await verifyPassword(PASSWORD, 'scrypt$15$8$1$x$y'), 'a malformed hash')
  t.notOk(await verifyPassword(PASSWORD, a.replace('$15$', '$30$')), 'an absurd cost is refused, not attempted')
  await t.rejects(hashPassword('short'), { code: 'BAD_REQUEST', message: /at least 10/ })
})

t.test('no account, on loopback: open; once one exists, every call signs in', async t => {
  const { store, call } = await setup(t)
  t.equal((await call('GET', '/api/v1/devices')).status, 200, 'no account: open to this machine')
  t.match(
    await call('PUT', '/api/v1/accounts/mallory', { body: { role: 'admin', password: PASSWORD } }),
    { status: 403, body: { error: { code: 'FORBIDDEN', message: /cairn fleet account add/ } } },
    'but not the making of the first admin (a local user, a page rebinding a name to 127.0.0.1)',
  )
  t.equal((await call('GET', '/api/v1/accounts')).status, 403)
  t.same((await call('GET', '/api/v1/session')).body, { auth: false })
  await store.putAccount({ name: 'otto', role: 'operator', passwordHash: await hashPassword(PASSWORD), created: T0 })
  t.match(await call('GET', '/api/v1/devices'), { status: 401, body: { error: { code: 'UNAUTHORIZED', message: /sign in/ } } }, 'the first account closes it, at once')
  t.same((await call('GET', '/api/v1/session')).body, { auth: true })
  t.equal((await call('GET', '/api/v1/no-such-route')).status, 401, 'an unknown route too: no route listing before sign-in')
  t.equal((await call('GET', '/api/v1/openapi.json')).status, 200, 'the API document is public')
  t.not((await call('GET', '/')).status, 401, 'the console page is public (it holds no data; it asks for a sign-in)')
})

t.test('beyond loopback: closed even with no account', async t => {
  const { call } = await setup(t, { always: true })
  t.equal((await call('GET', '/api/v1/devices')).status, 401)
  t.equal((await call('GET', '/api/v1/fleet')).status, 401)
})

t.test('sessions: cookie flags, roles, CSRF, sign-out, expiry, removal, a new password', async t => {
  const { store, clock, call, login, base } = await setup(t, {
    accounts: [
      ['vera', 'viewer'],
      ['otto', 'operator'],
      ['ada', 'admin'],
    ],
  })
  t.match(await call('POST', '/api/v1/session', { body: { name: 'otto', password: 'wrong password' } }), { status: 401, body: { error: { code: 'UNAUTHORIZED', message: 'wrong name or password' } } })
  t.match(
    await call('POST', '/api/v1/session', { body: { name: 'nobody', password: PASSWORD } }),
    { status: 401, body: { error: { message: 'wrong name or password' } } },
    'an unknown name: the same answer',
  )
  t.match(await call('POST', '/api/v1/session', { body: { name: 'otto' } }), { status: 400 }, 'no password: a 400')
  t.match(await call('POST', '/api/v1/session', { body: { name: '<b>', password: PASSWORD } }), { status: 400 }, 'a name that is no name: a 400')

  const otto = await login('otto')
  t.match(otto.setCookie, /^cairn_session=[A-Za-z0-9_-]{43}; Max-Age=43200; Path=\/; HttpOnly; SameSite=Strict$/, 'HttpOnly, SameSite=Strict, 12 h; not Secure on plain loopback HTTP')
  t.match(otto.csrf, /^[A-Za-z0-9_-]{32}$/)
  t.match((await call('GET', '/api/v1/session', { cookie: otto.cookie })).body, { auth: true, account: { name: 'otto', role: 'operator' }, csrf: otto.csrf })
  t.equal((await call('GET', '/api/v1/devices', { cookie: otto.cookie })).status, 200, 'signed in: reads')
  t.equal((await call('GET', '/api/v1/devices', { cookie: 'cairn_session=' + 'A'.repeat(43) })).status, 401, 'a made-up session: 401')

  const labels = { labels: { site: 'berlin' } }
  t.match(await call('PUT', `/api/v1/devices/${DEV}/labels`, { cookie: otto.cookie, body: labels }), { status: 403, body: { error: { code: 'CSRF' } } }, 'a change without the CSRF header: 403')
  t.match(await call('PUT', `/api/v1/devices/${DEV}/labels`, { cookie: otto.cookie, csrf: 'x'.repeat(32), body: labels }), { status: 403, body: { error: { code: 'CSRF' } } }, 'with a wrong one: 403')
  const wide = await fetch(`${base}/api/v1/devices/${DEV}/labels`, {
    method: 'PUT',
    headers: { cookie: otto.cookie, 'x-cairn-csrf': Buffer.from('é'.repeat(16)).toString('latin1'), 'content-type': 'application/json' },
    body: JSON.stringify(labels),
  })
  t.equal(wide.status, 403, 'a token of as many characters but other bytes: 403, not a 500')
  t.match(await call('PUT', `/api/v1/devices/${DEV}/labels`, { cookie: otto.cookie, csrf: otto.csrf, body: labels }), { status: 200, body: { labels: { site: 'berlin' } } }, 'with the token: done')

  const vera = await login('vera')
  t.equal((await call('GET', `/api/v1/devices/${DEV}`, { cookie: vera.cookie })).status, 200, 'a viewer reads')
  t.match(
    await call('PUT', `/api/v1/devices/${DEV}/labels`, { cookie: vera.cookie, csrf: vera.csrf, body: labels }),
    { status: 403, body: { error: { code: 'FORBIDDEN', message: /operator role/ } } },
    'but changes nothing',
  )
  t.match(await call('GET', '/api/v1/accounts', { cookie: otto.cookie }), { status: 403, body: { error: { code: 'FORBIDDEN' } } }, 'accounts are for admins')

  const ada = await login('ada')
  t.match((await call('GET', '/api/v1/accounts', { cookie: ada.cookie })).body, { items: [{ name: 'ada', role: 'admin' }, { name: 'otto' }, { name: 'vera' }] })
  t.match(await call('PUT', '/api/v1/accounts/neo', { cookie: ada.cookie, csrf: ada.csrf, body: { role: 'viewer', password: 'short' } }), { status: 400, body: { error: { message: /at least 10/ } } })
  t.match(await call('PUT', '/api/v1/accounts/neo', { cookie: ada.cookie, csrf: ada.csrf, body: { role: 'viewer' } }), {
    status: 400,
    body: { error: { message: /a new one needs a role and a password/ } },
  })
  t.match(await call('PUT', '/api/v1/accounts/neo', { cookie: ada.cookie, csrf: ada.csrf, body: { role: 'viewer', password: PASSWORD } }), { status: 200, body: { result: 'added' } })
  // a role change applies to open sessions at once
  t.match(await call('PUT', '/api/v1/accounts/otto', { cookie: ada.cookie, csrf: ada.csrf, body: { role: 'viewer' } }), { status: 200, body: { result: 'updated' } })
  t.match(
    await call('PUT', `/api/v1/devices/${DEV}/labels`, { cookie: otto.cookie, csrf: otto.csrf, body: labels }),
    { status: 403, body: { error: { code: 'FORBIDDEN' } } },
    'otto, now a viewer, at once',
  )
  t.match(await call('DELETE', '/api/v1/accounts/ada', { cookie: ada.cookie, csrf: ada.csrf }), { status: 400 }, 'an admin does not remove themself here')
  t.match(await call('PUT', '/api/v1/accounts/ada', { cookie: ada.cookie, csrf: ada.csrf, body: { role: 'viewer' } }), { status: 400 }, 'nor changes their own account')
  t.match(
    await call('PUT', '/api/v1/accounts/neo', { cookie: ada.cookie, csrf: ada.csrf, body: { role: 'admin', password: PASSWORD }, ifNoneMatch: true }),
    { status: 412, body: { error: { code: 'EXISTS' } } },
    'adding a name that exists (If-None-Match: *): refused, the account left as it is',
  )
  t.match(await store.getAccount('neo'), { role: 'viewer' })
  // a password alone: the role another admin set meanwhile stays
  await store.updateAccount('neo', { role: 'operator' })
  t.match(await call('PUT', '/api/v1/accounts/neo', { cookie: ada.cookie, csrf: ada.csrf, body: { password: 'a brand new password' } }), { status: 200, body: { result: 'updated' } })
  t.match(await store.getAccount('neo'), { role: 'operator' }, 'a new password keeps the role set meanwhile')
  t.ok(await verifyPassword('a brand new password', (await store.getAccount('neo'))!.passwordHash))
  t.match(await call('PUT', '/api/v1/accounts/neo', { cookie: ada.cookie, csrf: ada.csrf, body: {} }), { status: 400, body: { error: { message: /nothing to change/ } } })
  await store.updateAccount('neo', { role: 'viewer', passwordHash: await hashPassword(PASSWORD) })
  t.equal((await call('DELETE', '/api/v1/accounts/vera', { cookie: ada.cookie, csrf: ada.csrf })).status, 200)
  t.equal((await call('GET', '/api/v1/devices', { cookie: vera.cookie })).status, 401, "a removed account's session ends")

  // a new password ends the sessions
  await store.putAccount({ name: 'otto', role: 'viewer', passwordHash: await hashPassword('another good password'), created: T0 })
  t.equal((await call('GET', '/api/v1/devices', { cookie: otto.cookie })).status, 401, 'a new password ends its sessions')

  const out = await call('DELETE', '/api/v1/session', { cookie: ada.cookie })
  t.match(out.cookie, /^cairn_session=; Max-Age=0;/, 'sign-out clears the cookie')
  t.equal((await call('GET', '/api/v1/devices', { cookie: ada.cookie })).status, 401, 'and ends the session')

  const late = await login('neo')
  clock.advance(12 * 3_600_000 - 1)
  t.equal((await call('GET', '/api/v1/devices', { cookie: late.cookie })).status, 200, 'good for 12 h')
  clock.advance(1)
  t.equal((await call('GET', '/api/v1/devices', { cookie: late.cookie })).status, 401, 'then expired')
})

t.test('an open live stream ends when its session does: signed out elsewhere, a new password, the account removed, expiry', async t => {
  const { store, clock, call, login, base, changes } = await setup(t, {
    accounts: [
      ['vera', 'viewer'],
      ['otto', 'operator'],
      ['ada', 'admin'],
      ['neo', 'viewer'],
    ],
  })
  const [vera, otto, ada, neo] = [await login('vera'), await login('otto'), await login('ada'), await login('neo')]
  const streams = { vera: await openStream(base, vera.cookie), otto: await openStream(base, otto.cookie), ada: await openStream(base, ada.cookie), neo: await openStream(base, neo.cookie) }
  t.teardown(() => Promise.all(Object.values(streams).map(x => x.cancel())))
  const endedSignedOut = async (who: keyof typeof streams, what: string) => {
    await streams[who].until(() => streams[who].s.ended, 'its end')
    t.match(streams[who].s.text, /event: signed-out\ndata: \{\}\n\n$/, `${who}: ${what}, the stream says signed-out and ends`)
  }

  await call('DELETE', '/api/v1/session', { cookie: vera.cookie })
  await endedSignedOut('vera', 'signed out in another tab')
  await store.putAccount({ name: 'otto', role: 'operator', passwordHash: await hashPassword('another good password'), created: T0 })
  await endedSignedOut('otto', 'a new password')
  t.equal((await call('DELETE', '/api/v1/accounts/neo', { cookie: ada.cookie, csrf: ada.csrf })).status, 200)
  await endedSignedOut('neo', 'the account removed')

  changes.notify(DEV, 'telemetry')
  await streams.ada.until(() => streams.ada.s.text.includes('event: change'), 'a change')
  t.notOk(streams.ada.s.ended, 'a session that stands keeps its stream (it saw those checks, and then a change)')
  clock.advance(12 * 3_600_000)
  await endedSignedOut('ada', 'the session expired')
})

t.test('a stream opened on loopback before any account ends once the first is made', async t => {
  const { store, base } = await setup(t)
  const open = await openStream(base, '')
  t.teardown(() => open.cancel())
  await store.putAccount({ name: 'ada', role: 'admin', passwordHash: await hashPassword(PASSWORD), created: T0 })
  await open.until(() => open.s.ended, 'its end')
  t.match(open.s.text, /event: signed-out\n/, 'it says signed-out and ends: from now on a stream needs a session')
})

t.test('Secure cookies behind TLS', async t => {
  const { login } = await setup(t, { secureCookies: true, accounts: [['otto', 'operator']] })
  t.match((await login('otto')).setCookie, /; Secure/)
})

t.test('failed sign-ins slow the account down: a wait from the fifth in a row, doubling', async t => {
  const { store, clock, call, login } = await setup(t, { accounts: [['otto', 'operator']] })
  const attempt = (password: string) => call('POST', '/api/v1/session', { body: { name: 'otto', password } })
  for (let i = 0; i < 4; i++) t.equal((await attempt('wrong password')).status, 401, `failure ${i + 1}: no wait yet`)
  t.equal((await attempt('wrong password')).status, 401, 'the fifth failure')
  const locked = await attempt(PASSWORD)
  t.match(locked, { status: 429, body: { error: { code: 'RATE_LIMITED', message: /try again in 1 s/ } } }, 'then even the right password waits (1 s), unchecked')
  t.equal(locked.headers.get('retry-after'), '1')
  clock.advance(1000)
  t.equal((await attempt('wrong password')).status, 401, 'the sixth failure')
  t.match(await attempt(PASSWORD), { status: 429, body: { error: { message: /try again in 2 s/ } } }, 'the wait doubles')
  clock.advance(2000)
  await login('otto')
  t.pass('the right password after the wait: signed in, and the count starts again')
  t.match(await store.getAccount('otto'), { failed: 0, lockedUntil: 0 }, 'a success clears the count')
  // (the 10th attempt from this address: the address limit is the next test's)
  t.equal((await attempt('wrong password')).status, 401)
  t.match(await store.getAccount('otto'), { failed: 1, lockedUntil: 0 }, 'a failure after a success counts from one: no wait')
})

t.test('a name with no account waits as an account does; guesses in parallel are checked one at a time', async t => {
  const { call } = await setup(t, { accounts: [['otto', 'operator']] })
  const attempt = (name: string, password = 'wrong password') => call('POST', '/api/v1/session', { body: { name, password } })
  const answers: number[] = []
  for (let i = 0; i < 6; i++) answers.push((await attempt('nobody')).status)
  t.same(answers, [401, 401, 401, 401, 401, 429], 'an unknown name: five failures, then a wait, as for a real one (the answers do not tell which names exist)')
  const parallel = await Promise.all([attempt('otto'), attempt('otto'), attempt('otto')])
  t.equal(parallel.filter(r => r.status === 401).length, 1, 'three guesses at once: one is checked')
  t.equal(parallel.filter(r => r.status === 429).length, 2, 'the others wait')
})

t.test('one address: at most 10 sign-in attempts in 5 minutes', async t => {
  const { call } = await setup(t, { accounts: [['otto', 'operator']] })
  for (let i = 0; i < 10; i++) await call('POST', '/api/v1/session', { body: { name: `guess${i}`, password: PASSWORD } })
  const r = await call('POST', '/api/v1/session', { body: { name: 'otto', password: PASSWORD } })
  t.match(r, { status: 429, body: { error: { code: 'RATE_LIMITED' } } }, 'the 11th: 429, whatever the name')
  t.ok(Number(r.headers.get('retry-after')) > 0, `retry-after ${r.headers.get('retry-after')} s`)
})
