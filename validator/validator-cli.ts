// `cairn validator [run|export|id]` and `cairn verify FILE`: argument parsing and
// process life; the work is in validator.ts, attest.ts and verify.ts.

import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import type { Level } from 'pino'
import { systemClock } from '../protocol/clock.js'
import { CairnError } from '../protocol/errors.js'
import { ensureStateDir } from '../protocol/identity.js'
import { generateKeyPair, keyIdOf, readKeyPairFile, readPublicKeyFile, writeKeyPairFiles, type KeyPair } from '../protocol/keys.js'
import { createLogger } from '../protocol/log.js'
import { toolClientOptions } from '../protocol/mqtt-client.js'
import { buildExport } from './attest.js'
import { encodeProof, type ScoreParams } from '../protocol/proof-format.js'
import type { Envelope } from '../protocol/envelope.js'
import { DEFAULT_WEIGHTS } from './score.js'
import { Validator } from './validator.js'
import { getMeta, openValidatorDb, storedParams, type VDb } from './validator-store.js'
import { verifyProofFile } from './verify-export.js'

type Out = { write(s: string): unknown }
export const VALIDATOR_KEY_FILE = 'validator.key'

export const VALIDATOR_HELP = `  cairn validator --broker URL --fleet NAME --state-dir DIR [--key FILE]
              [--slot S] [--epoch-slots N] [--max-age S] [--max-skew S]
              [--challenges-per-epoch N] [--challenge-timeout S] [--retention-days D]
              [--instance NAME]
              [--share-group NAME | --no-share] [--mqtt-version 5|4]
              [--username U] [--password P] [--ca FILE] [--log-level LEVEL]
  cairn validator id --state-dir DIR [--key FILE]
  cairn validator export --state-dir DIR --device ID --epoch N --out FILE [--key FILE]
  cairn validator evidence --state-dir DIR --out-dir DIR [--device ID] [--kind KIND]
  cairn verify FILE [--validator KEYID|PUBFILE]`

const num = (v: unknown, flag: string, min: number, max = Number.MAX_SAFE_INTEGER): number | undefined => {
  if (v === undefined) return undefined
  const n = Number(v)
  if (!Number.isFinite(n) || n < min || n > max) throw new CairnError('BAD_REQUEST', `--${flag} must be a number from ${min} to ${max}, got ${JSON.stringify(v)}`)
  return n
}

/** The key of an existing validator store (never made here), checked against the store. */
function existingValidatorKey(stateDir: string, keyFile: string | undefined, db: VDb): KeyPair {
  const file = keyFile ?? join(stateDir, VALIDATOR_KEY_FILE)
  if (!existsSync(file)) throw new CairnError('BAD_REQUEST', `${file}: no validator key here; pass the one the validator runs with (--key FILE)`)
  const key = readKeyPairFile(file)
  const owner = getMeta(db, 'validator')
  if (owner !== undefined && owner !== key.keyId) throw new CairnError('BAD_REQUEST', `${file} is key ${key.keyId}, but this store belongs to validator ${owner}; pass --key FILE`)
  return key
}

/** The validator's key: --key FILE (a `cairn fleet keygen` pair) or one kept in the state dir. */
export function validatorKey(stateDir: string, keyFile?: string): KeyPair {
  if (keyFile) return readKeyPairFile(keyFile)
  ensureStateDir(stateDir)
  const file = join(stateDir, VALIDATOR_KEY_FILE)
  if (!existsSync(file)) writeKeyPairFiles(file, generateKeyPair())
  return readKeyPairFile(file)
}

export function scoreParams(values: Record<string, unknown>): ScoreParams {
  const slotMs = Math.round((num(values.slot, 'slot', 0.1, 86_400) ?? 60) * 1000)
  return {
    slotMs,
    epochSlots: num(values['epoch-slots'], 'epoch-slots', 1, 100_000) ?? 60,
    maxAgeMs: Math.round((num(values['max-age'], 'max-age', 0.001, 86_400) ?? slotMs / 1000) * 1000),
    skewMs: Math.round((num(values['max-skew'], 'max-skew', 0, 86_400) ?? 30) * 1000),
    ...DEFAULT_WEIGHTS,
  }
}

