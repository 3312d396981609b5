// Writes a verified OS release into the inactive slot's two partitions, as root. The
// release file sits in the agent's state dir, so the agent could change it while it is
// read, or name a file that is not its own. So nothing from it reaches a partition
// before it verified: the file is opened once (no links followed, no FIFOs), must be the
// agent's own plain file of the signed length, and is copied into root's staging dir
// while its bytes are hashed. Only a copy whose hash is the signed one is unpacked onto
// the partitions, and only from that copy, which no other user can open: what lands on
// the disk is exactly what was signed, and a file that is not never touches it (its
// bytes could otherwise carry any file system label the next boot might mount).

import { execFile, spawn } from 'node:child_process'
import { createHash } from 'node:crypto'
import { closeSync, constants, createReadStream, existsSync, fstatSync, fsyncSync, mkdirSync, openSync, read, readdirSync, readFileSync, readSync, rmSync, writeFileSync, writeSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { promisify } from 'node:util'
import { isZstd, readOsRelease, ReleaseFormatError, type ChunkWriter, type OsReleaseSink } from './release-format.js'

export interface SlotTarget {
  /** the inactive root partition (a block device; a plain file in tests) */
  readonly rootDevice: string
  readonly rootBytes: number
  readonly rootLabel: string
  /** the inactive boot partition */
  readonly bootDevice: string
  readonly bootBytes: number
  readonly bootLabel: string
  /** root's own scratch dir (emptied first, removed after): the verified copy of the
   * release and the boot files */
  readonly staging: string
  /** the uid the release file must belong to (the agent's); any, when undefined (tests) */
  readonly imageOwner?: number
}

export interface Verified {
  readonly length: number
  readonly sha256: string
}

export interface WriteReport {
  readonly rootBytes: number
  readonly bootFiles: number
  readonly seconds: number
}

const run = (cmd: string, args: readonly string[], okCodes: readonly number[] = [0]): Promise<string> =>
  new Promise((resolve, reject) => {
    execFile(cmd, [...args], { env: { ...process.env, MTOOLS_SKIP_CHECK: '1' }, maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      const code = err ? ((err as NodeJS.ErrnoException & { code?: unknown }).code as number | string | undefined) : 0
      if (!err || (typeof code === 'number' && okCodes.includes(code))) return resolve(stdout)
      reject(new Error(`${cmd} ${args.join(' ')}: ${(stderr || err.message).trim().split('\n').slice(-3).join(' / ')}`))
    })
  })

const readAt = promisify(read)

/** Plain-file chunk writer (a boot file in the staging dir). */
function fileWriter(path: string): ChunkWriter {
  let fd: number
  try {
    fd = openSync(path, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') throw new ReleaseFormatError(`the release holds ${path.split('/boot/')[1] ?? path} twice`)
    throw err
  }
  return {
    write: async b => void writeSync(fd, b),
    close: async () => {
      fsyncSync(fd)
      closeSync(fd)
    },
  }
}

/** Writes at the start of an existing device (or file), in order. */
function deviceWriter(path: string): ChunkWriter {
  const fd = openSync(path, constants.O_WRONLY | constants.O_NOFOLLOW)
  let pos = 0
  return {
    write: async b => {
      for (let off = 0; off < b.length;) off += writeSync(fd, b, off, b.length - off, pos + off)
      pos += b.length
    },
    close: async () => {
      fsyncSync(fd)
      closeSync(fd)
    },
  }
}

/** Copies exactly `verified.length` bytes of the agent's file into `dest` (root's),
 * hashing them; refuses before writing a partition unless they are the signed bytes. */
async function copyVerified(image: string, verified: Verified, dest: string, owner: number | undefined): Promise<void> {
  // O_NONBLOCK: a FIFO planted as the image must not hang the helper on open
  const fd = openSync(image, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK)
  try {
    const st = fstatSync(fd)
    if (!st.isFile()) throw new ReleaseFormatError('the release image is not a plain file')
    if (owner !== undefined && st.uid !== owner) throw new ReleaseFormatError(`the release image does not belong to the agent (uid ${owner})`)
    if (st.size !== verified.length) throw new ReleaseFormatError(`the release image is not the signed length (${verified.length} bytes)`)
    const out = openSync(dest, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600)
    const hash = createHash('sha256')
    try {
      const buf = Buffer.allocUnsafe(1 << 20)
      let pos = 0
      // never past the signed length, whatever the file does meanwhile
      while (pos < verified.length) {
        const { bytesRead } = await readAt(fd, buf, 0, Math.min(buf.length, verified.length - pos), pos)
        if (bytesRead === 0) break
        hash.update(buf.subarray(0, bytesRead))
        for (let off = 0; off < bytesRead;) off += writeSync(out, buf, off, bytesRead - off)
        pos += bytesRead
      }
      fsyncSync(out)
      if (pos !== verified.length || hash.digest('hex') !== verified.sha256) throw new ReleaseFormatError('the release image does not match the signed metadata (changed or corrupted after download)')
    } finally {
      closeSync(out)
    }
  } finally {
    closeSync(fd)
  }
}

/** Verifies the release at `image` (a copy in root's staging dir), then unpacks that copy
 * onto `t` and makes the slot bootable: root checked, grown to its partition and
 * labelled; boot partition formatted and filled, its cmdline.txt naming this slot's root. */
export async function writeOsSlot(image: string, version: string, verified: Verified, t: SlotTarget): Promise<WriteReport> {
  const started = Date.now()
  rmSync(t.staging, { recursive: true, force: true })
  mkdirSync(join(t.staging, 'boot'), { recursive: true, mode: 0o700 })
  const copy = join(t.staging, 'release')
  const boot = join(t.staging, 'boot')
  try {
    await copyVerified(image, verified, copy, t.imageOwner)
    // Verified: from here on every byte is the signed release's.
    const result = await unpack(copy, version, t, boot)
    await run('e2fsck', ['-f', '-p', t.rootDevice], [0, 1])
    await run('resize2fs', [t.rootDevice])
    await run('e2label', [t.rootDevice, t.rootLabel])
    const cmdlineFile = join(boot, 'cmdline.txt')
    const cmdline = readFileSync(cmdlineFile, 'utf8')
    // the slot boots its own root, whichever slot the release was built from
    if (!/(^|\s)root=LABEL=cairn-root[AB]?(?=\s|$)/.test(cmdline)) throw new ReleaseFormatError("the release's cmdline.txt has no root=LABEL=cairn-root… to point at the slot")
    writeFileSync(cmdlineFile, cmdline.replace(/(^|\s)root=LABEL=cairn-root[AB]?(?=\s|$)/, `$1root=LABEL=${t.rootLabel}`))
    const slotNote = join(boot, 'cairn-slot.txt')
    if (existsSync(slotNote)) writeFileSync(slotNote, readFileSync(slotNote, 'utf8').replace(/^slot=[AB]$/m, `slot=${t.rootLabel.slice(-1)}`))
    await run('mkfs.vfat', ['-n', t.bootLabel, t.bootDevice])
    const entries = readdirSync(boot).map(f => join(boot, f))
    await run('mcopy', ['-s', '-i', t.bootDevice, ...entries, '::/'])
    await run('sync', [])
    return { rootBytes: result.rootBytes, bootFiles: result.bootFiles.length, seconds: Math.round((Date.now() - started) / 100) / 10 }
  } finally {
    rmSync(t.staging, { recursive: true, force: true })
  }
}

/** The verified copy, decompressed (zstd) and read into the root partition and `boot`. */
async function unpack(copy: string, version: string, t: SlotTarget, boot: string) {
  const head = Buffer.alloc(4)
  const hfd = openSync(copy, 'r')
  try {
    readSync(hfd, head, 0, 4, 0)
  } finally {
    closeSync(hfd)
  }
  const sink: OsReleaseSink = {
    bootDir: rel => mkdirSync(join(boot, rel), { mode: 0o700 }),
    bootFile: rel => {
      mkdirSync(dirname(join(boot, rel)), { recursive: true, mode: 0o700 })
      return fileWriter(join(boot, rel))
    },
    root: () => deviceWriter(t.rootDevice),
  }
  const limits = { maxRootBytes: t.rootBytes, maxBootBytes: t.bootBytes - 4 * 1024 * 1024 }
  if (!isZstd(head)) {
    const plain = createReadStream(copy, { highWaterMark: 1 << 20 })
    try {
      return await readOsRelease(plain, version, limits, sink)
    } finally {
      plain.destroy()
    }
  }
  const z = spawn('zstd', ['-d', '-c', '-q', copy], { stdio: ['ignore', 'pipe', 'pipe'] })
  let err = ''
  z.stderr.on('data', (d: Buffer) => (err = (err + d.toString()).slice(-500)))
  const exited = new Promise<number | null>(resolve => {
    z.once('error', e => {
      err = e.message
      resolve(-1)
    })
    z.once('exit', code => resolve(code))
  })
  try {
    const r = await readOsRelease(z.stdout, version, limits, sink)
    const code = await exited
    if (code !== 0) throw new ReleaseFormatError(`the release does not decompress (zstd: ${err.trim() || `exit ${code}`})`)
    return r
  } catch (e) {
    z.kill('SIGKILL')
    const code = await exited
    // zstd's own complaint says more than a truncated tar
    if (code !== 0 && code !== null && err.trim()) throw new ReleaseFormatError(`the release does not decompress (zstd: ${err.trim()})`)
    throw e
  }
}
