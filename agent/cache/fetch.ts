// Downloads one object from an origin URL into an open temp file, hashing as it goes.
// The caller owns the temp file: it renames it into the store only when this resolves,
// which happens only after the bytes hashed to the expected id (and had the expected
// length) and were fsynced. Every way an origin can fail is a CairnError with a code:
// DOWNLOAD (network, HTTP status, redirects, timeout: may work later or elsewhere),
// CONTENT_MISMATCH (wrong or truncated bytes), TOO_LARGE (over the size cap).

import { createHash } from 'node:crypto'
import { lookup as dnsLookup } from 'node:dns'
import type { FileHandle } from 'node:fs/promises'
import { request as httpRequest, type IncomingMessage } from 'node:http'
import { request as httpsRequest } from 'node:https'
import { BlockList, isIP, type LookupFunction } from 'node:net'
import { CairnError, type ErrorCode } from '../../protocol/errors.js'

export interface OriginFailure {
  origin: string
  code: ErrorCode
  message: string
}

/** No origin delivered the object; `failures` says which failed how, in order. */
export class FetchFailed extends CairnError {
  constructor(
    code: ErrorCode,
    message: string,
    readonly failures: OriginFailure[],
  ) {
    super(code, message)
  }
}

export interface FetchLimits {
  signal: AbortSignal
  /** Refuse (TOO_LARGE) as soon as more bytes than this are announced or received. */
  maxBytes: number
  /** When given, any other length is CONTENT_MISMATCH. */
  expectBytes?: number | undefined
  /** Whole-download limit per origin, ms. */
  timeoutMs: number
  maxRedirects: number
  /** Called before each chunk is written, with the running total; throws to stop (quota). */
  onBytes?: (total: number) => void
}

export interface Fetched {
  bytes: number
  /** The URL the bytes finally came from, after redirects. */
  url: string
}

/** Fetches `origin` into `file` (already open for writing, empty) and checks it against
 * `sha256`. On failure the file holds junk: the caller deletes it. */
export async function fetchInto(origin: string, file: FileHandle, sha256: string, lim: FetchLimits): Promise<Fetched> {
  const timeout = AbortSignal.timeout(lim.timeoutMs)
  const signal = AbortSignal.any([lim.signal, timeout])
  try {
    let url = checkUrl(origin)
    // The origin itself was signed by a dispatcher; where it redirects to was not. A
    // redirect may not lead into this device (loopback) or to link-local addresses (cloud
    // metadata, other boards' zero-conf services) unless the origin itself was loopback.
    const guard = isLocalHost(url.hostname) ? undefined : guardedLookup
    for (let hop = 0; ; hop++) {
      const res = await get(url, signal, hop > 0 ? guard : undefined)
      const status = res.statusCode ?? 0
      if (status >= 300 && status < 400 && res.headers.location) {
        res.resume()
        if (hop >= lim.maxRedirects) throw new CairnError('DOWNLOAD', `more than ${lim.maxRedirects} redirects`)
        url = checkUrl(new URL(res.headers.location, url).toString())
        if (guard && isIP(bareHost(url.hostname)) && redirectBlocked(bareHost(url.hostname))) throw new CairnError('DOWNLOAD', `redirect to a loopback or link-local address refused: ${url.host}`)
        continue
      }
      if (status !== 200) {
        res.resume()
        throw new CairnError('DOWNLOAD', `HTTP ${status}`)
      }
      const announced = res.headers['content-length'] === undefined ? undefined : Number(res.headers['content-length'])
      if (announced !== undefined && announced > lim.maxBytes) {
        res.destroy()
        throw new CairnError('TOO_LARGE', `origin announces ${announced} bytes, more than the ${lim.maxBytes} allowed`)
      }
      if (announced !== undefined && lim.expectBytes !== undefined && announced !== lim.expectBytes) {
        res.destroy()
        throw new CairnError('CONTENT_MISMATCH', `origin announces ${announced} bytes, the task says ${lim.expectBytes}`)
      }
      const bytes = await copy(res, file, sha256, lim, signal)
      return { bytes, url: url.toString() }
    }
  } catch (err) {
    if (err instanceof CairnError) throw err
    if (lim.signal.aborted) throw new CairnError('DOWNLOAD', 'cancelled', { cause: err })
    if (timeout.aborted) throw new CairnError('DOWNLOAD', `timed out after ${lim.timeoutMs} ms`, { cause: err })
    const e = err as NodeJS.ErrnoException
    throw new CairnError('DOWNLOAD', e.code ? `${e.code}: ${e.message}` : e.message, { cause: err })
  }
}

