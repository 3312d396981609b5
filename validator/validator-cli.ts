// `cairn validator [run|id|export|evidence]` and `cairn verify FILE`: their flags and
// process life; the work is in validator.ts, attest.ts and verify.ts.

import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { Command } from 'commander'
import { brokerConnection, withBrokerFlags } from '../protocol/broker-flags.js'
import type { Level } from 'pino'
import { systemClock } from '../protocol/clock.js'
import { CairnError } from '../protocol/errors.js'
import { ensureStateDir } from '../protocol/identity.js'
import { generateKeyPair, keyIdOf, readKeyPairFile, readPublicKeyFile, writeKeyPairFiles, type KeyPair } from '../protocol/keys.js'
import { createLogger } from '../protocol/log.js'
import { buildExport } from './attest.js'
import { encodeProof, type ScoreParams } from '../protocol/proof-format.js'
import type { Envelope } from '../protocol/envelope.js'
import { DEFAULT_WEIGHTS } from './score.js'
import { Validator } from './validator.js'
import { getMeta, openValidatorDb, storedParams, type VDb } from './validator-store.js'
import { verifyProofFile } from './verify-export.js'

type Out = { write(s: string): unknown }
export const VALIDATOR_KEY_FILE = 'validator.key'

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

interface RunOptions {
  broker: string
  fleet: string
  stateDir: string
  key?: string
  slot?: string
  epochSlots?: string
  maxAge?: string
  maxSkew?: string
  challengesPerEpoch?: string
  challengeTimeout?: string
  retentionDays?: string
  instance: string
  shareGroup?: string
  share: boolean
  mqttVersion: string
  username?: string
  password?: string
  ca?: string
  logLevel: string
}

function scoreParams(values: RunOptions): ScoreParams {
  const slotMs = Math.round((num(values.slot, 'slot', 0.1, 86_400) ?? 60) * 1000)
  return {
    slotMs,
    epochSlots: num(values.epochSlots, 'epoch-slots', 1, 100_000) ?? 60,
    maxAgeMs: Math.round((num(values.maxAge, 'max-age', 0.001, 86_400) ?? slotMs / 1000) * 1000),
    skewMs: Math.round((num(values.maxSkew, 'max-skew', 0, 86_400) ?? 30) * 1000),
    ...DEFAULT_WEIGHTS,
  }
}

type Io = { out: Out; err: Out; setExitCode(code: number): void }

/** `cairn validator run`, also the group's default: `cairn validator --broker …` runs it. */
function runCommand(io: Io): Command {
  return withBrokerFlags(new Command('run'))
    .description('run the validator: challenge devices, check and store their heartbeats, score each epoch and sign attestations (until SIGTERM)')
    .requiredOption('--fleet <name>', 'the fleet to validate')
    .requiredOption('--state-dir <dir>', 'where the validator keeps its store and key')
    .option('--key <file>', 'the validator key (cairn fleet keygen; default: <state-dir>/validator.key, made on first run)')
    .option('--slot <s>', 'slot length', '60')
    .option('--epoch-slots <n>', 'slots per epoch', '60')
    .option('--max-age <s>', 'oldest heartbeat accepted (default: one slot)')
    .option('--max-skew <s>', 'largest clock difference accepted', '30')
    .option('--challenges-per-epoch <n>', 'random challenges per device and epoch', '2')
    .option('--challenge-timeout <s>', 'how long a device has to answer one (default: min(10, slot/2))')
    .option('--retention-days <d>', 'days of heartbeats and evidence kept', '30')
    .option('--instance <name>', 'this process among several sharing one store (1-32 letters, digits, - or _)', '1')
    .option('--share-group <name>', 'MQTT shared-subscription group of processes splitting the load (default: one per validator key)')
    .option('--no-share', 'a plain subscription: this process alone sees every heartbeat')
    .option('--log-level <level>', 'fatal, error, warn, info, debug or trace', 'info')
    .addHelpText(
      'after',
      `
Example:
  cairn validator --broker mqtt://broker:1883 --fleet demo --state-dir /var/lib/cairn-validator`,
    )
    .action(async (o: RunOptions) => io.setExitCode(await runValidator(o, io)))
}

