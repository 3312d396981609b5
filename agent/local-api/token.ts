// The local API's bearer token: 32 random bytes (base64url) in a file the agent makes
// on first start, mode 0640 so the device's `cairn` group (Node-RED, owners' scripts)
// can read it and nobody else. Kept apart from the server so the client bundle, which
// only reads it, pulls in nothing else.
//
// On Cairn OS the file lives in /var/lib/cairn, which the `cairn` group can write to
// (root:cairn 1775). A group member could plant a symlink or a file of its own there
// before the agent starts, so the agent never follows a link, refuses a file it does not
// own, and writes a new token to a fresh file that it renames into place.

import { createHash, randomBytes, timingSafeEqual } from 'node:crypto'
import { closeSync, constants, fchmodSync, fstatSync, fsyncSync, lstatSync, openSync, readFileSync, renameSync, unlinkSync, writeSync } from 'node:fs'

export const TOKEN_FILE = 'api.token'
export const SOCKET_FILE = 'api.sock'
const TOKEN_RE = /^[A-Za-z0-9_-]{16,256}$/

/** The token in `file` (surrounding whitespace ignored). Throws with a `code` of
 * 'UNAUTHORIZED' when the file cannot be read or holds no token. */
export function readTokenFile(file: string): string {
  let text: string
  try {
    text = readFileSync(file, 'utf8').trim()
  } catch (err) {
    throw Object.assign(new Error(`cannot read the local API token ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message} (is this user in the cairn group?)`), {
      code: 'UNAUTHORIZED',
    })
  }
  if (!TOKEN_RE.test(text)) throw Object.assign(new Error(`${file} does not hold a local API token`), { code: 'UNAUTHORIZED' })
  return text
}

const refuse = (message: string) => Object.assign(new Error(message), { code: 'INVALID_CONFIG' })

/** Reads the token, or makes one when the file is missing. A file holding something
 * that is not a token is replaced, so a truncated write cannot lock every client out.
 * A symlink, a non-regular file or a file owned by another user is refused (code
 * 'INVALID_CONFIG'), never followed, rewritten or chmod-ed. */
export function loadOrCreateToken(file: string): { token: string; created: boolean } {
  let exists = true
  try {
    const st = lstatSync(file)
    if (!st.isFile()) throw refuse(`${file} is ${st.isSymbolicLink() ? 'a symlink' : 'not a regular file'}; the local API token must be a plain file: remove it`)
    const uid = process.getuid?.()
    if (uid !== undefined && st.uid !== uid) throw refuse(`${file} belongs to uid ${st.uid}, not to the agent (uid ${uid}); remove it so the agent can make its own token`)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err
    exists = false
  }
  if (exists) {
    // O_NOFOLLOW: the file cannot have been swapped for a link since the lstat.
    const fd = openSync(file, constants.O_RDONLY | constants.O_NOFOLLOW)
    try {
      const text = readFileSync(fd, 'utf8').trim()
      if (TOKEN_RE.test(text)) {
        if ((fstatSync(fd).mode & 0o777) !== 0o640) fchmodSync(fd, 0o640) // tighten a file someone made by hand
        return { token: text, created: false }
      }
    } finally {
      closeSync(fd)
    }
  }
  const token = randomBytes(32).toString('base64url')
  // A fresh file (O_EXCL: never an existing one, never through a link) with its final
  // mode from the start, renamed over the old one: no reader ever sees a partial token,
  // and no moment exists where the new token sits in a file with looser permissions.
  const tmp = `${file}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`
  const fd = openSync(tmp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o640)
  try {
    try {
      fchmodSync(fd, 0o640) // the umask may have taken group read away
      writeSync(fd, token + '\n')
      fsyncSync(fd)
    } finally {
      closeSync(fd)
    }
    renameSync(tmp, file)
  } catch (err) {
    try {
      unlinkSync(tmp)
    } catch {
      // already renamed or never made
    }
    throw err
  }
  return { token, created: true }
}

/** Constant-time comparison of an `Authorization` header with the token. */
export function tokenMatches(header: string | undefined, token: string): boolean {
  const m = /^Bearer\s+(\S+)\s*$/i.exec(header ?? '')
  if (!m) return false
  // Hash both so the comparison takes the same time whatever the lengths.
  const a = createHash('sha256').update(m[1]!).digest()
  const b = createHash('sha256').update(token).digest()
  return timingSafeEqual(a, b)
}
