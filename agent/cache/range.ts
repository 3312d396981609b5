// HTTP Range (RFC 9110 §14) for the cache server, as a pure function.
//
// Decisions (documented in docs/cache.md):
// - Only the `bytes` unit, one range. A header with several ranges, another unit, or
//   invalid syntax is ignored and the whole object is sent (200), which RFC 9110 §14.2
//   allows ("a server MAY ignore the Range header field").
// - A syntactically valid single range that selects no byte is unsatisfiable (416 with
//   `Content-Range: bytes */<size>`): first-pos at or past the end, a suffix of 0, and
//   any range of an empty object.

export type RangeResult =
  | { kind: 'full' }
  | { kind: 'partial'; start: number; end: number } // inclusive end
  | { kind: 'unsatisfiable' }

// The unit is case-insensitive (§14.1); blanks around the numbers are tolerated.
const SINGLE = /^bytes=[ \t]*(\d*)[ \t]*-[ \t]*(\d*)[ \t]*$/i

export function parseRange(header: string | undefined, size: number): RangeResult {
  if (header === undefined) return { kind: 'full' }
  const m = SINGLE.exec(header)
  if (!m) return { kind: 'full' }
  const [, a = '', b = ''] = m
  // More than 15 digits cannot be a safe integer offset; treat as malformed.
  if (a.length > 15 || b.length > 15) return { kind: 'full' }
  if (a === '' && b === '') return { kind: 'full' }
  if (a === '') {
    const n = Number(b)
    if (n === 0 || size === 0) return { kind: 'unsatisfiable' }
    return { kind: 'partial', start: Math.max(0, size - n), end: size - 1 }
  }
  const start = Number(a)
  if (b !== '' && Number(b) < start) return { kind: 'full' } // invalid syntax per §14.1.1
  if (start >= size) return { kind: 'unsatisfiable' }
  return { kind: 'partial', start, end: b === '' ? size - 1 : Math.min(Number(b), size - 1) }
}

/** If-None-Match (§13.1.2, weak comparison): true when it matches `etag` or is `*`. */
export function noneMatch(header: string | undefined, etag: string): boolean {
  if (header === undefined) return false
  const want = etag.replace(/^W\//, '')
  return header.split(',').some(t => {
    const tag = t.trim()
    return tag === '*' || tag.replace(/^W\//, '') === want
  })
}

/** If-Range (§13.1.5): the range applies only when it names the current strong entity tag.
 * Dates are not honoured (objects carry no Last-Modified), so a date means "send it all". */
export function ifRangeAllows(header: string | undefined, etag: string): boolean {
  if (header === undefined) return true
  return header.trim() === etag
}