export async function validatorCmd(args: readonly string[], io: { out: Out; err: Out }): Promise<number> {
  const [verb] = args
  if (verb === 'export') return exportCmd(args.slice(1), io.out)
  if (verb === 'evidence') return evidenceCmd(args.slice(1), io.out)
  if (verb === 'id') {
    const { values } = parseArgs({ args: args.slice(1), options: { 'state-dir': { type: 'string' }, key: { type: 'string' } }, strict: true })
    if (!values['state-dir'] && !values.key) throw new CairnError('BAD_REQUEST', '--state-dir DIR or --key FILE is required')
    const key = validatorKey(values['state-dir'] ?? '.', values.key)
    io.out.write(`validator id: ${key.keyId}\npublic key: ${values.key ? values.key : join(values['state-dir']!, VALIDATOR_KEY_FILE)}.pub\n`)
    return 0
  }
  const { values } = parseArgs({
    args: verb === 'run' ? args.slice(1) : [...args],
    options: {
      broker: { type: 'string' },
      fleet: { type: 'string' },
      'state-dir': { type: 'string' },
      key: { type: 'string' },
      slot: { type: 'string' },
      'epoch-slots': { type: 'string' },
      'max-age': { type: 'string' },
      'max-skew': { type: 'string' },
      'challenges-per-epoch': { type: 'string' },
      'challenge-timeout': { type: 'string' },
      'retention-days': { type: 'string' },
      instance: { type: 'string', default: '1' },
      'share-group': { type: 'string' },
      'no-share': { type: 'boolean' },
      'mqtt-version': { type: 'string', default: '5' },
      username: { type: 'string' },
      password: { type: 'string' },
      ca: { type: 'string' },
      'log-level': { type: 'string', default: 'info' },
    },
    strict: true,
  })
  for (const req of ['fleet', 'state-dir'] as const) if (!values[req]) throw new CairnError('BAD_REQUEST', `--${req} is required`)
  if (!/^[A-Za-z0-9_-]{1,32}$/.test(values.instance!)) throw new CairnError('BAD_REQUEST', '--instance: 1-32 letters, digits, - or _')
  const version = Number(values['mqtt-version'])
  if (version !== 4 && version !== 5) throw new CairnError('BAD_REQUEST', '--mqtt-version must be 5 or 4')
  const params = scoreParams(values)
  const url = values.broker ?? 'mqtt://127.0.0.1:1883'
  const log = createLogger({ level: values['log-level'] as Level })
  const stateDir = values['state-dir']!
  const key = validatorKey(stateDir, values.key)
  const validator = new Validator({
    brokerUrl: url,
    mqtt: toolClientOptions({ url, mqttVersion: version, username: values.username, password: values.password, ca: values.ca }),
    fleet: values.fleet!,
    stateDir,
    key,
    params,
    instance: values.instance!,
    // The group is per validator: independent validators on one broker must each see
    // every heartbeat, not split them.
    shareGroup: values['no-share'] ? null : (values['share-group'] ?? `cairn-val-${key.keyId.slice(0, 16)}`),
    challengesPerEpoch: num(values['challenges-per-epoch'], 'challenges-per-epoch', 0, 100_000) ?? 2,
    challengeTimeoutMs: Math.round((num(values['challenge-timeout'], 'challenge-timeout', 0.05, 600) ?? Math.min(10, params.slotMs / 2000)) * 1000),
    retentionDays: num(values['retention-days'], 'retention-days', 1, 36_500) ?? 30,
    clock: systemClock,
    log,
  })
  io.out.write(`validator ${key.keyId} (fleet ${values.fleet}, slot ${params.slotMs} ms, epoch ${params.epochSlots} slots)\n`)
  await validator.start()
  await new Promise<void>(resolve => {
    const onSignal = () => resolve()
    process.once('SIGTERM', onSignal)
    process.once('SIGINT', onSignal)
  })
  await validator.stop()
  return 0
}

