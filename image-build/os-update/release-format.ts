// The OS release: the TUF target of kind "os" that `cairn release pack-os` makes and the
// root helper writes into the inactive boot+root pair. A ustar archive, compressed with
// zstd (*.tar.zst; a plain tar is read too), holding exactly, in this order:
//
//   VERSION     the release's version: must equal the signed metadata's
//   boot/       the boot slot's FAT files (Pi firmware, dtbs, vmlinuz, initrd.img,
//               config.txt, cmdline.txt, …), with at most one level of directories
//   root.img    the root ext4 file system, shrunk to its content and labelled
//               `cairn-root`: the helper names it cairn-rootA|B only once the whole
//               release verified, so two partitions never carry the same slot label
//
// The fixed order lets the reader refuse a wrong version before it writes anything and
// stream root.img straight onto the partition; every size is bounded by the partitions.

import { spawn } from 'node:child_process'
import { createHash } from 'node:crypto'
import { createReadStream, createWriteStream, readdirSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { PassThrough, Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { BLOCK, checksumOk, readOctal, readString, safeRelative, tarHeader, TarError } from '../../protocol/tar.js'

const ROOT_IMAGE = 'root.img'
const VERSION_ENTRY = 'VERSION'
const BOOT_DIR = 'boot'
/** The label root.img carries until the helper names it after its slot. */
export const NEUTRAL_ROOT_LABEL = 'cairn-root'
/** Files a boot slot cannot boot without (the firmware reads both). */
const REQUIRED_BOOT_FILES = ['config.txt', 'cmdline.txt'] as const
const ZSTD_MAGIC = Buffer.from([0x28, 0xb5, 0x2f, 0xfd])
const NAME_RE = /^[A-Za-z0-9._+-]{1,64}$/
const MAX_BOOT_ENTRIES = 1000

/** A release that is not a well-formed Cairn OS release: permanent, never retried. */
export class ReleaseFormatError extends Error {
  override readonly name = 'ReleaseFormatError'
}

export const isZstd = (head: Buffer): boolean => head.length >= 4 && head.subarray(0, 4).equals(ZSTD_MAGIC)

// ---------- packing ----------

export interface PackOsOptions {
  readonly version: string
  /** the boot slot's files (the build's boot A staging dir) */
  readonly bootDir: string
  /** the root ext4 image, labelled NEUTRAL_ROOT_LABEL */
  readonly rootImage: string
  readonly out: string
  /** zstd level (default 10); 0 writes a plain tar */
  readonly level?: number
}

export interface Packed {
  readonly bytes: number
  readonly sha256: string
  /** bytes of the tar before compression */
  readonly tarBytes: number
}

const pad = (size: number) => Buffer.alloc((BLOCK - (size % BLOCK)) % BLOCK)

async function* fileData(path: string, size: number): AsyncGenerator<Buffer> {
  let n = 0
  for await (const chunk of createReadStream(path, { highWaterMark: 1 << 20 })) {
    n += (chunk as Buffer).length
    if (n > size) break
    yield chunk as Buffer
  }
  if (n !== size) throw new Error(`${path} changed size while it was packed`)
  yield pad(size)
}

async function* tarStream(o: PackOsOptions, counted: { bytes: number }): AsyncGenerator<Buffer> {
  const emit = (b: Buffer) => ((counted.bytes += b.length), b)
  const version = Buffer.from(`${o.version}\n`)
  yield emit(tarHeader({ path: VERSION_ENTRY, type: 'file', mode: 0o644 }, version.length))
  yield emit(Buffer.concat([version, pad(version.length)]))
  yield emit(tarHeader({ path: BOOT_DIR, type: 'dir', mode: 0o755 }, 0))
  const walk = async function* (dir: string, rel: string, depth: number): AsyncGenerator<Buffer> {
    for (const name of readdirSync(dir).sort()) {
      if (!NAME_RE.test(name)) throw new ReleaseFormatError(`boot file name not allowed in a release: ${JSON.stringify(name)}`)
      const full = join(dir, name)
      const st = statSync(full)
      const path = `${rel}/${name}`
      if (st.isDirectory()) {
        if (depth > 0) throw new ReleaseFormatError(`boot/ may hold one level of directories, not ${path}`)
        yield emit(tarHeader({ path, type: 'dir', mode: 0o755 }, 0))
        yield* walk(full, path, depth + 1)
      } else if (st.isFile()) {
        yield emit(tarHeader({ path, type: 'file', mode: 0o644 }, st.size))
        for await (const b of fileData(full, st.size)) yield emit(b)
      } else throw new ReleaseFormatError(`${full}: only files and directories go into a release`)
    }
  }
  yield* walk(o.bootDir, BOOT_DIR, 0)
  const root = statSync(o.rootImage)
  yield emit(tarHeader({ path: ROOT_IMAGE, type: 'file', mode: 0o644 }, root.size))
  for await (const b of fileData(o.rootImage, root.size)) yield emit(b)
  yield emit(Buffer.alloc(BLOCK * 2))
}

/** Writes the release archive; returns its size and SHA-256 (what TUF will sign). */
export async function packOsRelease(o: PackOsOptions): Promise<Packed> {
  for (const f of REQUIRED_BOOT_FILES) if (!statSync(join(o.bootDir, f), { throwIfNoEntry: false })?.isFile()) throw new ReleaseFormatError(`${o.bootDir} has no ${f}`)
  const hash = createHash('sha256')
  let bytes = 0
  const tap = new PassThrough()
  tap.on('data', (b: Buffer) => {
    hash.update(b)
    bytes += b.length
  })
  const counted = { bytes: 0 }
  const level = o.level ?? 10
  if (level === 0) {
    await pipeline(Readable.from(tarStream(o, counted)), tap, createWriteStream(o.out))
  } else {
    const zstd = spawn('zstd', ['-q', '-c', '-T0', `-${level}`], { stdio: ['pipe', 'pipe', 'inherit'] })
    const exited = new Promise<void>((resolve, reject) => {
      zstd.once('error', reject)
      zstd.once('exit', code => (code === 0 ? resolve() : reject(new Error(`zstd exited with ${code}`))))
    })
    await Promise.all([pipeline(Readable.from(tarStream(o, counted)), zstd.stdin), pipeline(zstd.stdout, tap, createWriteStream(o.out)), exited])
  }
  return { bytes, sha256: hash.digest('hex'), tarBytes: counted.bytes }
}

// ---------- reading ----------

/** Where the reader puts what it reads: boot files in a staging dir, root.img on the
 * partition. Each writer gets the bytes in order and is closed once. */
export interface ChunkWriter {
  write(chunk: Buffer): Promise<void>
  close(): Promise<void>
}

export interface OsReleaseSink {
  bootDir(rel: string): void
  bootFile(rel: string, size: number): ChunkWriter
  root(size: number): ChunkWriter
}

export interface OsReleaseLimits {
  /** the target root partition's size */
  readonly maxRootBytes: number
  /** the target boot partition's size (less FAT overhead) */
  readonly maxBootBytes: number
}

export interface ReadResult {
  readonly bootFiles: readonly string[]
  readonly bootBytes: number
  readonly rootBytes: number
}

/** Pulls exact byte counts out of a stream of chunks. */
class ByteReader {
  private pending: Buffer = Buffer.alloc(0)
  private done = false
  constructor(private readonly it: AsyncIterator<Buffer>) {}

  private async fill(): Promise<boolean> {
    if (this.done) return false
    const r = await this.it.next()
    if (r.done) {
      this.done = true
      return false
    }
    this.pending = this.pending.length ? Buffer.concat([this.pending, r.value]) : r.value
    return true
  }

  /** Exactly n bytes, or undefined at a clean end of stream before any of them. */
  async exactly(n: number): Promise<Buffer | undefined> {
    while (this.pending.length < n) if (!(await this.fill())) break
    if (this.pending.length === 0) return undefined
    if (this.pending.length < n) throw new ReleaseFormatError('the release archive is truncated')
    const out = this.pending.subarray(0, n)
    this.pending = this.pending.subarray(n)
    return out
  }

  /** n bytes as they come, in chunks. */
  async *take(n: number): AsyncGenerator<Buffer> {
    let left = n
    while (left > 0) {
      if (this.pending.length === 0 && !(await this.fill())) throw new ReleaseFormatError('the release archive is truncated')
      const piece = this.pending.subarray(0, Math.min(left, this.pending.length))
      this.pending = this.pending.subarray(piece.length)
      left -= piece.length
      yield piece
    }
  }

  async skip(n: number): Promise<void> {
    for await (const _ of this.take(n)) void _
  }

  /** Reads to the end; true when everything left was zero padding, and no more of it
   * than `max` bytes (tar pads to its record size, 10 KiB for GNU tar). */
  async onlyZerosLeft(max: number): Promise<boolean> {
    let seen = 0
    do {
      seen += this.pending.length
      if (seen > max || !this.pending.every(b => b === 0)) return false
      this.pending = Buffer.alloc(0)
    } while (await this.fill())
    return true
  }
}

interface Header {
  readonly type: 'file' | 'dir'
  readonly path: string
  readonly size: number
}

async function nextHeader(r: ByteReader): Promise<Header | undefined> {
  const h = await r.exactly(BLOCK)
  if (!h || h.every(b => b === 0)) return undefined
  let size: number
  try {
    if (!checksumOk(h)) throw new TarError('bad tar header checksum')
    size = readOctal(h, 124, 12, 'size')
  } catch (err) {
    throw new ReleaseFormatError(`not a Cairn OS release: ${(err as Error).message}`)
  }
  const type = String.fromCharCode(h[156]!)
  const prefix = h.toString('ascii', 257, 262) === 'ustar' ? readString(h, 345, 155) : ''
  const raw = prefix ? `${prefix}/${readString(h, 0, 100)}` : readString(h, 0, 100)
  let path: string
  try {
    path = safeRelative(raw)
  } catch (err) {
    throw new ReleaseFormatError((err as Error).message)
  }
  if (type === '5') return { type: 'dir', path, size: 0 }
  if (type === '0' || type === '\0') return { type: 'file', path, size }
  throw new ReleaseFormatError(`not a Cairn OS release: entry ${JSON.stringify(raw)} has tar type ${JSON.stringify(type)} (only plain files and directories)`)
}

async function drain(r: ByteReader, size: number, w: ChunkWriter): Promise<void> {
  try {
    for await (const chunk of r.take(size)) await w.write(chunk)
    await r.skip((BLOCK - (size % BLOCK)) % BLOCK)
  } finally {
    await w.close()
  }
}

/** Reads a decompressed release archive into `sink`, refusing anything but the layout
 * above. The caller hashes the raw bytes: nothing read here is trusted until that hash
 * matches the signed metadata. */
export async function readOsRelease(source: AsyncIterable<Buffer>, expectVersion: string, limits: OsReleaseLimits, sink: OsReleaseSink): Promise<ReadResult> {
  const r = new ByteReader(source[Symbol.asyncIterator]())
  const first = await nextHeader(r)
  if (!first || first.type !== 'file' || first.path !== VERSION_ENTRY || first.size > 64) throw new ReleaseFormatError(`not a Cairn OS release: the first entry must be ${VERSION_ENTRY}`)
  const versionText = (await r.exactly(first.size))?.toString('utf8').trim() ?? ''
  await r.skip((BLOCK - (first.size % BLOCK)) % BLOCK)
  if (versionText !== expectVersion) throw new ReleaseFormatError(`the release says version ${JSON.stringify(versionText.slice(0, 64))}, the signed metadata ${expectVersion}`)
  const boot = await nextHeader(r)
  if (!boot || boot.type !== 'dir' || boot.path !== BOOT_DIR) throw new ReleaseFormatError(`not a Cairn OS release: ${BOOT_DIR}/ must follow ${VERSION_ENTRY}`)
  const bootFiles: string[] = []
  let bootBytes = 0
  let entries = 0
  for (;;) {
    const h = await nextHeader(r)
    if (!h) throw new ReleaseFormatError(`not a Cairn OS release: no ${ROOT_IMAGE}`)
    if (h.path === ROOT_IMAGE && h.type === 'file') {
      if (h.size === 0 || h.size > limits.maxRootBytes) throw new ReleaseFormatError(`${ROOT_IMAGE} is ${h.size} bytes; the root partition holds ${limits.maxRootBytes}`)
      for (const f of REQUIRED_BOOT_FILES) if (!bootFiles.includes(f)) throw new ReleaseFormatError(`the release's boot files lack ${f}`)
      await drain(r, h.size, sink.root(h.size))
      // Only the end-of-archive blocks (and tar's zero padding) may follow.
      if (!(await r.onlyZerosLeft(64 * 1024))) throw new ReleaseFormatError(`not a Cairn OS release: data after ${ROOT_IMAGE}`)
      return { bootFiles, bootBytes, rootBytes: h.size }
    }
    const parts = h.path.split('/')
    if (parts[0] !== BOOT_DIR || parts.length < 2 || parts.length > 3 || !parts.slice(1).every(p => NAME_RE.test(p)) || (h.type === 'dir' && parts.length !== 2))
      throw new ReleaseFormatError(`not a Cairn OS release: unexpected entry ${JSON.stringify(h.path)}`)
    if (++entries > MAX_BOOT_ENTRIES) throw new ReleaseFormatError(`more than ${MAX_BOOT_ENTRIES} boot entries`)
    const rel = parts.slice(1).join('/')
    if (h.type === 'dir') {
      sink.bootDir(rel)
      continue
    }
    bootBytes += h.size
    if (bootBytes > limits.maxBootBytes) throw new ReleaseFormatError(`the boot files exceed the boot partition's ${limits.maxBootBytes} bytes`)
    bootFiles.push(rel)
    await drain(r, h.size, sink.bootFile(rel, h.size))
  }
}
