// The signed messages the fleet service keeps about its devices: task receipts, signed
// by the device that did the work (`cairn/v1/<fleet>/<device>/task/receipt`), and uptime
// attestations, signed by a validator (`cairn/v1/<fleet>/attestation/<validator>/<device>`,
// retained), kept only from the validators pinned with `--validator`. Each is verified
// whole before it is kept (protocol/task-format.ts checkReceipt, protocol/proof-format.ts
// checkProof: schema, fleet, signer, signature), and kept with its signed bytes so anyone
// can check it again offline. One that does not verify (forged, altered, from a key
// that is not the device's or not a pinned validator's) is never kept: it is counted on
// the device it names, with the reason, so the console can say "2 forged receipts
// refused". Only devices in the registry are counted (a flood of made-up ids cannot
// grow the store).

import { createHash } from 'node:crypto'
import type { Clock } from '../../protocol/clock.js'
import { CairnError } from '../../protocol/errors.js'
import type { Logger } from '../../protocol/log.js'
import { checkProof, ProofType } from '../../protocol/proof-format.js'
import { RefusalLog } from '../../protocol/refusal-log.js'
import { checkReceipt } from '../../protocol/task-format.js'
import { TOPIC_ROOT } from '../../protocol/topics.js'
import type { FleetStore, RefusalKind } from './fleet-store.js'

/** Far above a real one (a receipt with 256 inputs and outputs, an attestation ~2 KiB). */
export const MAX_SIGNED_BYTES = 256 * 1024
const DEVICE = /^[a-z2-7]{52}$/

/** Receipts come through the share group; attestations are retained, and a shared
 * subscription gets no retained messages, so every process takes them whole (keeping
 * one is idempotent). */
export function signedFilters(fleet: string): { shared: string[]; whole: string[] } {
  return { shared: [`${TOPIC_ROOT}/${fleet}/+/task/receipt`], whole: [`${TOPIC_ROOT}/${fleet}/attestation/+/+`] }
}

type Where = { kind: 'receipt'; device: string } | { kind: 'attestation'; device: string; validator: string }

export function signedTopic(topic: string, fleet: string): Where | null {
  const p = topic.split('/')
  if (`${p[0]}/${p[1]}` !== TOPIC_ROOT || p[2] !== fleet) return null
  if (p.length === 6 && p[4] === 'task' && p[5] === 'receipt' && DEVICE.test(p[3]!)) return { kind: 'receipt', device: p[3]! }
  if (p.length === 6 && p[3] === 'attestation' && DEVICE.test(p[4]!) && DEVICE.test(p[5]!)) return { kind: 'attestation', validator: p[4]!, device: p[5]! }
  return null
}

export interface SignedIngestOptions {
  store: FleetStore
  fleet: string
  clock: Clock
  log: Logger
  /** the validators whose attestations are kept (key ids) */
  validators: ReadonlySet<string>
  onChange?: (device: string) => void
}

export class SignedIngest {
  readonly stats = { receipts: 0, attestations: 0, refused: 0 }
  private readonly refusals: RefusalLog

  constructor(private readonly o: SignedIngestOptions) {
    this.refusals = new RefusalLog(o.log, 'signed message')
  }

  /** Verifies and keeps one message; a store error rejects (the message is not
   * acknowledged and comes again), a message that does not verify is counted. */
  async handle(topic: string, payload: Buffer): Promise<'stored' | 'refused' | 'ignored'> {
    const where = signedTopic(topic, this.o.fleet)
    // an empty retained message clears a topic: nothing about the device
    if (!where || payload.length === 0) return 'ignored'
    if (!(await this.o.store.getDevice(where.device))) return 'ignored'
    const now = this.o.clock.now()
    let keep: () => Promise<boolean>
    try {
      if (payload.length > MAX_SIGNED_BYTES) throw new CairnError('TOO_LARGE', `${payload.length} bytes; at most ${MAX_SIGNED_BYTES}`)
      keep = where.kind === 'receipt' ? this.receipt(where.device, payload, now) : this.attestation(where.device, where.validator, payload, now)
    } catch (err) {
      const e = err instanceof CairnError ? err : new CairnError('BAD_REQUEST', String(err))
      this.stats.refused++
      this.refusals.refused(e.code, { topic: topic.slice(0, 200), msg: e.message.slice(0, 200) })
      // by its hash: a retained one redelivered, or read by a second process, counts once
      await this.o.store.addRefusal(where.device, where.kind satisfies RefusalKind, `${e.code}: ${e.message}`, now, createHash('sha256').update(payload).digest('hex'))
      this.o.onChange?.(where.device)
      return 'refused'
    }
    if (await keep()) this.o.onChange?.(where.device)
    return 'stored'
  }

  /** Verifies (throws CairnError); returns what keeps it. */
  private receipt(device: string, payload: Buffer, now: number): () => Promise<boolean> {
    // signed by the device the topic names, and by no other key
    const { receipt } = checkReceipt(payload, { device })
    if (receipt.fleet !== this.o.fleet) throw new CairnError('WRONG_TARGET', `a receipt for fleet ${receipt.fleet}`)
    const b = receipt.body
    return async () => {
      const kept = await this.o.store.addReceipt({
        device,
        id: receipt.id,
        task: b.task,
        type: b.type,
        outcome: b.outcome,
        dispatcher: b.dispatcher,
        finished: b.finished,
        receivedAt: now,
        payload: payload.toString('utf8'),
      })
      if (kept) this.stats.receipts++
      return kept
    }
  }

  /** Verifies (throws CairnError); returns what keeps it. */
  private attestation(device: string, validator: string, payload: Buffer, now: number): () => Promise<boolean> {
    if (!this.o.validators.has(validator)) throw new CairnError('UNTRUSTED_KEY', `validator ${validator.slice(0, 12)}… is not pinned (--validator)`)
    const env = checkProof(payload, ProofType.attestation, { fleet: this.o.fleet, signer: validator })
    if (env.body.device !== device || env.sub !== device) throw new CairnError('WRONG_TARGET', `an attestation for ${env.body.device.slice(0, 12)}… on the topic of ${device.slice(0, 12)}…`)
    return async () => {
      const kept = await this.o.store.addAttestation({
        validator,
        device,
        epoch: env.body.epoch,
        score: env.body.score,
        fraud: env.body.fraud,
        receivedAt: now,
        payload: payload.toString('utf8'),
      })
      if (kept) this.stats.attestations++
      return kept
    }
  }
}
