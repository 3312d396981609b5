// A minimal tar (POSIX ustar) writer and a careful reader, for the agent release
// target: a tar of one slot tree (cairn.mjs, node_modules/…, VERSION), optionally
// gzip-compressed. Only regular files and directories exist in a slot; the reader
// refuses links, devices, absolute paths and "..", so a signed-but-hostile archive
// still cannot write outside the directory it is unpacked into. It also reads what
// GNU tar and bsdtar write for long names (GNU 'L' records, pax 'x' headers).

import { closeSync, fsyncSync, mkdirSync, openSync, readdirSync, readFileSync, statSync, writeSync } from 'node:fs'
import { dirname, join, posix, relative, sep } from 'node:path'
import { gunzipSync, gzipSync } from 'node:zlib'
import { fsyncDirSync } from './durable-files.js'

export const BLOCK = 512

export interface TarEntry {
  /** Relative path inside the archive, '/'-separated; directories end without '/'. */
  path: string
  type: 'file' | 'dir'
  mode: number
  data?: Buffer
}

export class TarError extends Error {
  override readonly name = 'TarError'
}

// ---------- writing ----------

function octal(value: number, width: number): string {
  // width includes the terminating NUL
  return value.toString(8).padStart(width - 1, '0') + '\0'
}

function splitName(path: string): { name: string; prefix: string } {
  if (Buffer.byteLength(path) <= 100) return { name: path, prefix: '' }
  // ustar: the path may be split at a '/' into prefix (≤155) and name (≤100).
  for (let i = path.indexOf('/'); i !== -1; i = path.indexOf('/', i + 1)) {
    const prefix = path.slice(0, i)
    const name = path.slice(i + 1)
    if (Buffer.byteLength(prefix) <= 155 && Buffer.byteLength(name) <= 100) return { name, prefix }
  }
  throw new TarError(`path too long for ustar: ${path}`)
}

/** The 512-byte ustar header of one entry holding `size` bytes. */
export function tarHeader(entry: TarEntry, size: number): Buffer {
  const h = Buffer.alloc(BLOCK)
  const { name, prefix } = splitName(entry.type === 'dir' ? `${entry.path}/` : entry.path)
  h.write(name, 0, 100, 'utf8')
  h.write(octal(entry.mode & 0o7777, 8), 100, 8, 'ascii')
  h.write(octal(0, 8), 108, 8, 'ascii') // uid
  h.write(octal(0, 8), 116, 8, 'ascii') // gid
  h.write(octal(size, 12), 124, 12, 'ascii')
  h.write(octal(0, 12), 136, 12, 'ascii') // mtime: fixed, so the same tree packs to the same bytes
  h.write('        ', 148, 8, 'ascii') // checksum placeholder
  h.write(entry.type === 'dir' ? '5' : '0', 156, 1, 'ascii')
  h.write('ustar\u000000', 257, 8, 'ascii')
  h.write(prefix, 345, 155, 'utf8')
  let sum = 0
  for (const b of h) sum += b
  h.write(octal(sum, 7) + ' ', 148, 8, 'ascii')
  return h
}

/** Serialises entries as a ustar archive (two zero blocks at the end). */
export function packTar(entries: readonly TarEntry[]): Buffer {
  const parts: Buffer[] = []
  for (const e of entries) {
    const data = e.type === 'file' ? (e.data ?? Buffer.alloc(0)) : Buffer.alloc(0)
    parts.push(tarHeader(e, data.length))
    if (data.length > 0) {
      parts.push(data)
      const pad = (BLOCK - (data.length % BLOCK)) % BLOCK
      if (pad) parts.push(Buffer.alloc(pad))
    }
  }
  parts.push(Buffer.alloc(BLOCK * 2))
  return Buffer.concat(parts)
}

/** The entries of a directory tree, sorted, with paths relative to `root`. */
export function treeEntries(root: string): TarEntry[] {
  const out: TarEntry[] = []
  const walk = (dir: string) => {
    for (const name of readdirSync(dir).sort()) {
      const full = join(dir, name)
      const st = statSync(full)
      const path = relative(root, full).split(sep).join('/')
      if (st.isDirectory()) {
        out.push({ path, type: 'dir', mode: 0o755 })
        walk(full)
      } else if (st.isFile()) {
        out.push({ path, type: 'file', mode: st.mode & 0o111 ? 0o755 : 0o644, data: readFileSync(full) })
      }
    }
  }
  walk(root)
  return out
}

// ---------- reading ----------

export function readString(buf: Buffer, start: number, len: number): string {
  const end = buf.indexOf(0, start)
  return buf.toString('utf8', start, end === -1 || end > start + len ? start + len : end)
}

export function readOctal(buf: Buffer, start: number, len: number, what: string): number {
  const field = buf.subarray(start, start + len)
  // GNU base-256 for large values: the high bit of the first byte is set.
  if (field[0]! & 0x80) {
    let v = 0
    for (let i = 1; i < field.length; i++) v = v * 256 + field[i]!
    return v
  }
  const text = field
    .toString('ascii')
    .replace(/[\0 ]+$/g, '')
    .replace(/^ +/, '')
  if (text === '') return 0
  if (!/^[0-7]+$/.test(text)) throw new TarError(`bad ${what} field in tar header`)
  return parseInt(text, 8)
}

export function checksumOk(h: Buffer): boolean {
  const stored = readOctal(h, 148, 8, 'checksum')
  let sum = 0
  for (let i = 0; i < BLOCK; i++) sum += i >= 148 && i < 156 ? 0x20 : h[i]!
  return sum === stored
}

