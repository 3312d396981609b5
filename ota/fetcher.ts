// Downloads one release target into a file, resuming a partial file with HTTP Range, and
// verifies it against the signed TUF metadata. The TUF length is a hard cap while
// streaming (the endless-data attack: a server that never stops sending), the hashes
// (every algorithm ota/tuf-hashes.ts verifies) are checked over the whole file at the end,
// and a file that fails either check is deleted.
// tuf-js fetches the metadata itself; this is only for targets, which are large and
// downloaded over flaky links where restarting from zero would never finish.

import { closeSync, existsSync, fsyncSync, ftruncateSync, openSync, rmSync, statSync, writeSync } from 'node:fs'
import { request as httpRequest, type IncomingMessage } from 'node:http'
import { request as httpsRequest } from 'node:https'
import { CairnError, isCairnError } from '../protocol/errors.js'
import { hashMismatch, verifiableHashes, type TargetHashes } from './tuf-hashes.js'
import type { DownloadProgress } from './release-types.js'

export interface FetchTargetOptions {
  url: string
  file: string
  /** From TUF metadata: the exact size, and never more bytes than this are accepted. */
  length: number
  /** From TUF metadata: the file must match every one of them (see ota/tuf-hashes.ts). */
  hashes: TargetHashes
  onProgress?: (p: DownloadProgress) => void
  /** Gives up when no byte arrives for this long (also bounds connecting). Default 30 s. */
  idleTimeoutMs?: number
  /** Further attempts after a dropped connection or timeout, each resuming. Default 3. */
  retries?: number
  /** Pause before each retry. Default 1 s. */
  retryDelayMs?: number
  /** On resume, fetch this many bytes before the end of the partial file again: after a
   * power cut the tail of a file may not have reached the disk intact. Default 64 KiB. */
  resumeOverlap?: number
  userAgent?: string
}

export interface FetchResult {
  /** Bytes received over the network in this call. */
  received: number
  refetched: number
  /** The whole file was already there and verified: nothing fetched. */
  cached: boolean
  attempts: number
}

const PROGRESS_STEP = 64 * 1024

/** A download that fails for network reasons and may resume later keeps its partial file. */
export async function fetchTarget(opts: FetchTargetOptions): Promise<FetchResult> {
  const { file, length } = opts
  if (!Number.isSafeInteger(length) || length < 0) throw new CairnError('BAD_REQUEST', `bad target length ${length}`)
  const hashes = verifiableHashes(opts.hashes, opts.url)
  const result: FetchResult = { received: 0, refetched: 0, cached: false, attempts: 0 }
  const sizeNow = (): number => (existsSync(file) ? statSync(file).size : 0)

  if (sizeNow() > length) rmSync(file, { force: true })
  if (existsSync(file) && sizeNow() === length) {
    if ((await hashMismatch(file, hashes)) === null) {
      result.cached = true
      opts.onProgress?.({ bytes: length, total: length, refetched: 0 })
      return result
    }
    rmSync(file, { force: true })
  }

  const retries = opts.retries ?? 3
  // A resumed file whose hash fails may hold a stale prefix (another file once had this
  // name): one fresh download from byte 0 settles it.
  let freshRestartLeft = true
  for (;;) {
    result.attempts++
    try {
      await attempt(opts, result)
    } catch (err) {
      const transient = isCairnError(err) && err.code === 'DOWNLOAD'
      if (!transient || result.attempts > retries) {
        if (!transient) rmSync(file, { force: true })
        throw err
      }
      await new Promise(r => setTimeout(r, opts.retryDelayMs ?? 1000))
      continue
    }
    const mismatch = await hashMismatch(file, hashes)
    if (mismatch === null) return result
    rmSync(file, { force: true })
    const resumed = result.attempts > 1 || result.refetched > 0 || result.received < length
    if (resumed && freshRestartLeft) {
      freshRestartLeft = false
      continue
    }
    throw new CairnError('TARGET_MISMATCH', `${opts.url}: ${mismatch}; file deleted`)
  }
}

/** One HTTP request: resumes from the partial file when there is one. Throws DOWNLOAD
 * (transient: keep the partial file) or TARGET_MISMATCH (delete it). */