export function validatorCommand(io: Io): Command {
  const id = new Command('id')
    .description("print the validator's key id and where its public key is (made in the state dir if there is none)")
    .option('--state-dir <dir>', "the validator's state dir")
    .option('--key <file>', 'the validator key file instead')
    .addHelpText('after', '\nExample:\n  cairn validator id --state-dir /var/lib/cairn-validator')
    .action((o: { stateDir?: string; key?: string }) => {
      if (!o.stateDir && !o.key) throw new CairnError('BAD_REQUEST', '--state-dir DIR or --key FILE is required')
      const key = validatorKey(o.stateDir ?? '.', o.key)
      io.out.write(`validator id: ${key.keyId}\npublic key: ${o.key ? o.key : join(o.stateDir!, VALIDATOR_KEY_FILE)}.pub\n`)
    })
  const exportCommand = new Command('export')
    .description("write one device's epoch as a signed, self-contained proof file (check it with cairn verify)")
    .requiredOption('--state-dir <dir>', "the validator's state dir")
    .requiredOption('--device <id>', 'the device id')
    .requiredOption('--epoch <n>', 'the epoch number')
    .requiredOption('--out <file>', 'where to write the proof file')
    .option('--key <file>', 'the validator key (default: <state-dir>/validator.key)')
    .addHelpText('after', '\nExample:\n  cairn validator export --state-dir /var/lib/cairn-validator --device <device-id> --epoch 42 --out e.json')
    .action((o: ExportOptions) => exportCmd(o, io.out))
  const evidence = new Command('evidence')
    .description('write the recorded fraud evidence, one file per item, each checkable by cairn verify')
    .requiredOption('--state-dir <dir>', "the validator's state dir")
    .requiredOption('--out-dir <dir>', 'where to write the files')
    .option('--device <id>', 'only this device')
    .option('--kind <kind>', 'only this kind of evidence')
    .addHelpText('after', '\nExample:\n  cairn validator evidence --state-dir /var/lib/cairn-validator --out-dir evidence/')
    .action((o: { stateDir: string; outDir: string; device?: string; kind?: string }) => evidenceCmd(o, io.out))
  return new Command('validator')
    .description('the network validator: run it (the default), print its id, export proofs and evidence')
    .addCommand(runCommand(io), { isDefault: true })
    .addCommand(id)
    .addCommand(exportCommand)
    .addCommand(evidence)
    .addHelpText(
      'after',
      `
cairn validator [options] is cairn validator run [options] (cairn validator run --help).

Examples:
  cairn validator --broker mqtt://broker:1883 --fleet demo --state-dir /var/lib/cairn-validator --slot 60
  cairn validator id --state-dir /var/lib/cairn-validator
  cairn validator export --state-dir /var/lib/cairn-validator --device <device-id> --epoch 42 --out e.json`,
    )
}

async function runValidator(values: RunOptions, io: { out: Out }): Promise<number> {
  if (!/^[A-Za-z0-9_-]{1,32}$/.test(values.instance)) throw new CairnError('BAD_REQUEST', '--instance: 1-32 letters, digits, - or _')
  const { url, clientOptions } = brokerConnection(values)
  const params = scoreParams(values)
  const log = createLogger({ level: values.logLevel as Level })
  const stateDir = values.stateDir
  const key = validatorKey(stateDir, values.key)
  const validator = new Validator({
    brokerUrl: url,
    mqtt: clientOptions,
    fleet: values.fleet,
    stateDir,
    key,
    params,
    instance: values.instance,
    // The group is per validator: independent validators on one broker must each see
    // every heartbeat, not split them.
    shareGroup: values.share ? (values.shareGroup ?? `cairn-val-${key.keyId.slice(0, 16)}`) : null,
    challengesPerEpoch: num(values.challengesPerEpoch, 'challenges-per-epoch', 0, 100_000) ?? 2,
    challengeTimeoutMs: Math.round((num(values.challengeTimeout, 'challenge-timeout', 0.05, 600) ?? Math.min(10, params.slotMs / 2000)) * 1000),
    retentionDays: num(values.retentionDays, 'retention-days', 1, 36_500) ?? 30,
    clock: systemClock,
    log,
  })
  io.out.write(`validator ${key.keyId} (fleet ${values.fleet}, slot ${params.slotMs} ms, epoch ${params.epochSlots} slots)\n`)
  try {
    await validator.start()
  } catch (err) {
    // A broker out of reach at the start: close the store and stop retrying, then say so.
    await validator.stop()
    throw err
  }
  await new Promise<void>(resolve => {
    const onSignal = () => resolve()
    process.once('SIGTERM', onSignal)
    process.once('SIGINT', onSignal)
  })
  await validator.stop()
  return 0
}

