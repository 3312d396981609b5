// Canonical JSON (RFC 8785, JSON Canonicalization Scheme) for signed bytes.
// In JavaScript JCS is: object keys sorted by UTF-16 code units, no whitespace,
// strings and numbers exactly as JSON.stringify writes them (ES2015 number form).
// We refuse what JCS cannot represent (NaN, Infinity, undefined, functions) rather
// than silently dropping it, so two parties never sign different bytes; and what no
// Cairn message needs and a hostile one could use: nesting deeper than MAX_JSON_DEPTH
// (each level is a stack frame here), as BAD_REQUEST. (Integers past 2^53, which JSON
// parsers disagree on, are refused by the message schemas, each with its maximum.)

import { CairnError } from './errors.js'

/** Deepest nesting of arrays and objects in any Cairn message (a tensor of rank 4
 * inside a task request's parameters sits at depth 8). */
const MAX_JSON_DEPTH = 32

export type Json = null | boolean | number | string | Json[] | { [k: string]: Json }

export function canonicalJson(value: unknown): string {
  return encode(value, '$', 0)
}

/** BAD_REQUEST when `value` nests arrays and objects deeper than `max`; walks without
 * recursion, so any depth is measured safely. */
export function checkJsonDepth(value: unknown, max = MAX_JSON_DEPTH): void {
  let level: unknown[] = [value]
  for (let depth = 0; level.length > 0; depth++) {
    const next: unknown[] = []
    for (const v of level) {
      if (v === null || typeof v !== 'object') continue
      if (depth >= max) throw new CairnError('BAD_REQUEST', `nested deeper than ${max} levels`)
      if (Array.isArray(v)) next.push(...v)
      else next.push(...Object.values(v))
    }
    level = next
  }
}

function encode(value: unknown, path: string, depth: number): string {
  if (value === null) return 'null'
  switch (typeof value) {
    case 'boolean':
      return value ? 'true' : 'false'
    case 'string':
      return JSON.stringify(value)
    case 'number':
      if (!Number.isFinite(value)) throw new TypeError(`${path}: non-finite number cannot be canonicalised`)
      return JSON.stringify(value)
    case 'object': {
      if (depth >= MAX_JSON_DEPTH) throw new CairnError('BAD_REQUEST', `${path}: nested deeper than ${MAX_JSON_DEPTH} levels`)
      if (Array.isArray(value)) return '[' + value.map((v, i) => encode(v, `${path}[${i}]`, depth + 1)).join(',') + ']'
      const proto = Object.getPrototypeOf(value)
      if (proto !== Object.prototype && proto !== null) throw new TypeError(`${path}: only plain objects can be canonicalised`)
      const obj = value as Record<string, unknown>
      // Default sort compares UTF-16 code units, which is what RFC 8785 asks for.
      const keys = Object.keys(obj).sort()
      const parts: string[] = []
      for (const k of keys) {
        if (obj[k] === undefined) throw new TypeError(`${path}.${k}: undefined cannot be canonicalised`)
        parts.push(JSON.stringify(k) + ':' + encode(obj[k], `${path}.${k}`, depth + 1))
      }
      return '{' + parts.join(',') + '}'
    }
    default:
      throw new TypeError(`${path}: ${typeof value} cannot be canonicalised`)
  }
}
