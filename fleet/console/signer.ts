// The operator's key in the browser: made here or imported from a `cairn keygen` file,
// kept in this browser's IndexedDB as a non-extractable Web Crypto key (the page can
// sign with it; no script, this one included, can read it back out), and never sent to
// the fleet service. Commands are signed here, in the protocol's one envelope
// (protocol/signing-input.ts gives the bytes), and the service only relays them.

import { base32Encode } from '../../protocol/base32.js'
import type { Json } from '../../protocol/canonical.js'
import { base64url, newId } from '../../protocol/ids.js'
import { signingInput } from '../../protocol/signing-input.js'

export interface OperatorKey {
  /** lowercase base32 of the raw public key: what a device trusts (`--operator-key`, operator-add) */
  keyId: string
  privateKey: CryptoKey
  source: 'made here' | 'imported'
  created: number
}

export interface SignedCommand {
  v: 1
  type: string
  id: string
  fleet: string
  sub: string
  iss: string
  iat: number
  exp: number
  body: Json
  sig: string
}

const DB = 'cairn-console'
const STORE = 'keys'
const SLOT = 'operator'
const ED25519 = { name: 'Ed25519' } as const

function open(): Promise<IDBDatabase> {
  return new Promise((resolve, reject) => {
    const req = indexedDB.open(DB, 1)
    req.onupgradeneeded = () => req.result.createObjectStore(STORE)
    req.onsuccess = () => resolve(req.result)
    req.onerror = () => reject(req.error ?? new Error('IndexedDB is not available'))
  })
}

async function tx<T>(mode: IDBTransactionMode, run: (s: IDBObjectStore) => IDBRequest): Promise<T> {
  const db = await open()
  try {
    return await new Promise<T>((resolve, reject) => {
      const req = run(db.transaction(STORE, mode).objectStore(STORE))
      req.onsuccess = () => resolve(req.result as T)
      req.onerror = () => reject(req.error ?? new Error('IndexedDB request failed'))
    })
  } finally {
    db.close()
  }
}

let signs: Promise<boolean> | undefined

/** Whether this browser can sign: Web Crypto on a secure origin (such as 127.0.0.1), with
 * Ed25519 (tried once), and IndexedDB to keep the key in. */
export function canSign(): Promise<boolean> {
  signs ??=
    typeof crypto === 'undefined' || crypto.subtle === undefined || typeof indexedDB === 'undefined'
      ? Promise.resolve(false)
      : crypto.subtle.generateKey(ED25519, false, ['sign']).then(
          () => true,
          () => false,
        )
  return signs
}

export const loadKey = (): Promise<OperatorKey | undefined> => tx<OperatorKey | undefined>('readonly', s => s.get(SLOT))

export async function forgetKey(): Promise<void> {
  await tx('readwrite', s => s.delete(SLOT))
}

async function keep(key: OperatorKey): Promise<OperatorKey> {
  await tx('readwrite', s => s.put(key, SLOT))
  return key
}

/** A new key, made in this browser; only its public half can ever leave it. */
export async function makeKey(): Promise<OperatorKey> {
  const pair = (await crypto.subtle.generateKey(ED25519, false, ['sign', 'verify'])) as CryptoKeyPair
  const raw = new Uint8Array(await crypto.subtle.exportKey('raw', pair.publicKey))
  return keep({ keyId: base32Encode(raw), privateKey: pair.privateKey, source: 'made here', created: Date.now() })
}

/** A `cairn keygen` private key file (PEM, PKCS#8): imported once to learn its public
 * half, then again as a key that cannot be exported. */
export async function importKey(pem: string): Promise<OperatorKey> {
  const m = /-----BEGIN PRIVATE KEY-----([A-Za-z0-9+/=\s]+)-----END PRIVATE KEY-----/.exec(pem)
  if (!m) throw new Error('not a PEM private key (PKCS#8, "BEGIN PRIVATE KEY"), as cairn keygen writes')
  let der: Uint8Array<ArrayBuffer>
  try {
    der = Uint8Array.from(atob(m[1]!.replace(/\s+/g, '')), c => c.charCodeAt(0))
  } catch {
    throw new Error('the PEM is not valid base64')
  }
  let jwk: JsonWebKey
  try {
    jwk = await crypto.subtle.exportKey('jwk', await crypto.subtle.importKey('pkcs8', der, ED25519, true, ['sign']))
  } catch {
    throw new Error('not an ed25519 private key')
  }
  if (!jwk.x) throw new Error('the key has no public half')
  const raw = Uint8Array.from(atob(jwk.x.replace(/-/g, '+').replace(/_/g, '/')), c => c.charCodeAt(0))
  const privateKey = await crypto.subtle.importKey('pkcs8', der, ED25519, false, ['sign'])
  return keep({ keyId: base32Encode(raw), privateKey, source: 'imported', created: Date.now() })
}

export async function signCommand(key: OperatorKey, c: { fleet: string; device: string; name: string; body: Json; ttlMs: number }): Promise<SignedCommand> {
  const now = Date.now()
  const unsigned = { v: 1 as const, type: `cmd.${c.name}`, id: newId(now), fleet: c.fleet, sub: c.device, iss: key.keyId, iat: now, exp: now + c.ttlMs, body: c.body }
  const sig = new Uint8Array(await crypto.subtle.sign(ED25519, key.privateKey, new TextEncoder().encode(signingInput(unsigned))))
  return { ...unsigned, sig: base64url(sig) }
}
