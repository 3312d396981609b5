// What a validator does with one message from `cairn/v1/<fleet>/+/proof`: check it,
// record it with the validator's receive time, and notice fraud. Synchronous: the
// caller acknowledges the MQTT message only after `handle` returns, so a crash never
// loses a heartbeat the broker thinks was delivered.

import { canonicalJson } from '../protocol/canonical.js'
import { CairnError } from '../protocol/errors.js'
import { sha256Hex } from '../protocol/hash.js'
import { newId } from '../protocol/ids.js'
import { signedBytes, signEnvelope, type Envelope } from '../protocol/envelope.js'
import type { KeyPair } from '../protocol/keys.js'
import { proofDevice } from '../protocol/topics.js'
import { asJson, checkBody, ProofType, type EvidenceBody, type EvidenceKind, type Heartbeat, type Response, type ScoreParams } from '../protocol/proof-format.js'
import { readSignedInbound } from '../protocol/signed-inbound.js'
import type { VDb } from './validator-store.js'

export type IngestOutcome =
  | { kind: 'heartbeat'; device: string; seq: number; verdict: 'new' | 'duplicate'; evidence: Envelope[]; fetch?: { from: number; to: number } }
  | { kind: 'response'; device: string; challenge: string; recorded: boolean; evidence: Envelope[] }
  | { kind: 'ignored'; reason: string }

/** One message's result in a batch: its outcome, or why it failed (a CairnError is a
 * refusal for good; anything else a store error worth retrying). */
export type BatchResult = { ok: true; outcome: IngestOutcome } | { ok: false; error: Error }

type SeqRow = { seq: number; hash: string; recv: number }

type Checked = { kind: 'heartbeat'; device: string; hb: Heartbeat } | { kind: 'response'; device: string; r: Response }

export interface IngestOptions {
  db: VDb
  fleet: string
  key: KeyPair
  params: ScoreParams
}

/** SQLite's error codes of a store that fails as a whole: a batch that meets one is not
 * written again message by message (each would wait out the busy timeout anew). */
const STORE_WIDE = /^SQLITE_(BUSY|LOCKED|FULL|IOERR|READONLY|CANTOPEN|NOMEM|CORRUPT)/
/** Beacons kept in memory: heartbeats cite the last few slots. */
const MAX_CACHED_BEACONS = 64
const EVIDENCE_TTL_MS = 365 * 86_400_000
/** A heartbeat citing 16 beacons is under 3 KB; anything far larger is refused unread. */
const MAX_PROOF_BYTES = 16_384

export function epochOf(p: Pick<ScoreParams, 'slotMs' | 'epochSlots'>, ms: number): number {
  return Math.floor(Math.floor(ms / p.slotMs) / p.epochSlots)
}

export class ProofIngest {
  private readonly st
  private readonly beacons = new Map<number, { hash: string; payload: Buffer }>()

