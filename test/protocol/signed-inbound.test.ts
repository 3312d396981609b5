// The signed-inbound gate: every refusal code, in its order (the cheap checks before the
// signature, the replay store after it), and what may be echoed from a payload that
// did not verify.

import t from 'tap'
import { signEnvelope, type Envelope } from '../../protocol/envelope.js'
import { CairnError } from '../../protocol/errors.js'
import { generateKeyPair } from '../../protocol/keys.js'
import { MemoryReplayGuard } from '../../protocol/replay-guard.js'
import { echoOf, readSignedInbound, type SignedInboundOptions } from '../../protocol/signed-inbound.js'

const op = generateKeyPair()
const stranger = generateKeyPair()
const dev = generateKeyPair()
const other = generateKeyPair()
const now = 1_767_225_700_000
const MIN = 60_000

const opts = (over: Partial<SignedInboundOptions> = {}): SignedInboundOptions =>
  ({
    maxBytes: 4096,
    fleet: 'demo',
    sub: dev.keyId,
    trusted: (k: string) => k === op.keyId,
    expectType: (ty: string) => ty === 'cmd.ping',
    clock: { now, maxTtlMs: 60 * MIN, skewMs: MIN },
    body: (env: Envelope) => {
      if ((env.body as { ok?: unknown }).ok !== true) throw new CairnError('BAD_REQUEST', 'body: ok must be true')
    },
    ...over,
  }) as SignedInboundOptions

let seq = 0
const freshId = () => `msg-${String(++seq).padStart(8, '0')}`

type Defect = 'type' | 'fleet' | 'sub' | 'untrusted' | 'ttl' | 'future' | 'expired' | 'body' | 'sig'

/** A command with the given defects (and only those). */
function make(defects: ReadonlySet<Defect>, id = freshId()): Buffer {
  const lifetime = defects.has('ttl') ? 120 * MIN : MIN
  const iat = defects.has('future') ? now + 10 * MIN : defects.has('expired') ? now - 5 * MIN - lifetime : now
  const env = signEnvelope(defects.has('untrusted') ? stranger : op, {
    type: defects.has('type') ? 'cmd.reboot' : 'cmd.ping',
    id,
    fleet: defects.has('fleet') ? 'other' : 'demo',
    sub: defects.has('sub') ? other.keyId : dev.keyId,
    iat,
    exp: iat + lifetime,
    body: defects.has('body') ? { ok: false } : { ok: true },
  })
  const sig = defects.has('sig') ? (env.sig[0] === 'A' ? 'B' : 'A') + env.sig.slice(1) : env.sig
  return Buffer.from(JSON.stringify({ ...env, sig }))
}

const codeOf = (payload: Buffer, o: SignedInboundOptions = opts()) => {
  const r = readSignedInbound(payload, o)
  return r.ok ? 'ok' : r.error.code
}

t.test('each refusal has its code, and the earliest check decides', async t => {
  const expected: Record<Defect, string> = {
    type: 'BAD_REQUEST',
    fleet: 'WRONG_TARGET',
    sub: 'WRONG_TARGET',
    untrusted: 'UNTRUSTED_KEY',
    ttl: 'TTL_TOO_LONG',
    future: 'NOT_YET_VALID',
    expired: 'EXPIRED',
    body: 'BAD_REQUEST',
    sig: 'BAD_SIGNATURE',
  }
  // A message can be early or late, not both: one chain for each.
  for (const clock of ['future', 'expired'] as const) {
    const order: Defect[] = ['type', 'fleet', 'sub', 'untrusted', 'ttl', clock, 'body', 'sig']
    for (let i = 0; i < order.length; i++) {
      const defects = new Set(order.slice(i))
      t.equal(codeOf(make(defects)), expected[order[i]!], `${[...defects].join('+')}: ${expected[order[i]!]}`)
    }
  }
  t.equal(codeOf(Buffer.alloc(4097, 0x20)), 'TOO_LARGE', 'larger than maxBytes, refused unread')
  t.equal(codeOf(Buffer.from('{"v":1,')), 'BAD_JSON')
  t.equal(codeOf(Buffer.from('null')), 'BAD_REQUEST', 'JSON that is no envelope')
  const { sig: _sig, ...unsigned } = JSON.parse(make(new Set()).toString()) as Envelope
  t.equal(codeOf(Buffer.from(JSON.stringify(unsigned))), 'BAD_REQUEST', 'no signature at all')
  t.equal(codeOf(make(new Set())), 'ok')
})

