// Writes a verified OS release into the inactive slot's two partitions, as root. The
// release file sits in the agent's state dir, so the agent could change it while it is
// read: it is opened once (no links followed) and read in ONE pass that both hashes the
// bytes and writes them out, so what lands on the partitions is exactly what was hashed.
// Until that hash matches the signed metadata nothing written counts: the root partition
// keeps its neutral label, the boot partition is not touched (its files wait in root's
// staging dir), and the caller does not record the slot as written.

import { execFile, spawn, type ChildProcess } from 'node:child_process'
import { createHash } from 'node:crypto'
import { closeSync, constants, existsSync, fstatSync, read, fsyncSync, mkdirSync, openSync, readdirSync, readFileSync, readSync, rmSync, writeFileSync, writeSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { Readable, Transform } from 'node:stream'
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
  /** root's own scratch dir for the boot files (emptied first, removed after) */
  readonly staging: string
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

/** Plain-file chunk writer (a boot file in the staging dir). */
function fileWriter(path: string): ChunkWriter {
  const fd = openSync(path, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600)
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
      for (let off = 0; off < b.length; ) off += writeSync(fd, b, off, b.length - off, pos + off)
      pos += b.length
    },
    close: async () => {
      fsyncSync(fd)
      closeSync(fd)
    },
  }
}

/** Streams the release at `image` onto `t`, checks it against `verified`, then makes the
 * slot bootable: root checked, grown to its partition and labelled; boot partition
 * formatted and filled, its cmdline.txt naming this slot's root. */
export async function writeOsSlot(image: string, version: string, verified: Verified, t: SlotTarget): Promise<WriteReport> {
  const started = Date.now()
  const fd = openSync(image, constants.O_RDONLY | constants.O_NOFOLLOW)
  let result
  try {
    const st = fstatSync(fd)
    if (!st.isFile()) throw new ReleaseFormatError('the release image is not a plain file')
    if (st.size !== verified.length) throw new ReleaseFormatError(`the release image is ${st.size} bytes; the signed metadata says ${verified.length}`)
    const head = Buffer.alloc(4)
    readSync(fd, head, 0, 4, 0)
    rmSync(t.staging, { recursive: true, force: true })
    mkdirSync(t.staging, { recursive: true, mode: 0o700 })
    result = await streamRelease(fd, isZstd(head), version, verified, t)
  } finally {
    closeSync(fd)
  }
  // Verified: from here on the bytes are the signed release's.
  await run('e2fsck', ['-f', '-p', t.rootDevice], [0, 1])
  await run('resize2fs', [t.rootDevice])
  await run('e2label', [t.rootDevice, t.rootLabel])
  const cmdlineFile = join(t.staging, 'cmdline.txt')
  const cmdline = readFileSync(cmdlineFile, 'utf8')
  // the slot boots its own root, whichever slot the release was built from
  if (!/(^|\s)root=LABEL=cairn-root[AB]?(?=\s|$)/.test(cmdline)) throw new ReleaseFormatError('the release\'s cmdline.txt has no root=LABEL=cairn-root… to point at the slot')
  writeFileSync(cmdlineFile, cmdline.replace(/(^|\s)root=LABEL=cairn-root[AB]?(?=\s|$)/, `$1root=LABEL=${t.rootLabel}`))
  const slotNote = join(t.staging, 'cairn-slot.txt')
  if (existsSync(slotNote)) writeFileSync(slotNote, readFileSync(slotNote, 'utf8').replace(/^slot=[AB]$/m, `slot=${t.rootLabel.slice(-1)}`))
  await run('mkfs.vfat', ['-n', t.bootLabel, t.bootDevice])
  const entries = readdirSync(t.staging).map(f => join(t.staging, f))
  await run('mcopy', ['-s', '-i', t.bootDevice, ...entries, '::/'])
  await run('sync', [])
  rmSync(t.staging, { recursive: true, force: true })
  return { rootBytes: result.rootBytes, bootFiles: result.bootFiles.length, seconds: Math.round((Date.now() - started) / 100) / 10 }
}

const readAt = promisify(read)

/** The file from its start, in 1 MiB chunks. */
async function* readChunks(fd: number): AsyncGenerator<Buffer> {
  for (let pos = 0; ; ) {
    const buf = Buffer.allocUnsafe(1 << 20)
    const { bytesRead } = await readAt(fd, buf, 0, buf.length, pos)
    if (bytesRead === 0) return
    pos += bytesRead
    yield buf.subarray(0, bytesRead)
  }
}

async function streamRelease(fd: number, zstd: boolean, version: string, verified: Verified, t: SlotTarget) {
  const hash = createHash('sha256')
  let bytes = 0
  // (not fs.createReadStream: destroying it closes the fd, which the caller owns)
  const raw = Readable.from(readChunks(fd))
  // every byte read is hashed on its way to the decompressor
  const tap = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      hash.update(chunk)
      bytes += chunk.length
      cb(null, chunk)
    },
  })
  const hashed = new Promise<void>((resolve, reject) => tap.once('finish', resolve).once('error', reject))
  hashed.catch(() => undefined) // awaited below; a failure surfaces through the reader too
  raw.once('error', err => tap.destroy(err))
  raw.pipe(tap)
  let source: Readable = tap
  let child: ChildProcess | undefined
  let childExit: Promise<number | null> | undefined
  if (zstd) {
    const z = spawn('zstd', ['-d', '-c', '-q'], { stdio: ['pipe', 'pipe', 'pipe'] })
    child = z
    let err = ''
    z.stderr!.on('data', (d: Buffer) => (err = (err + d.toString()).slice(-500)))
    childExit = new Promise(resolve => z.once('exit', code => resolve(code)))
    z.stdin!.on('error', () => undefined) // zstd stopped reading: its exit code says why
    tap.pipe(z.stdin!)
    source = z.stdout!
    void childExit.then(code => {
      if (code !== 0) z.stdout!.destroy(new ReleaseFormatError(`the release does not decompress (zstd: ${err.trim() || `exit ${code}`})`))
    })
  }
  const sink: OsReleaseSink = {
    bootDir: rel => mkdirSync(join(t.staging, rel), { mode: 0o700 }),
    bootFile: rel => {
      mkdirSync(dirname(join(t.staging, rel)), { recursive: true, mode: 0o700 })
      return fileWriter(join(t.staging, rel))
    },
    root: () => deviceWriter(t.rootDevice),
  }
  try {
    const r = await readOsRelease(source as AsyncIterable<Buffer>, version, { maxRootBytes: t.rootBytes, maxBootBytes: t.bootBytes - 4 * 1024 * 1024 }, sink)
    if (childExit && (await childExit) !== 0) throw new ReleaseFormatError('the release does not decompress')
    await hashed
    const sha256 = hash.digest('hex')
    if (bytes !== verified.length || sha256 !== verified.sha256) throw new ReleaseFormatError(`the release image does not match the signed metadata (read ${bytes} bytes, sha256 ${sha256.slice(0, 16)}…): changed or corrupted after download`)
    return r
  } catch (err) {
    raw.destroy()
    tap.destroy()
    child?.kill('SIGKILL')
    throw err
  }
}
