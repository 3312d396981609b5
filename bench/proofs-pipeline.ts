// The validator's pipeline per CPU-second (issue 19): signed heartbeats of many devices,
// interleaved as they arrive, fed to the validator's own ingest (size cap, parse,
// schema, signature, chain checks, beacon checks, the SQLite store in a temp dir) in
// this process, timed by process.cpuUsage() so it compares CPU time with CPU time
// (`openssl speed` reports verifies per CPU-second of its own process). Signing is done
// before the clock starts; the MQTT side is not in this figure (the load run measures
// the validator process as a whole). Every heartbeat must be stored as new: 0 lost.

import { randomBytes } from 'node:crypto'
import { signEnvelope } from '../protocol/envelope.js'
import { newId } from '../protocol/ids.js'
import { generateKeyPair } from '../protocol/keys.js'
import { asJson, encodeProof, messageHash, ProofType, telemetryDigest, ZERO_HASH, type HeartbeatBody, type ScoreParams } from '../protocol/proof-format.js'
import { ProofIngest } from '../validator/ingest.js'
import { DEFAULT_WEIGHTS } from '../validator/score.js'
import { openValidatorDb, pinParams } from '../validator/validator-store.js'

export interface PipelineFigures {
  heartbeats: number
  devices: number
  cpuS: number
  wallS: number
  perCpuS: number
  stored: number
  lost: number
}

const FLEET = 'bench'

/** `mode` 'batch' hands the heartbeats to ingest as the validator does (one turn's worth,
 * `batch` at a time, in one transaction); 'single' one transaction per heartbeat. */
export function benchPipeline(dir: string, o: { devices: number; perDevice: number; batch: number; mode: 'batch' | 'single' }): PipelineFigures {
  const slotMs = 60_000
  const params: ScoreParams = { slotMs, epochSlots: 60, maxAgeMs: 20_000, skewMs: 5_000, ...DEFAULT_WEIGHTS }
  const v = generateKeyPair()
  const db = openValidatorDb(dir)
  try {
    pinParams(db, params, v.keyId, FLEET)
    const now = Date.now()
    const slot = Math.floor(now / slotMs)
    const beacon = signEnvelope(v, {
      type: ProofType.beacon,
      id: newId(slot * slotMs),
      fleet: FLEET,
      sub: '*',
      iat: slot * slotMs,
      exp: (slot + 2) * slotMs + params.maxAgeMs,
      body: asJson({ slot, slotMs, epochSlots: params.epochSlots, rand: randomBytes(32).toString('hex') }),
    })
    db.prepare('INSERT INTO beacons (slot, hash, published, payload) VALUES (?, ?, ?, ?)').run(slot, messageHash(beacon), slot * slotMs, Buffer.from(JSON.stringify(beacon)))
    const cite = [{ v: v.keyId, slot, h: messageHash(beacon) }]
    // Round r holds every device's heartbeat r: consecutive heartbeats of one device are
    // `devices` messages apart, as at a validator.
    const devices = Array.from({ length: o.devices }, () => ({ key: generateKeyPair(), seq: 0, prev: ZERO_HASH }))
    const msgs: Array<{ topic: string; payload: Buffer }> = []
    for (let r = 0; r < o.perDevice; r++) {
      for (const d of devices) {
        const iat = now + r
        const body: HeartbeatBody = { seq: d.seq, prev: d.prev, beacons: cite, tel: telemetryDigest({ cpu: 0.12, tempC: 51.3 }), owner: 'payout:bench', period: 60 }
        const env = signEnvelope(d.key, { type: ProofType.heartbeat, id: newId(iat), fleet: FLEET, sub: '*', iat, exp: iat + 86_400_000, body: asJson(body) })
        d.seq++
        d.prev = messageHash(env)
        msgs.push({ topic: `cairn/v1/${FLEET}/${d.key.keyId}/proof`, payload: encodeProof(env) })
      }
    }
    const ingest = new ProofIngest({ db, fleet: FLEET, key: v, params })
    const clock = () => Date.now()
    let fresh = 0
    const feed = (part: typeof msgs) => {
      if (o.mode === 'single') {
        for (const m of part) {
          const out = ingest.handle(m.topic, m.payload, clock)
          if (out.kind === 'heartbeat' && out.verdict === 'new') fresh++
        }
        return
      }
      for (let i = 0; i < part.length; i += o.batch) {
        for (const out of ingest.handleBatch(part.slice(i, i + o.batch), clock)) if (out.ok && out.outcome.kind === 'heartbeat' && out.outcome.verdict === 'new') fresh++
      }
    }
    // Each device's first heartbeat is untimed: it makes the device row and puts its
    // key in the verify cache, as a running validator has them.
    feed(msgs.slice(0, o.devices))
    const timed = msgs.slice(o.devices)
    const cpu0 = process.cpuUsage()
    const t0 = performance.now()
    feed(timed)
    // What the WAL still holds goes to the database file inside the timed window, so a
    // store that defers its checkpoints pays for them here too.
    db.pragma('wal_checkpoint(TRUNCATE)')
    const cpu = process.cpuUsage(cpu0)
    const wallS = (performance.now() - t0) / 1000
    const cpuS = (cpu.user + cpu.system) / 1e6
    const stored = (db.prepare('SELECT COUNT(*) AS c FROM heartbeats').get() as { c: number }).c
    return { heartbeats: timed.length, devices: o.devices, cpuS, wallS, perCpuS: timed.length / cpuS, stored, lost: msgs.length - Math.min(stored, fresh) }
  } finally {
    db.close()
  }
}
