// Canonical JSON (RFC 8785, JSON Canonicalization Scheme) for signed bytes.
// In JavaScript JCS is: object keys sorted by UTF-16 code units, no whitespace,
// strings and numbers exactly as JSON.stringify writes them (ES2015 number form).
// We refuse what JCS cannot represent (NaN, Infinity, undefined, functions) rather
// than silently dropping it, so two parties never sign different bytes.

export type Json = null | boolean | number | string | Json[] | { [k: string]: Json }

export function canonicalJson(value: unknown): string {
  return encode(value, '$')
}

function encode(value: unknown, path: string): string {
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
      if (Array.isArray(value)) return '[' + value.map((v, i) => encode(v, `${path}[${i}]`)).join(',') + ']'
      const proto = Object.getPrototypeOf(value)
      if (proto !== Object.prototype && proto !== null) throw new TypeError(`${path}: only plain objects can be canonicalised`)
      const obj = value as Record<string, unknown>
      // Default sort compares UTF-16 code units, which is what RFC 8785 asks for.
      const keys = Object.keys(obj).sort()
      const parts: string[] = []
      for (const k of keys) {
        if (obj[k] === undefined) throw new TypeError(`${path}.${k}: undefined cannot be canonicalised`)
        parts.push(JSON.stringify(k) + ':' + encode(obj[k], `${path}.${k}`))
      }
      return '{' + parts.join(',') + '}'
    }
    default:
      throw new TypeError(`${path}: ${typeof value} cannot be canonicalised`)
  }
}