  constructor(private readonly o: IngestOptions) {
    const db = o.db
    this.st = {
      bySeq: db.prepare('SELECT seq, hash, recv FROM heartbeats WHERE device = ? AND seq = ?'),
      near: db.prepare('SELECT seq, hash, recv FROM heartbeats WHERE device = ? AND seq BETWEEN ? AND ?'),
      payload: db.prepare('SELECT payload FROM heartbeats WHERE device = ? AND seq = ? AND hash = ?'),
      below: db.prepare('SELECT MAX(seq) AS s FROM heartbeats WHERE device = ? AND seq < ?'),
      insert: db.prepare('INSERT INTO heartbeats (device, seq, hash, recv, payload) VALUES (?, ?, ?, ?, ?)'),
      device: db.prepare('SELECT head_seq, fetch_at, flagged_epoch FROM devices WHERE device = ?'),
      upsertDevice: db.prepare(
        `INSERT INTO devices (device, first_seen, last_seen, head_seq, owner) VALUES (?, ?, ?, ?, ?)
         ON CONFLICT (device) DO UPDATE SET last_seen = excluded.last_seen, head_seq = MAX(head_seq, excluded.head_seq),
           owner = CASE WHEN excluded.head_seq >= head_seq THEN excluded.owner ELSE owner END`,
      ),
      setFetch: db.prepare('UPDATE devices SET fetch_at = ? WHERE device = ?'),
      setFlagged: db.prepare('UPDATE devices SET flagged_epoch = ? WHERE device = ?'),
      beacon: db.prepare('SELECT hash, payload FROM beacons WHERE slot = ?'),
      firstFresher: db.prepare('SELECT MIN(published) AS published FROM beacons WHERE slot > ?'),
      online: db.prepare('SELECT payload FROM heartbeats WHERE device = ? AND seq < ? AND recv <= ? ORDER BY seq DESC LIMIT 1'),
      challenge: db.prepare('SELECT device, response FROM challenges WHERE id = ?'),
      respond: db.prepare('UPDATE challenges SET response = ?, recv = ? WHERE id = ? AND response IS NULL'),
      evidence: db.prepare('INSERT OR IGNORE INTO evidence (id, device, kind, created, payload) VALUES (?, ?, ?, ?, ?)'),
    }
  }

  /** `recv` is the receive time, or a clock read once the store's write lock is held:
   * a heartbeat that waited for the lock must not commit with a time an attestation
   * already made has judged. */
  handle(topic: string, payload: Buffer, recv: number | (() => number)): IngestOutcome {
    const now = typeof recv === 'number' ? () => recv : recv
    const read = this.check(topic, payload)
    if (read.kind === 'ignored') return read
    return this.o.db.transaction(() => this.apply(read, now)).immediate()
  }

  /** Several messages (those that arrived in one turn of the event loop) in one
   * transaction, each judged in order against what the ones before it stored, exactly
   * as one `handle` after another would: two heartbeats of one device in a batch chain.
   * A refusal (CairnError) is that message's result; a batch whose transaction fails is
   * written again message by message, so one that cannot be stored fails only itself. */
  handleBatch(msgs: ReadonlyArray<{ topic: string; payload: Buffer }>, recv: () => number): BatchResult[] {
    const results: BatchResult[] = new Array<BatchResult>(msgs.length)
    const todo: Array<{ i: number; read: Checked }> = []
    msgs.forEach((m, i) => {
      try {
        const read = this.check(m.topic, m.payload)
        if (read.kind === 'ignored') results[i] = { ok: true, outcome: read }
        else todo.push({ i, read })
      } catch (err) {
        results[i] = { ok: false, error: err as Error }
      }
    })
    if (todo.length === 0) return results
    try {
      const outs = this.o.db.transaction(() => todo.map(x => this.apply(x.read, recv))).immediate()
      todo.forEach((x, k) => (results[x.i] = { ok: true, outcome: outs[k]! }))
    } catch (err) {
      // The store failing as a whole (busy past its timeout, full, read-only): every
      // message waits for its caller's retry; anything else, message by message.
      const whole = STORE_WIDE.test(String((err as { code?: unknown }).code ?? ''))
      for (const x of todo) {
        try {
          if (whole) throw err
          results[x.i] = { ok: true, outcome: this.o.db.transaction(() => this.apply(x.read, recv)).immediate() }
        } catch (err) {
          results[x.i] = { ok: false, error: err as Error }
        }
      }
    }
    return results
  }

