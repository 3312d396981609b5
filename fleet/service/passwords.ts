// Password hashes for the fleet service's accounts: scrypt (Node's own, RFC 7914) with a
// fresh 16-byte salt, in a self-describing text `scrypt$<log2 N>$<r>$<p>$<salt>$<hash>`
// (base64url), so the cost can be raised later and old hashes still verify.

import { randomBytes, scrypt as scryptCb, timingSafeEqual, type ScryptOptions } from 'node:crypto'
import { CairnError } from '../../protocol/errors.js'

/** N = 2^15, r = 8: 32 MiB and ~50-100 ms a hash on a Pi 4 or this machine (OWASP's floor is 2^17 at r=8, p=1 for 128 MiB; we
 * keep 32 MiB because a Pi-class fleet host may run it). */
const LOG_N = 15
const R = 8
const P = 1
const KEY_BYTES = 32
const MIN_PASSWORD_LENGTH = 10
const MAX_PASSWORD_LENGTH = 1024

function scrypt(password: string, salt: Buffer, logN: number, r: number, p: number): Promise<Buffer> {
  const opts: ScryptOptions = { N: 2 ** logN, r, p, maxmem: 2 * 128 * r * 2 ** logN + 1024 * 1024 }
  return new Promise((resolve, reject) => scryptCb(password.normalize('NFC'), salt, KEY_BYTES, opts, (err, key) => (err ? reject(err) : resolve(key))))
}

/** A password fit for an account: long enough, not absurdly long. Throws BAD_REQUEST with the reason. */
export function checkPassword(password: string): void {
  if (password.length < MIN_PASSWORD_LENGTH) throw new CairnError('BAD_REQUEST', `a password has at least ${MIN_PASSWORD_LENGTH} characters`)
  if (password.length > MAX_PASSWORD_LENGTH) throw new CairnError('BAD_REQUEST', `a password has at most ${MAX_PASSWORD_LENGTH} characters`)
}

export async function hashPassword(password: string): Promise<string> {
  checkPassword(password)
  const salt = randomBytes(16)
  const key = await scrypt(password, salt, LOG_N, R, P)
  return ['scrypt', LOG_N, R, P, salt.toString('base64url'), key.toString('base64url')].join('$')
}

/** Whether `password` matches `stored`; false for a malformed hash, never a throw. */
export async function verifyPassword(password: string, stored: string): Promise<boolean> {
  const m = /^scrypt\$(\d{1,2})\$(\d{1,2})\$(\d{1,2})\$([A-Za-z0-9_-]{16,64})\$([A-Za-z0-9_-]{32,128})$/.exec(stored)
  if (!m || password.length > MAX_PASSWORD_LENGTH) return false
  const [logN, r, p] = [Number(m[1]), Number(m[2]), Number(m[3])]
  if (logN < 10 || logN > 20 || r < 1 || r > 32 || p < 1 || p > 4) return false
  const want = Buffer.from(m[5]!, 'base64url')
  const got = await scrypt(password, Buffer.from(m[4]!, 'base64url'), logN, r, p)
  return got.length === want.length && timingSafeEqual(got, want)
}

/** Spends a hash's time for a name with no account, so a login's timing does not tell
 * which names exist. */
export async function burnPasswordTime(password: string): Promise<void> {
  await scrypt(password.slice(0, MAX_PASSWORD_LENGTH), Buffer.alloc(16), LOG_N, R, P)
}