interface ExportOptions {
  stateDir: string
  device: string
  epoch: string
  out: string
  key?: string
}

function exportCmd(values: ExportOptions, out: Out): void {
  const epoch = num(values.epoch, 'epoch', 0)!
  const stateDir = values.stateDir
  if (!existsSync(join(stateDir, 'validator.db'))) throw new CairnError('STATE_DIR', `${stateDir}: no validator store here`)
  const db = openValidatorDb(stateDir)
  try {
    const key = existingValidatorKey(stateDir, values.key, db)
    const params = storedParams(db)
    if (!params) throw new CairnError('STATE_DIR', `${stateDir}: the validator has not run yet`)
    const fleet = getMeta(db, 'fleet')
    if (!fleet) throw new CairnError('STATE_DIR', `${stateDir}: the validator has not run yet`)
    const x = buildExport(db, key, fleet, params, values.device, epoch, Date.now())
    writeFileSync(values.out, JSON.stringify(x, null, 1) + '\n')
    const c = x.attestation.body.counts
    out.write(`wrote ${values.out}: epoch ${epoch}, ${x.heartbeats.length} heartbeats, ${c.slotsCovered}/${c.slotsLive} slots, score ${x.attestation.body.score} ppm\n`)
  } finally {
    db.close()
  }
}

/** Writes recorded fraud evidence as one file per item, each checkable by `cairn verify`. */
function evidenceCmd(values: { stateDir: string; outDir: string; device?: string; kind?: string }, out: Out): void {
  const stateDir = values.stateDir
  if (!existsSync(join(stateDir, 'validator.db'))) throw new CairnError('STATE_DIR', `${stateDir}: no validator store here`)
  const db = openValidatorDb(stateDir)
  try {
    const rows = db
      .prepare('SELECT id, device, kind, payload FROM evidence WHERE (? IS NULL OR device = ?) AND (? IS NULL OR kind = ?) ORDER BY created, id')
      .all(values.device ?? null, values.device ?? null, values.kind ?? null, values.kind ?? null) as Array<{ id: string; device: string; kind: string; payload: Buffer }>
    mkdirSync(values.outDir, { recursive: true })
    for (const r of rows) {
      const file = join(values.outDir, `${r.kind}-${r.device.slice(0, 12)}-${r.id}.json`)
      // The canonical bytes, so the OpenSSL recipe in docs/proofs.md works on the file.
      writeFileSync(file, encodeProof(JSON.parse(r.payload.toString()) as Envelope))
      out.write(`${file}\n`)
    }
    out.write(`${rows.length} evidence file(s)\n`)
  } finally {
    db.close()
  }
}

export function verifyCommand(io: { out: Out; setExitCode(code: number): void }): Command {
  return new Command('verify')
    .description('check a proof or evidence file offline (cairn validator export, evidence): signatures, and the recomputed score')
    .argument('<file>', 'the proof file')
    .option('--validator <key>', "the validator's key id or public key file: require this validator (payouts must)")
    .addHelpText(
      'after',
      `
Exit 0 and OK when valid, 1 and INVALID when not.

Examples:
  cairn verify e.json --validator validator.key.pub
  cairn verify e.json --validator <validator-key-id>`,
    )
    .action((file: string, o: { validator?: string }) => io.setExitCode(verifyFile(file, o.validator, io.out)))
}

function verifyFile(file: string, validator: string | undefined, out: Out): number {
  let value: unknown
  try {
    value = JSON.parse(readFileSync(file, 'utf8'))
  } catch (err) {
    throw new CairnError('BAD_JSON', `${file}: ${(err as NodeJS.ErrnoException).code ?? 'not JSON'}`)
  }
  try {
    // --validator takes a key id or a public key file.
    const pinned = validator === undefined ? undefined : existsSync(validator) ? keyIdOf(readPublicKeyFile(validator)) : validator
    const report = verifyProofFile(value, pinned !== undefined ? { validator: pinned } : {})
    // Anyone can make a validator key: without a pinned one, a valid file only shows
    // that SOME key signed a consistent record. Payout code must pass --validator.
    const pin = validator === undefined ? `\nWARNING: validator key not pinned; pass --validator ${report.validator} to require this validator` : ''
    out.write(report.lines.join('\n') + pin + '\nOK\n')
    return 0
  } catch (err) {
    if (!(err instanceof CairnError)) throw err
    out.write(`INVALID: ${err.message}\n`)
    return 1
  }
}
