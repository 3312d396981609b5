// TUF keys for the release repository: the TUF key object of an ed25519 key, its key id
// (TUF spec: the SHA-256 of the canonical JSON of the key object, which @tufjs/models
// leaves to the caller), signers for @tufjs/models' Metadata.sign, and the on-disk key
// store `<repo>/keys/<role>.<keyid>.key` (PKCS#8 PEM, 0600).

import { createHash, createPrivateKey, createPublicKey, sign, type KeyObject } from 'node:crypto'
import { existsSync, mkdirSync, readFileSync, renameSync, statSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { Key, Signature } from '@tufjs/models'
import { canonicalJson } from '../protocol/canonical.js'
import { CairnError } from '../protocol/errors.js'
import { writeFileAtomic } from '../protocol/durable-files.js'
import { generateKeyPair, rawPublicKey } from '../protocol/keys.js'

export type RoleName = 'root' | 'targets' | 'snapshot' | 'timestamp'
export const ROLES: readonly RoleName[] = ['root', 'targets', 'snapshot', 'timestamp']

export interface TufSigner {
  readonly role: RoleName
  readonly keyId: string
  readonly key: Key
  readonly privateKey: KeyObject
}

/** The TUF key object of an ed25519 public key (keyval.public in hex, as python-tuf writes it). */
export function tufKeyJson(publicKey: KeyObject): { keytype: 'ed25519'; scheme: 'ed25519'; keyval: { public: string } } {
  return { keytype: 'ed25519', scheme: 'ed25519', keyval: { public: Buffer.from(rawPublicKey(publicKey)).toString('hex') } }
}

/** Key id per the TUF spec: hex SHA-256 of the canonical JSON of the key object. The
 * object holds only ASCII strings, where RFC 8785 (protocol/canonical.ts) and TUF's OLPC
 * canonical JSON produce the same bytes. */
function tufKeyId(publicKey: KeyObject): string {
  return createHash('sha256')
    .update(canonicalJson(tufKeyJson(publicKey)))
    .digest('hex')
}

function tufKey(publicKey: KeyObject): Key {
  const json = tufKeyJson(publicKey)
  return new Key({ keyID: tufKeyId(publicKey), keyType: json.keytype, scheme: json.scheme, keyVal: json.keyval })
}

function signerOf(role: RoleName, privateKey: KeyObject): TufSigner {
  const key = tufKey(createPublicKey(privateKey))
  return { role, keyId: key.keyID, key, privateKey }
}

/** Adds this signer's signature to `md` (over the canonical JSON of `signed`). */
export function signWith(md: { sign(signer: (data: Buffer) => Signature, append?: boolean): void }, signer: TufSigner): void {
  md.sign(data => new Signature({ keyID: signer.keyId, sig: sign(null, data, signer.privateKey).toString('hex') }))
}

/** Private keys on disk, one file per key, named by role and key id, in one or more
 * directories (an offline medium for root and targets, the publishing machine's for the
 * online roles). Directories are 0700 and never under the published tree. `retired/`
 * keeps rotated-out keys until the operator destroys them. */
export class KeyStore {
  readonly dirs: readonly string[]

  constructor(dirs: string | readonly string[]) {
    this.dirs = typeof dirs === 'string' ? [dirs] : [...dirs]
    if (this.dirs.length === 0) throw new CairnError('BAD_REQUEST', 'no key directory given')
  }

  /** Makes a key for `role`, written next to the role's current keys (found in `near`),
   * else into the first directory. */
  generate(role: RoleName, near: readonly string[] = []): TufSigner {
    const dir = this.dirs.find(d => near.some(id => existsSync(join(d, `${role}.${id}.key`)))) ?? this.dirs[0]!
    mkdirSync(dir, { recursive: true, mode: 0o700 })
    const { privateKey } = generateKeyPair() // protocol/keys.ts: avoids a Node 20 key-export deadlock
    const signer = signerOf(role, privateKey)
    writeFileAtomic(join(dir, `${role}.${signer.keyId}.key`), privateKey.export({ format: 'pem', type: 'pkcs8' }).toString(), { mode: 0o600, exclusive: true })
    return signer
  }

  /** The file holding a key, if any directory has it. */
  fileOf(role: RoleName, keyId: string): string | undefined {
    return this.dirs.map(d => join(d, `${role}.${keyId}.key`)).find(f => existsSync(f))
  }

  /** The signers held here for `role` whose key ids are in `keyIds` (the role's keys in root). */
  signers(role: RoleName, keyIds: readonly string[]): TufSigner[] {
    const out: TufSigner[] = []
    for (const id of keyIds) {
      const file = this.fileOf(role, id)
      if (!file) continue
      const mode = statSync(file).mode & 0o777
      if ((mode & 0o077) !== 0) throw new CairnError('TUF_KEYS', `${file}: private key is readable by others (mode ${mode.toString(8)}); run: chmod 600 ${file}`)
      let signer: TufSigner
      try {
        signer = signerOf(role, createPrivateKey(readFileSync(file, 'utf8')))
      } catch (err) {
        throw new CairnError('TUF_KEYS', `${file}: not an ed25519 PKCS#8 PEM private key`, { cause: err })
      }
      if (signer.keyId !== id) throw new CairnError('TUF_KEYS', `${file}: holds key ${signer.keyId}, not the key its name says`)
      out.push(signer)
    }
    return out
  }

  /** Signers for `role` meeting `threshold`, or a TUF_KEYS error saying which keys are missing. */
  require(role: RoleName, keyIds: readonly string[], threshold: number): TufSigner[] {
    const have = this.signers(role, keyIds)
    if (have.length < threshold) {
      const missing = keyIds.filter(id => !have.some(s => s.keyId === id)).map(id => `${role}.${id}.key`)
      throw new CairnError(
        'TUF_KEYS',
        `signing ${role} needs ${threshold} of its keys, ${have.length} found in ${this.dirs.join(', ')}; missing: ${missing.join(', ')} (mount the offline keys and pass --keys DIR)`,
      )
    }
    return have
  }

  /** Moves a rotated-out key to retired/ beside it (not deleted: the operator destroys it). */
  retire(role: RoleName, keyId: string): void {
    const from = this.fileOf(role, keyId)
    if (!from) return
    const dir = join(dirname(from), 'retired')
    mkdirSync(dir, { recursive: true, mode: 0o700 })
    renameSync(from, join(dir, `${role}.${keyId}.key`))
  }
}
