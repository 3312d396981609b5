// Files that survive a power cut whole: new content goes to a temporary file in the same
// directory, is fsync'd, renamed over the old name, and the directory is fsync'd, so a
// crash at any point leaves the old file or the new one, never a mix. The agent, the
// OTA tools and the OS update helper all write their state this way.
// (ota/launcher.mjs keeps a copy: it is plain JavaScript that may import nothing.)

import { closeSync, fsyncSync, openSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { open } from 'node:fs/promises'
import { basename, dirname, join } from 'node:path'
import { CairnError } from './errors.js'

export interface AtomicWriteOptions {
  /** Permission bits of the new file (the umask still applies); default 0o644. */
  mode?: number
  /** Refuse to replace an existing file (a private key): BAD_REQUEST, nothing written. */
  exclusive?: boolean
  /** Throw when the directory cannot be fsync'd instead of going on (see fsyncDirSync). */
  requireDirSync?: boolean
}

export function writeFileAtomic(file: string, data: string | Uint8Array, opts: AtomicWriteOptions = {}): void {
  const dir = dirname(file)
  const tmp = join(dir, `.${basename(file)}.${process.pid}.tmp`)
  // A temp file left by a crash keeps its old mode if reopened: remove it and create
  // afresh (O_EXCL), so a private key is never written into a file others can read.
  rmSync(tmp, { force: true })
  const fd = openSync(tmp, 'wx', opts.mode ?? 0o644)
  try {
    try {
      writeFileSync(fd, data) // all of it: one write(2) may be short
      fsyncSync(fd)
    } finally {
      closeSync(fd)
    }
    // Checked as late as possible; a writer that races this one is not expected (one
    // process owns each such file), so a stat is enough.
    if (opts.exclusive && exists(file)) throw new CairnError('BAD_REQUEST', `${file} already exists; refusing to overwrite it`)
    renameSync(tmp, file)
  } catch (err) {
    rmSync(tmp, { force: true })
    throw err
  }
  fsyncDirSync(dir, { required: opts.requireDirSync === true })
}

/**
 * Makes creations, renames and removals inside `dir` durable. Some file systems refuse to
 * open a directory at all; by default that is ignored (best effort), `required` throws.
 */
export function fsyncDirSync(dir: string, opts: { required?: boolean } = {}): void {
  try {
    const fd = openSync(dir, 'r')
    try {
      fsyncSync(fd)
    } finally {
      closeSync(fd)
    }
  } catch (err) {
    if (opts.required) throw err
  }
}

/** fsyncDirSync off the event loop, for code that writes while serving. */
export async function fsyncDir(dir: string, opts: { required?: boolean } = {}): Promise<void> {
  try {
    const fh = await open(dir, 'r')
    try {
      await fh.sync()
    } finally {
      await fh.close()
    }
  } catch (err) {
    if (opts.required) throw err
  }
}

function exists(file: string): boolean {
  try {
    statSync(file)
    return true
  } catch {
    return false
  }
}