  /** Everything that needs no store: topic, size, parse, shape, signature. */
  private check(topic: string, payload: Buffer): Checked | { kind: 'ignored'; reason: string } {
    const device = proofDevice(topic, this.o.fleet)
    if (!device) throw new CairnError('BAD_REQUEST', `not a proof topic: ${topic}`)
    // Signed by the device the topic names; no clock checks (a heartbeat stays evidence
    // forever: its freshness is judged by the receive time, below) and no replay store
    // (a copy received again is a duplicate, not refused).
    const read = readSignedInbound(payload, {
      what: 'proof message',
      maxBytes: MAX_PROOF_BYTES,
      fleet: this.o.fleet,
      sub: null,
      trusted: k => k === device,
      expectType: t => t === ProofType.heartbeat || t === ProofType.response,
      clock: null,
      body: env => checkBody(env, env.type as typeof ProofType.heartbeat | typeof ProofType.response),
    })
    if (!read.ok) throw read.error
    if (read.env.type === ProofType.heartbeat) return { kind: 'heartbeat', device, hb: read.env as Heartbeat }
    const r = read.env as Response
    if (r.sub !== this.o.key.keyId) return { kind: 'ignored', reason: 'response to another validator' }
    return { kind: 'response', device, r }
  }

  /** The store's part; runs inside the caller's IMMEDIATE transaction. */
  private apply(read: Checked, now: () => number): IngestOutcome {
    if (read.kind === 'heartbeat') return this.heartbeat(read.device, read.hb, now)
    const { device, r } = read
    const recvMs = now()
    const ch = this.st.challenge.get(r.body.challenge) as { device: string; response: Buffer | null } | undefined
    if (!ch || ch.device !== device) return { kind: 'ignored' as const, reason: 'response to an unknown challenge' }
    const recorded = this.st.respond.run(Buffer.from(JSON.stringify(r)), recvMs, r.body.challenge).changes === 1
    // A response naming a head that contradicts a stored heartbeat of that seq is
    // the device signing two histories: an equivocation.
    const evidence: Envelope[] = []
    if (recorded && r.body.seq !== null && r.body.head !== null) {
      const known = this.st.bySeq.all(device, r.body.seq) as SeqRow[]
      if (known.length > 0 && !known.some(k => k.hash === r.body.head)) {
        evidence.push(this.evidence('equivocation', device, `challenge response names another head for seq ${r.body.seq}`, [this.payloadOf(device, known[0]!), r], [known[0]!.recv, recvMs]))
      }
    }
    return { kind: 'response' as const, device, challenge: r.body.challenge, recorded, evidence }
  }