t.test('an untrusted key never reaches the signature check, nor the body check', async t => {
  let bodyChecks = 0
  const o = opts({ body: () => void bodyChecks++ })
  t.equal(codeOf(make(new Set<Defect>(['untrusted', 'sig'])), o), 'UNTRUSTED_KEY', 'not BAD_SIGNATURE')
  t.equal(bodyChecks, 0)
  t.equal(codeOf(make(new Set<Defect>(['sig'])), o), 'BAD_SIGNATURE')
  t.equal(bodyChecks, 1, 'the body check runs before the signature check')
})

t.test('the replay store is consulted after the signature verified; the gate never admits', async t => {
  const replay = new MemoryReplayGuard(MIN)
  const o = opts({ replay })
  const id = freshId()
  t.equal(codeOf(make(new Set<Defect>(['sig']), id), o), 'BAD_SIGNATURE', 'a forgery with the id of a genuine message')
  t.equal(codeOf(make(new Set<Defect>(['body']), id), o), 'BAD_REQUEST')
  const genuine = make(new Set(), id)
  t.equal(codeOf(genuine, o), 'ok', 'the genuine message is not blocked by the forgeries')
  t.equal(codeOf(genuine, o), 'ok', 'read again before its effect committed: still not a replay (the caller admits with the effect)')
  replay.admit(id, Date.now() + MIN, Date.now())
  t.equal(codeOf(genuine, o), 'REPLAY', 'once admitted, a second copy is a replay')
  t.equal(codeOf(genuine, opts()), 'ok', 'without a replay store the gate does not judge replays')
})

t.test('clock: null turns the lifetime and clock checks off (proof messages)', async t => {
  const o = opts({ clock: null })
  for (const d of ['ttl', 'future', 'expired'] as const) t.equal(codeOf(make(new Set([d])), o), 'ok', d)
  t.equal(codeOf(make(new Set<Defect>(['sig'])), o), 'BAD_SIGNATURE', 'the signature still counts')
})

t.test('target: broadcast only when allowed; sub null leaves it to the caller', async t => {
  const env = signEnvelope(op, { type: 'cmd.ping', id: freshId(), fleet: 'demo', sub: '*', iat: now, exp: now + MIN, body: { ok: true } })
  const wire = Buffer.from(JSON.stringify(env))
  t.equal(codeOf(wire), 'WRONG_TARGET')
  t.equal(codeOf(wire, opts({ allowBroadcast: true })), 'ok')
  t.equal(codeOf(make(new Set<Defect>(['sub'])), opts({ sub: null })), 'ok')
})

t.test('echo: a well-formed request id and task id, even from a refused payload', async t => {
  const refused = readSignedInbound(make(new Set<Defect>(['untrusted']), 'request-0001'), opts())
  t.match(refused, { ok: false, echo: { id: 'request-0001', task: null } })
  const task = signEnvelope(stranger, { type: 'task.request', id: 'request-0002', fleet: 'demo', sub: dev.keyId, iat: now, exp: now + MIN, body: { task: 'task-00000001' } })
  t.match(readSignedInbound(Buffer.from(JSON.stringify(task)), opts()), { ok: false, echo: { id: 'request-0002', task: 'task-00000001' } })
  t.same(echoOf({ id: 'short', body: { task: 'has/slash-1234' } }), { id: null, task: null, iss: null }, 'ids outside ID_PATTERN are not echoed')
  t.same(echoOf({ id: 'x'.repeat(65), iss: 'not a key id' }), { id: null, task: null, iss: null }, 'nor an iss that is not a key id')
  t.same(echoOf({ id: 12345678, body: null }), { id: null, task: null, iss: null })
  t.same(echoOf({ iss: stranger.keyId }), { id: null, task: null, iss: stranger.keyId }, 'a well-formed claimed signer is echoed (the refusal is addressed to it)')
  for (const junk of [null, [1, 2, 3], 'text', 42]) t.same(echoOf(junk), { id: null, task: null, iss: null }, JSON.stringify(junk))
  t.match(readSignedInbound(Buffer.alloc(5000, 0x7b), opts()), { ok: false, echo: { id: null, task: null } }, 'nothing read from an oversized payload')
  t.match(readSignedInbound(Buffer.from('{"id":"request-0003"'), opts()), { ok: false, error: { code: 'BAD_JSON' }, echo: { id: null } })
})