async function attempt(opts: FetchTargetOptions, result: FetchResult): Promise<void> {
  const { file, length } = opts
  const have = existsSync(file) ? statSync(file).size : 0
  if (have === length && length > 0) return // complete: the caller verifies
  const from = have > 0 ? Math.max(0, have - (opts.resumeOverlap ?? 64 * 1024)) : 0
  const res = await get(opts.url, from > 0 || have > 0 ? `bytes=${from}-` : undefined, opts)
  let offset: number
  if (res.statusCode === 206) {
    const cr = /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(res.headers['content-range'] ?? '')
    if (!cr || Number(cr[1]) !== from) {
      res.destroy()
      throw new CairnError('DOWNLOAD', `${opts.url}: server answered range ${JSON.stringify(res.headers['content-range'])} to a request for bytes ${from}-`)
    }
    if (cr[3] !== '*' && Number(cr[3]) !== length) {
      res.destroy()
      throw new CairnError('TARGET_MISMATCH', `${opts.url}: server says the file is ${cr[3]} bytes, the signed metadata says ${length}`)
    }
    offset = from
  } else if (res.statusCode === 200) {
    offset = 0 // the server ignored Range: start over
  } else if (res.statusCode === 416 && have > 0) {
    // Our partial file does not fit what the server has: drop it and fetch it whole.
    res.resume()
    result.refetched += have
    rmSync(file, { force: true })
    return attempt(opts, result)
  } else {
    res.resume()
    throw new CairnError('DOWNLOAD', `${opts.url}: HTTP ${res.statusCode}`)
  }
  result.refetched += Math.max(0, have - offset)
  const announced = res.headers['content-length']
  if (announced !== undefined && offset + Number(announced) !== length) {
    res.destroy()
    throw new CairnError('TARGET_MISMATCH', `${opts.url}: server offers ${offset + Number(announced)} bytes, the signed metadata says ${length}`)
  }

  const fd = openSync(file, existsSync(file) ? 'r+' : 'w', 0o644)
  let written = offset
  let lastReport = -1
  const report = (): void => {
    if (written - lastReport >= PROGRESS_STEP || written === length) {
      lastReport = written
      opts.onProgress?.({ bytes: written, total: length, refetched: result.refetched })
    }
  }
  try {
    ftruncateSync(fd, offset)
    await new Promise<void>((resolve, reject) => {
      const fail = (err: CairnError): void => {
        res.destroy()
        reject(err)
      }
      res.on('data', (chunk: Buffer) => {
        if (written + chunk.length > length) {
          return fail(new CairnError('TARGET_MISMATCH', `${opts.url}: server sent more than the ${length} bytes the signed metadata allows (endless data); stopped`))
        }
        writeSync(fd, chunk, 0, chunk.length, written)
        written += chunk.length
        result.received += chunk.length
        report()
      })
      res.on('end', () => (written === length ? resolve() : reject(new CairnError('DOWNLOAD', `${opts.url}: connection ended at byte ${written} of ${length}`))))
      res.on('error', err => reject(new CairnError('DOWNLOAD', `${opts.url}: ${err.message}`, { cause: err })))
      // Whatever way the connection goes away early, the partial file stays for a resume.
      res.on('close', () => reject(new CairnError('DOWNLOAD', `${opts.url}: connection dropped at byte ${written} of ${length}`)))
    })
    fsyncSync(fd)
  } finally {
    closeSync(fd)
  }
}

function get(url: string, range: string | undefined, opts: FetchTargetOptions): Promise<IncomingMessage> {
  const u = new URL(url)
  if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new CairnError('BAD_REQUEST', `${url}: only http and https are supported`)
  const request = u.protocol === 'https:' ? httpsRequest : httpRequest
  const idle = opts.idleTimeoutMs ?? 30_000
  return new Promise((resolve, reject) => {
    const headers: Record<string, string> = { 'User-Agent': opts.userAgent ?? 'cairn', 'Accept-Encoding': 'identity' }
    if (range) headers.Range = range
    // The socket's idle timeout covers connecting, the answer and the body alike: a
    // server that stalls anywhere is dropped, and the next attempt resumes.
    let answer: IncomingMessage | undefined
    const req = request(u, { method: 'GET', headers, timeout: idle }, res => resolve((answer = res)))
    req.on('timeout', () => {
      // during the body the answer carries the error: without this it says only "aborted"
      const err = new Error(`no data for ${idle} ms`)
      answer?.destroy(err)
      req.destroy(err)
    })
    req.on('error', err => reject(new CairnError('DOWNLOAD', `${url}: ${err.message}`, { cause: err })))
    req.end()
  })
}