function exportCmd(args: readonly string[], out: Out): number {
  const { values } = parseArgs({
    args: [...args],
    options: { 'state-dir': { type: 'string' }, device: { type: 'string' }, epoch: { type: 'string' }, out: { type: 'string' }, key: { type: 'string' } },
    strict: true,
  })
  for (const req of ['state-dir', 'device', 'epoch', 'out'] as const) if (!values[req]) throw new CairnError('BAD_REQUEST', `--${req} is required`)
  const epoch = num(values.epoch, 'epoch', 0)!
  const stateDir = values['state-dir']!
  if (!existsSync(join(stateDir, 'validator.db'))) throw new CairnError('STATE_DIR', `${stateDir}: no validator store here`)
  const db = openValidatorDb(stateDir)
  try {
    const key = existingValidatorKey(stateDir, values.key, db)
    const params = storedParams(db)
    if (!params) throw new CairnError('STATE_DIR', `${stateDir}: the validator has not run yet`)
    const fleet = getMeta(db, 'fleet')
    if (!fleet) throw new CairnError('STATE_DIR', `${stateDir}: the validator has not run yet`)
    const x = buildExport(db, key, fleet, params, values.device!, epoch, Date.now())
    writeFileSync(values.out!, JSON.stringify(x, null, 1) + '\n')
    const c = x.attestation.body.counts
    out.write(`wrote ${values.out}: epoch ${epoch}, ${x.heartbeats.length} heartbeats, ${c.slotsCovered}/${c.slotsLive} slots, score ${x.attestation.body.score} ppm\n`)
  } finally {
    db.close()
  }
  return 0
}

/** Writes recorded fraud evidence as one file per item, each checkable by `cairn verify`. */
function evidenceCmd(args: readonly string[], out: Out): number {
  const { values } = parseArgs({
    args: [...args],
    options: { 'state-dir': { type: 'string' }, 'out-dir': { type: 'string' }, device: { type: 'string' }, kind: { type: 'string' } },
    strict: true,
  })
  for (const req of ['state-dir', 'out-dir'] as const) if (!values[req]) throw new CairnError('BAD_REQUEST', `--${req} is required`)
  const stateDir = values['state-dir']!
  if (!existsSync(join(stateDir, 'validator.db'))) throw new CairnError('STATE_DIR', `${stateDir}: no validator store here`)
  const db = openValidatorDb(stateDir)
  try {
    const rows = db
      .prepare('SELECT id, device, kind, payload FROM evidence WHERE (? IS NULL OR device = ?) AND (? IS NULL OR kind = ?) ORDER BY created, id')
      .all(values.device ?? null, values.device ?? null, values.kind ?? null, values.kind ?? null) as Array<{ id: string; device: string; kind: string; payload: Buffer }>
    mkdirSync(values['out-dir']!, { recursive: true })
    for (const r of rows) {
      const file = join(values['out-dir']!, `${r.kind}-${r.device.slice(0, 12)}-${r.id}.json`)
      // The canonical bytes, so the OpenSSL recipe in docs/proofs.md works on the file.
      writeFileSync(file, encodeProof(JSON.parse(r.payload.toString()) as Envelope))
      out.write(`${file}\n`)
    }
    out.write(`${rows.length} evidence file(s)\n`)
  } finally {
    db.close()
  }
  return 0
}

export function verifyCmd(args: readonly string[], io: { out: Out; err: Out }): number {
  const { values, positionals } = parseArgs({ args: [...args], options: { validator: { type: 'string' } }, allowPositionals: true, strict: true })
  const file = positionals[0]
  if (!file) throw new CairnError('BAD_REQUEST', 'usage: cairn verify FILE [--validator KEYID]')
  let value: unknown
  try {
    value = JSON.parse(readFileSync(file, 'utf8'))
  } catch (err) {
    throw new CairnError('BAD_JSON', `${file}: ${(err as NodeJS.ErrnoException).code ?? 'not JSON'}`)
  }
  try {
    // --validator takes a key id or a public key file.
    const pinned = values.validator === undefined ? undefined : existsSync(values.validator) ? keyIdOf(readPublicKeyFile(values.validator)) : values.validator
    const report = verifyProofFile(value, pinned !== undefined ? { validator: pinned } : {})
    // Anyone can make a validator key: without a pinned one, a valid file only shows
    // that SOME key signed a consistent record. Payout code must pass --validator.
    const pin = values.validator === undefined ? `\nWARNING: validator key not pinned; pass --validator ${report.validator} to require this validator` : ''
    io.out.write(report.lines.join('\n') + pin + '\nOK\n')
    return 0
  } catch (err) {
    if (!(err instanceof CairnError)) throw err
    io.out.write(`INVALID: ${err.message}\n`)
    return 1
  }
}