function checkUrl(text: string): URL {
  let url: URL
  try {
    url = new URL(text)
  } catch {
    throw new CairnError('BAD_REQUEST', `not a URL: ${JSON.stringify(text.slice(0, 200))}`)
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new CairnError('BAD_REQUEST', `origin must be http or https, not ${url.protocol}`)
  return url
}

const bareHost = (h: string) => (h.startsWith('[') && h.endsWith(']') ? h.slice(1, -1) : h)

const BLOCKED = new BlockList()
BLOCKED.addSubnet('127.0.0.0', 8, 'ipv4')
BLOCKED.addSubnet('169.254.0.0', 16, 'ipv4')
BLOCKED.addSubnet('0.0.0.0', 8, 'ipv4')
BLOCKED.addAddress('::1', 'ipv6')
BLOCKED.addAddress('::', 'ipv6')
BLOCKED.addSubnet('fe80::', 10, 'ipv6')
BLOCKED.addSubnet('::ffff:127.0.0.0', 104, 'ipv6')
BLOCKED.addSubnet('::ffff:169.254.0.0', 112, 'ipv6')

/** Whether a redirect (from a non-loopback origin) may not go to this IP address. */
export function redirectBlocked(ip: string): boolean {
  const v = isIP(ip)
  return v !== 0 && BLOCKED.check(ip, v === 6 ? 'ipv6' : 'ipv4')
}

function isLocalHost(hostname: string): boolean {
  const h = bareHost(hostname).toLowerCase()
  return h === 'localhost' || h.endsWith('.localhost') || (isIP(h) !== 0 && redirectBlocked(h))
}

/** dns.lookup that refuses names resolving to loopback or link-local addresses (a host
 * name is checked where it is resolved, so a rebinding name cannot slip past a check). */
const guardedLookup: LookupFunction = (hostname, options, cb) => {
  dnsLookup(hostname, options, (err, address, family) => {
    if (err) return cb(err, address, family)
    const list = Array.isArray(address) ? address : [{ address, family }]
    const bad = list.find(a => redirectBlocked(a.address))
    if (bad) return cb(Object.assign(new Error(`redirect target ${hostname} resolves to ${bad.address}, a loopback or link-local address`), { code: 'EREDIRECTBLOCKED' }), address, family)
    cb(null, address, family)
  })
}

function get(url: URL, signal: AbortSignal, lookup?: LookupFunction): Promise<IncomingMessage> {
  return new Promise((resolve, reject) => {
    const req = (url.protocol === 'https:' ? httpsRequest : httpRequest)(url, {
      method: 'GET',
      signal,
      headers: { 'accept-encoding': 'identity', 'user-agent': 'cairn-cache' },
      ...(lookup ? { lookup } : {}),
    })
    req.once('response', resolve)
    req.once('error', reject)
    req.end()
  })
}

async function copy(res: IncomingMessage, file: FileHandle, sha256: string, lim: FetchLimits, signal: AbortSignal): Promise<number> {
  const hash = createHash('sha256')
  let total = 0
  // Node reports a body cut short of its Content-Length as 'aborted' on the response;
  // the stream may still end quietly, so remember it and refuse below.
  let aborted = false
  res.once('aborted', () => (aborted = true))
  try {
    for await (const chunk of res as AsyncIterable<Buffer>) {
      if (signal.aborted) throw signal.reason
      total += chunk.length
      if (total > lim.maxBytes) throw new CairnError('TOO_LARGE', `origin sent more than the ${lim.maxBytes} bytes allowed`)
      if (lim.expectBytes !== undefined && total > lim.expectBytes) throw new CairnError('CONTENT_MISMATCH', `origin sent more than the ${lim.expectBytes} bytes expected`)
      lim.onBytes?.(total)
      hash.update(chunk)
      await file.write(chunk)
    }
  } catch (err) {
    res.destroy()
    if (err instanceof CairnError) throw err
    if (!signal.aborted && (err as NodeJS.ErrnoException).code === 'ECONNRESET') throw new CairnError('CONTENT_MISMATCH', `truncated: connection closed after ${total} bytes`)
    if ((err as NodeJS.ErrnoException).code === 'ENOSPC') throw new CairnError('NO_SPACE', 'disk full while downloading', { cause: err })
    throw err
  }
  if (signal.aborted) throw signal.reason
  const announced = res.headers['content-length'] === undefined ? undefined : Number(res.headers['content-length'])
  if (aborted || (announced !== undefined && total !== announced)) throw new CairnError('CONTENT_MISMATCH', `truncated: ${total} of ${announced ?? '?'} bytes`)
  if (lim.expectBytes !== undefined && total !== lim.expectBytes) throw new CairnError('CONTENT_MISMATCH', `got ${total} bytes, expected ${lim.expectBytes}`)
  const got = hash.digest('hex')
  if (got !== sha256) throw new CairnError('CONTENT_MISMATCH', `sha256 of the ${total} bytes received is ${got}, not ${sha256}`)
  try {
    await file.sync()
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOSPC') throw new CairnError('NO_SPACE', 'disk full while syncing', { cause: err })
    throw err
  }
  return total
}