function parsePax(data: Buffer): Record<string, string> {
  const out: Record<string, string> = {}
  let pos = 0
  while (pos < data.length) {
    const space = data.indexOf(0x20, pos)
    if (space === -1) break
    const len = parseInt(data.toString('ascii', pos, space), 10)
    if (!(len > 0) || pos + len > data.length) throw new TarError('bad pax record')
    const record = data.toString('utf8', space + 1, pos + len - 1)
    const eq = record.indexOf('=')
    if (eq > 0) out[record.slice(0, eq)] = record.slice(eq + 1)
    pos += len
  }
  return out
}

/** A safe relative path, or a TarError: no absolute paths, no "..", no empty parts. */
export function safeRelative(path: string): string {
  const trimmed = path.replace(/^\.\//, '').replace(/\/+$/, '')
  if (trimmed === '' || trimmed === '.') return ''
  if (trimmed.startsWith('/') || trimmed.includes('\0') || trimmed.includes('\\')) throw new TarError(`unsafe path in archive: ${JSON.stringify(path)}`)
  const norm = posix.normalize(trimmed)
  if (norm !== trimmed || norm.split('/').some(p => p === '..' || p === '.' || p === '')) throw new TarError(`unsafe path in archive: ${JSON.stringify(path)}`)
  return norm
}

export interface ReadLimits {
  /** Most bytes all files together may hold (default 512 MiB). */
  maxBytes?: number
  /** Most entries (default 10,000). */
  maxEntries?: number
}

/** Parses a tar (or tar.gz) held in memory. Throws TarError on anything unexpected. */
export function readTar(input: Buffer, limits: ReadLimits = {}): TarEntry[] {
  const maxBytes = limits.maxBytes ?? 512 * 1024 * 1024
  const maxEntries = limits.maxEntries ?? 10_000
  let buf = input
  if (buf.length >= 2 && buf[0] === 0x1f && buf[1] === 0x8b) {
    try {
      buf = gunzipSync(buf, { maxOutputLength: maxBytes + 64 * 1024 * 1024 })
    } catch (err) {
      throw new TarError(`bad gzip data: ${(err as Error).message}`)
    }
  }
  const out: TarEntry[] = []
  let total = 0
  let pos = 0
  let longName: string | undefined
  let paxPath: string | undefined
  let paxSize: number | undefined
  let sawEnd = false
  while (pos + BLOCK <= buf.length) {
    const h = buf.subarray(pos, pos + BLOCK)
    if (h.every(b => b === 0)) {
      sawEnd = true
      break
    }
    if (!checksumOk(h)) throw new TarError(`bad tar header checksum at offset ${pos}`)
    const type = String.fromCharCode(h[156]!)
    const size = paxSize ?? readOctal(h, 124, 12, 'size')
    const dataStart = pos + BLOCK
    const dataEnd = dataStart + size
    if (dataEnd > buf.length) throw new TarError('archive is truncated')
    const data = buf.subarray(dataStart, dataEnd)
    pos = dataStart + Math.ceil(size / BLOCK) * BLOCK
    const magic = h.toString('ascii', 257, 262)
    const prefix = magic === 'ustar' ? readString(h, 345, 155) : ''
    const headerName = prefix ? `${prefix}/${readString(h, 0, 100)}` : readString(h, 0, 100)
    if (type === 'L') {
      longName = readString(data, 0, data.length)
      continue
    }
    if (type === 'x') {
      const pax = parsePax(data)
      paxPath = pax.path
      paxSize = pax.size !== undefined ? Number(pax.size) : undefined
      if (paxSize !== undefined && !Number.isSafeInteger(paxSize)) throw new TarError('bad pax size')
      continue
    }
    if (type === 'g') continue // global pax header: nothing we use
    const name = paxPath ?? longName ?? headerName
    longName = undefined
    paxPath = undefined
    paxSize = undefined
    const path = safeRelative(name)
    const mode = readOctal(h, 100, 8, 'mode')
    if (type === '5') {
      if (path !== '') out.push({ path, type: 'dir', mode })
    } else if (type === '0' || type === '\0' || type === '7') {
      if (path === '') throw new TarError('file entry without a name')
      total += size
      if (total > maxBytes) throw new TarError(`archive holds more than ${maxBytes} bytes`)
      out.push({ path, type: 'file', mode, data: Buffer.from(data) })
    } else {
      throw new TarError(`unsupported entry type ${JSON.stringify(type)} for ${JSON.stringify(name)} (only files and directories)`)
    }
    if (out.length > maxEntries) throw new TarError(`archive holds more than ${maxEntries} entries`)
  }
  if (!sawEnd && pos < buf.length) throw new TarError('archive is truncated')
  return out
}

/** Writes entries under `dest` (which must exist), each file fsync'd, then every
 * directory, so a power cut after this returns cannot leave a half-written tree. */
export function writeEntries(entries: readonly TarEntry[], dest: string): void {
  const dirs = new Set<string>([dest])
  for (const e of entries) {
    const target = join(dest, ...safeRelative(e.path).split('/'))
    if (e.type === 'dir') {
      mkdirSync(target, { recursive: true, mode: 0o755 })
      dirs.add(target)
      continue
    }
    mkdirSync(dirname(target), { recursive: true, mode: 0o755 })
    dirs.add(dirname(target))
    const fd = openSync(target, 'wx', e.mode & 0o111 ? 0o755 : 0o644)
    try {
      if (e.data && e.data.length) writeSync(fd, e.data)
      fsyncSync(fd)
    } finally {
      closeSync(fd)
    }
  }
  for (const d of [...dirs].sort((a, b) => b.length - a.length)) fsyncDirSync(d)
}

export function gzip(buf: Buffer): Buffer {
  return gzipSync(buf, { level: 9 })
}