  private heartbeat(device: string, hb: Heartbeat, now: () => number): IngestOutcome {
    const p = this.o.params
    // The canonical bytes once: they are the hash's input and what is stored.
    const canon = canonicalJson(hb)
    const hash = sha256Hex(canon)
    const wire = Buffer.from(canon, 'utf8')
    const recvMs = now()
    // A copy of a stored heartbeat is a duplicate and nothing more, however late: a QoS 1
    // redelivery, a requested refetch, or the agent resending outbox records whose
    // acknowledgement a crash kept it from recording. It cannot earn anything (the
    // first receive time stands), and since the copy is byte for byte what the device
    // signed, anyone could have sent it: it says nothing against the device.
    // (Its hash fixes its seq, so a copy is among the heartbeats of that seq.)
    const seq = hb.body.seq
    // seq - 1, seq and seq + 1 in one read: nothing below writes heartbeats.
    const near = this.st.near.all(device, seq - 1, seq + 1) as SeqRow[]
    const twins = near.filter(r => r.seq === seq)
    if (twins.some(t => t.hash === hash)) return { kind: 'heartbeat', device, seq, verdict: 'duplicate', evidence: [] }
    const evidence: Envelope[] = []
    for (const other of twins) {
      // Equivocation is two different signed statements, not two spellings of one.
      if (sameStatement(this.payloadOf(device, other), hb)) return { kind: 'heartbeat', device, seq, verdict: 'duplicate', evidence }
    }
    // Two conflicting heartbeats prove it; a third and more prove nothing new, and
    // storing each (with evidence against every earlier one) would let one device
    // key fill the validator's disk.
    if (twins.length >= 2) return { kind: 'heartbeat', device, seq, verdict: 'duplicate', evidence }
    if (twins.length === 1) {
      evidence.push(this.evidence('equivocation', device, `two different heartbeats with seq ${seq}`, [this.payloadOf(device, twins[0]!), hb], [twins[0]!.recv, recvMs]))
    }
    const below = near.filter(r => r.seq === seq - 1)
    if (seq > 0 && below.length > 0 && !below.some(b => b.hash === hb.body.prev)) {
      evidence.push(this.evidence('fork', device, `heartbeat seq ${seq} does not chain to seq ${seq - 1}`, [this.payloadOf(device, below[0]!), hb], [below[0]!.recv, recvMs]))
    }
    for (const above of near.filter(r => r.seq === seq + 1)) {
      const next = this.payloadOf(device, above)
      if (next.body.prev !== hash) evidence.push(this.evidence('fork', device, `heartbeat seq ${seq + 1} does not chain to seq ${seq}`, [hb, next], [recvMs, above.recv]))
    }
    // The device row exists before the beacon checks, so a device's very first
    // heartbeat can already mark its epoch as flagged.
    const dev = this.st.device.get(device) as { head_seq: number; fetch_at: number; flagged_epoch: number } | undefined
    this.st.upsertDevice.run(device, recvMs, recvMs, seq, hb.body.owner)
    evidence.push(...this.beaconChecks(device, hb, recvMs, dev?.head_seq, dev?.flagged_epoch ?? -1))
    this.st.insert.run(device, seq, hash, recvMs, wire)
    // A gap below a heartbeat of a device we already follow: ask it to send the
    // missing ones again (at most once a slot per device).
    let fetch: { from: number; to: number } | undefined
    if (dev && seq > 0 && below.length === 0 && recvMs - dev.fetch_at >= p.slotMs) {
      const prev = (this.st.below.get(device, seq) as { s: number | null }).s
      if (prev !== null) {
        fetch = { from: prev + 1, to: seq - 1 }
        this.st.setFetch.run(recvMs, device)
      }
    }
    return { kind: 'heartbeat', device, seq, verdict: 'new', evidence, ...(fetch ? { fetch } : {}) }
  }

  /** A slot's beacon. One is written once and never changed (INSERT OR IGNORE), so a
   * found one is kept in memory; a missing one is read again next time (another
   * process may write it). */
  private beacon(slot: number): { hash: string; payload: Buffer } | undefined {
    let b = this.beacons.get(slot)
    if (b) return b
    b = this.st.beacon.get(slot) as { hash: string; payload: Buffer } | undefined
    if (b) {
      if (this.beacons.size >= MAX_CACHED_BEACONS) this.beacons.clear()
      this.beacons.set(slot, b)
    }
    return b
  }

  /** A stored heartbeat, read only where evidence or a closer look needs it. */
  private payloadOf(device: string, row: SeqRow): Heartbeat {
    return parse((this.st.payload.get(device, row.seq, row.hash) as { payload: Buffer }).payload)
  }

