// ed25519 keys: generation, PEM files (PKCS#8 private, SPKI public), and key ids.
// A key id is the lowercase base32 of the raw 32-byte public key: self-certifying
// (anyone can verify a signature from the id alone) and safe in topics and file names.

import { createPrivateKey, createPublicKey, generateKeyPairSync, type KeyObject } from 'node:crypto'
import { readFileSync, statSync } from 'node:fs'
import { base32Decode, base32Encode } from './base32.js'
import { writeFileAtomic as writeDurable } from './durable-files.js'
import { CairnError } from './errors.js'

const KEY_ID_RE = /^[a-z2-7]{52}$/

export interface KeyPair {
  readonly privateKey: KeyObject
  readonly publicKey: KeyObject
  readonly keyId: string
}

// SPKI DER of an ed25519 public key = this 12-byte prefix || the 32 raw key bytes.
const SPKI_PREFIX = Buffer.from('302a300506032b6570032100', 'hex')
// PKCS#8 DER of an ed25519 private key = this 16-byte prefix || the 32-byte seed.
const PKCS8_PREFIX = Buffer.from('302e020100300506032b657004220420', 'hex')

export function generateKeyPair(): KeyPair {
  // Made as DER and re-imported: Node 20.20 can deadlock exporting a freshly generated
  // key as JWK while a GC finalises the key-generation job (seen in 3 of ~40 processes
  // making 5,000 keys each). DER round trips never touch that path.
  const { privateKey: der } = generateKeyPairSync('ed25519', { privateKeyEncoding: { format: 'der', type: 'pkcs8' }, publicKeyEncoding: { format: 'der', type: 'spki' } })
  const privateKey = createPrivateKey({ key: der, format: 'der', type: 'pkcs8' })
  const publicKey = createPublicKey(privateKey)
  return { privateKey, publicKey, keyId: keyIdOf(publicKey) }
}

/** The key pair of a fixed 32-byte seed (an RFC 8032 private key, hex): for published
 * test vectors only; a real key never comes from a known seed. */
export function keyPairFromSeed(seedHex: string): KeyPair {
  const der = Buffer.concat([PKCS8_PREFIX, Buffer.from(seedHex, 'hex')])
  const privateKey = createPrivateKey({ key: der, format: 'der', type: 'pkcs8' })
  const publicKey = createPublicKey(privateKey)
  return { privateKey, publicKey, keyId: keyIdOf(publicKey) }
}

export function rawPublicKey(publicKey: KeyObject): Uint8Array {
  if (publicKey.asymmetricKeyType !== 'ed25519') throw new CairnError('BAD_REQUEST', 'not an ed25519 public key')
  const der = publicKey.export({ format: 'der', type: 'spki' })
  if (der.length !== 44 || !der.subarray(0, 12).equals(SPKI_PREFIX)) throw new CairnError('BAD_REQUEST', 'not an ed25519 public key')
  return new Uint8Array(der.subarray(12))
}

export function keyIdOf(publicKey: KeyObject): string {
  return base32Encode(rawPublicKey(publicKey))
}

export function isKeyId(text: string): boolean {
  return KEY_ID_RE.test(text) && base32Decode(text)?.length === 32
}

export function publicKeyFromKeyId(keyId: string): KeyObject {
  const raw = isKeyId(keyId) ? base32Decode(keyId) : null
  if (!raw) throw new CairnError('BAD_REQUEST', `not a key id: ${JSON.stringify(keyId.slice(0, 80))}`)
  return createPublicKey({ key: Buffer.concat([SPKI_PREFIX, raw]), format: 'der', type: 'spki' })
}

/** Parses a public key given as SPKI PEM, or as a bare key id. */
export function parsePublicKey(text: string, what: string): KeyObject {
  const trimmed = text.trim()
  if (isKeyId(trimmed)) return publicKeyFromKeyId(trimmed)
  let key: KeyObject
  try {
    key = createPublicKey(trimmed)
  } catch (err) {
    throw new CairnError('BAD_REQUEST', `${what}: not a PEM public key or key id`, { cause: err })
  }
  if (key.asymmetricKeyType !== 'ed25519') throw new CairnError('BAD_REQUEST', `${what}: key is ${key.asymmetricKeyType}, expected ed25519`)
  return key
}

export function readPublicKeyFile(file: string): KeyObject {
  let text: string
  try {
    text = readFileSync(file, 'utf8')
  } catch (err) {
    throw new CairnError('BAD_REQUEST', `${file}: cannot read public key (${(err as NodeJS.ErrnoException).code ?? err})`, { cause: err })
  }
  return parsePublicKey(text, file)
}

/** Reads a private key file, refusing files that others can read (as ssh does). */
export function readKeyPairFile(file: string): KeyPair {
  let st
  let text: string
  try {
    st = statSync(file)
    text = readFileSync(file, 'utf8')
  } catch (err) {
    throw new CairnError('BAD_REQUEST', `${file}: cannot read private key (${(err as NodeJS.ErrnoException).code ?? err})`, { cause: err })
  }
  // Checked before the mode: a public key is meant to be readable, and "chmod 600" would
  // send the user after the wrong fix.
  if (isPublicKeyText(text)) {
    const hint = file.endsWith('.pub') ? ` (${file.slice(0, -4)}, without .pub)` : ''
    throw new CairnError('BAD_REQUEST', `${file}: that is a public key; this needs the private key file${hint}`)
  }
  if ((st.mode & 0o077) !== 0) {
    throw new CairnError('BAD_REQUEST', `${file}: private key is readable by others (mode ${(st.mode & 0o777).toString(8)}); run: chmod 600 ${file}`)
  }
  let privateKey: KeyObject
  try {
    privateKey = createPrivateKey(text)
  } catch (err) {
    throw new CairnError('BAD_REQUEST', `${file}: not a PEM (PKCS#8) private key`, { cause: err })
  }
  if (privateKey.asymmetricKeyType !== 'ed25519') throw new CairnError('BAD_REQUEST', `${file}: key is ${privateKey.asymmetricKeyType}, expected ed25519`)
  const publicKey = createPublicKey(privateKey)
  return { privateKey, publicKey, keyId: keyIdOf(publicKey) }
}

/** A PEM public key (SPKI, or an OpenSSH-style one-liner) or a bare key id. */
function isPublicKeyText(text: string): boolean {
  const t = text.trim()
  return /^-----BEGIN (RSA )?PUBLIC KEY-----/.test(t) || /^ssh-[a-z0-9-]+ /.test(t) || isKeyId(t)
}

function privateKeyPem(pair: KeyPair): string {
  return pair.privateKey.export({ format: 'pem', type: 'pkcs8' }).toString()
}

export function publicKeyPem(publicKey: KeyObject): string {
  return publicKey.export({ format: 'pem', type: 'spki' }).toString()
}

/** Writes a key pair as FILE (private, 0600) and FILE.pub, each atomically and durably.
 * Never overwrites an existing private key. */
export function writeKeyPairFiles(file: string, pair: KeyPair): void {
  writeDurable(file, privateKeyPem(pair), { mode: 0o600, exclusive: true })
  writeDurable(`${file}.pub`, publicKeyPem(pair.publicKey), { mode: 0o644 })
}