  /** Forged beacon citations always; stale beacons and clock skew once per device per
   * epoch (they are often a sick device rather than a cheat). */
  private beaconChecks(device: string, hb: Heartbeat, recvMs: number, headBefore: number | undefined, flaggedEpoch: number): Envelope[] {
    const p = this.o.params
    const out: Envelope[] = []
    const cite = hb.body.beacons.find(b => b.v === this.o.key.keyId)
    if (cite) {
      const genuine = this.beacon(cite.slot)
      if (genuine && genuine.hash !== cite.h) {
        out.push(
          this.evidence(
            'forged-beacon',
            device,
            `heartbeat seq ${hb.body.seq} cites a beacon for slot ${cite.slot} that this validator never published`,
            [hb, JSON.parse(genuine.payload.toString())],
            [recvMs],
          ),
        )
        return out
      }
    }
    // A heartbeat below one already received (fetched again, reordered) is late by
    // nature: its lateness says nothing about the device's beacons or clock. Nor does
    // one signed long before it arrived (a backlog flushed after an outage).
    if (headBefore !== undefined && hb.body.seq < headBefore) return out
    const epoch = epochOf(p, recvMs)
    // (The device row as read before this heartbeat's upsert, which leaves flagged_epoch be.)
    if (flaggedEpoch >= epoch) return out
    let flagged = false
    // A stale citation from a heartbeat signed long before it arrived is a backlog
    // flushed after an outage (the agent keeps signing while offline), not a cheat.
    const backlog = recvMs - hb.iat > p.skewMs
    if (cite && !backlog && recvMs - cite.slot * p.slotMs > p.maxAgeMs && this.hadFresherBeacon(device, hb, cite.slot)) {
      out.push(this.evidence('stale-beacon', device, `heartbeat seq ${hb.body.seq} cites slot ${cite.slot} though a later beacon had reached the device before it signed`, [hb], [recvMs]))
      flagged = true
    } else if (cite && this.citesFresh(cite, recvMs) && Math.abs(hb.iat - recvMs) > p.skewMs) {
      // Only a heartbeat citing a fresh genuine beacon was provably signed moments ago;
      // any other one may simply have waited at the broker (a validator restart).
      out.push(this.evidence('clock-skew', device, `device clock ${hb.iat - recvMs} ms off at seq ${hb.body.seq}`, [hb], [recvMs]))
      flagged = true
    }
    if (flagged) this.st.setFlagged.run(epoch, device)
    return out
  }

  /** The cited beacon is this validator's genuine one and was fresh at receipt (the
   * scoring's test, so clock-skew evidence goes with a 'skewed' verdict). */
  private citesFresh(cite: { slot: number; h: string }, recvMs: number): boolean {
    const genuine = this.beacon(cite.slot)
    const start = cite.slot * this.o.params.slotMs
    return genuine?.hash === cite.h && recvMs >= start && recvMs <= start + this.o.params.maxAgeMs
  }

  /** Whether the device provably had a beacon fresher than the one it cites when it
   * signed: one was out before its signing time (less the clock bound), and the device
   * was online after that beacon was out and before it signed (an earlier heartbeat of
   * it, signed after the beacon, had reached this validator), so the broker had handed
   * it the beacon. A device that lost its broker, crashed or restarted signs with the
   * newest beacon it has, and is never accused for what it could not receive. */
  private hadFresherBeacon(device: string, hb: Heartbeat, citedSlot: number): boolean {
    const skew = this.o.params.skewMs
    const fresher = (this.st.firstFresher.get(citedSlot) as { published: number | null }).published
    if (fresher === null) return false
    const signedAfter = hb.iat - skew
    if (fresher > signedAfter) return false
    const prior = this.st.online.get(device, hb.body.seq, signedAfter) as { payload: Buffer } | undefined
    return prior !== undefined && parse(prior.payload).iat - skew >= fresher
  }

  private evidence(kind: EvidenceKind, device: string, note: string, messages: unknown[], received: number[]): Envelope {
    const now = received[received.length - 1]!
    const body: EvidenceBody = { kind, device, note, messages, received, params: this.o.params }
    const env = signEnvelope(this.o.key, { type: ProofType.evidence, id: newId(now), fleet: this.o.fleet, sub: device, iat: now, exp: now + EVIDENCE_TTL_MS, body: asJson(body) })
    this.st.evidence.run(env.id, device, kind, now, Buffer.from(JSON.stringify(env)))
    return env
  }
}

function sameStatement(a: Heartbeat, b: Heartbeat): boolean {
  return signedBytes(a as unknown as Envelope).equals(signedBytes(b as unknown as Envelope))
}

function parse(payload: Buffer): Heartbeat {
  return JSON.parse(payload.toString()) as Heartbeat
}
