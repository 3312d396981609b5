// The parameters of an `inference` task: which model (by content hash, or `demo`),
// one input (an image or a tensor) and how many labels to return. The TypeBox schema is
// the documented JSON Schema; parseInferenceParams() checks the same things by hand so
// every error names the field, and also checks sizes: bytes, element count vs shape.
// Inputs come out decoded (base64 once, here), ready to go to the worker as raw bytes.

import { Type } from '@sinclair/typebox'
import { Value } from '@sinclair/typebox/value'
import { CairnError } from '../../protocol/errors.js'
import { DEMO_MODEL_SHA256 } from './demo-model.js'

const Sha256 = Type.String({ pattern: '^[0-9a-f]{64}$', description: 'lowercase hex SHA-256 of the exact bytes' })
const Urls = Type.Array(Type.String({ maxLength: 2048 }), { maxItems: 8, description: 'origins to fetch from (http/https) when the device does not have it' })
const Base64 = Type.String({ description: 'standard base64' })

const InferenceParamsSchema = Type.Object(
  {
    model: Type.Union([Type.Literal('demo'), Type.Object({ sha256: Sha256, urls: Type.Optional(Urls) }, { additionalProperties: false })], { description: 'a Cairn model package by hash, or "demo"' }),
    input: Type.Union([
      Type.Object(
        { image: Type.Union([Type.Object({ data: Base64 }, { additionalProperties: false }), Type.Object({ sha256: Sha256, urls: Type.Optional(Urls) }, { additionalProperties: false })]) },
        { additionalProperties: false },
      ),
      Type.Object(
        {
          tensor: Type.Object(
            {
              shape: Type.Array(Type.Integer({ minimum: 1 }), { minItems: 1, maxItems: 6 }),
              dtype: Type.Union([Type.Literal('float32'), Type.Literal('int32')]),
              data: Type.Union([Base64, Type.Array(Type.Number())], { description: 'little-endian bytes in base64, or the numbers' }),
            },
            { additionalProperties: false },
          ),
        },
        { additionalProperties: false },
      ),
    ]),
    topK: Type.Optional(Type.Integer({ minimum: 1, maximum: 100 })),
  },
  { additionalProperties: false },
)

export interface ContentRef {
  sha256: string
  urls: string[]
}
type InferenceInput =
  /** The image file's bytes, decoded from base64. */
  | { kind: 'image'; data: Uint8Array; bytes: number }
  | { kind: 'image'; ref: ContentRef }
  /** The values, decoded from base64 or converted from the number array. */
  | { kind: 'tensor'; shape: number[]; dtype: 'float32' | 'int32'; data: Float32Array | Int32Array; bytes: number }

/** Normalised parameters: `demo` resolved to its hash; sizes known; inputs decoded. Not
 * for storing: the queue keeps the request's JSON params and parses them again to run. */
export interface InferenceParams {
  model: ContentRef & { demo: boolean }
  input: InferenceInput
  topK: number
}

export interface ParamLimits {
  maxInputBytes: number
}

const bad = (field: string, message: string) => new CairnError('BAD_REQUEST', `${field}: ${message}`)
const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v)
const SHA = /^[0-9a-f]{64}$/

function onlyKeys(v: Record<string, unknown>, field: string, allowed: readonly string[]): void {
  for (const k of Object.keys(v)) if (!allowed.includes(k)) throw bad(`${field}.${k}`, `unknown field (allowed: ${allowed.join(', ')})`)
}

function contentRef(v: Record<string, unknown>, field: string): ContentRef {
  onlyKeys(v, field, ['sha256', 'urls'])
  if (typeof v.sha256 !== 'string' || !SHA.test(v.sha256)) throw bad(`${field}.sha256`, 'must be 64 lowercase hex digits')
  const urls = v.urls ?? []
  if (!Array.isArray(urls) || urls.length > 8) throw bad(`${field}.urls`, 'must be an array of at most 8 URLs')
  for (const [i, u] of urls.entries()) {
    let ok = false
    try {
      const p = new URL(String(u))
      ok = typeof u === 'string' && u.length <= 2048 && (p.protocol === 'http:' || p.protocol === 'https:')
    } catch {
      ok = false
    }
    if (!ok) throw bad(`${field}.urls[${i}]`, 'must be an http or https URL')
  }
  return { sha256: v.sha256, urls: urls as string[] }
}

/**
 * Decodes padded standard base64, or throws BAD_REQUEST naming the field. Node's decoder
 * skips characters outside the alphabet (and stops at a '=' inside), so any such
 * character leaves the result shorter than the string's length promises: comparing the
 * two is the whole check, one native pass instead of a regex scan plus a decode (about
 * 1 ms less for a 224×224×3 float32 tensor). Node also takes the URL-safe '-' and '_',
 * refused here: one encoding, the documented one.
 */
function decodeBase64(s: string, field: string): Buffer {
  const want = (s.length / 4) * 3 - (s.endsWith('==') ? 2 : s.endsWith('=') ? 1 : 0)
  if (s.length % 4 !== 0 || s.includes('-') || s.includes('_')) throw bad(field, 'is not valid base64')
  const bytes = Buffer.from(s, 'base64')
  if (bytes.length !== want) throw bad(field, 'is not valid base64')
  return bytes
}

/** The values as a typed array of the dtype, viewing `bytes` when aligned (no copy). */
function typedValues(bytes: Buffer, dtype: 'float32' | 'int32'): Float32Array | Int32Array {
  const Ctor = dtype === 'int32' ? Int32Array : Float32Array
  if (bytes.byteOffset % 4 === 0) return new Ctor(bytes.buffer as ArrayBuffer, bytes.byteOffset, bytes.length / 4)
  return new Ctor(new Uint8Array(bytes).buffer)
}

export function parseInferenceParams(raw: unknown, limits: ParamLimits): InferenceParams {
  if (!isObject(raw)) throw bad('params', 'must be an object')
  onlyKeys(raw, 'params', ['model', 'input', 'topK'])
  let model: InferenceParams['model']
  if (raw.model === 'demo') model = { sha256: DEMO_MODEL_SHA256, urls: [], demo: true }
  else if (isObject(raw.model)) {
    const ref = contentRef(raw.model, 'model')
    model = { ...ref, demo: ref.sha256 === DEMO_MODEL_SHA256 }
  } else throw bad('model', 'must be "demo" or { sha256, urls? }')

  const topK = raw.topK ?? 5
  if (typeof topK !== 'number' || !Number.isInteger(topK) || topK < 1 || topK > 100) throw bad('topK', 'must be an integer from 1 to 100')

  if (!isObject(raw.input)) throw bad('input', 'must be { image } or { tensor }')
  const keys = Object.keys(raw.input)
  if (keys.length !== 1 || (keys[0] !== 'image' && keys[0] !== 'tensor')) throw bad('input', 'must have exactly one of image or tensor')
  let input: InferenceInput
  const max = limits.maxInputBytes
  if (keys[0] === 'image') {
    const img = raw.input.image
    if (!isObject(img)) throw bad('input.image', 'must be { data } or { sha256, urls? }')
    if ('data' in img) {
      onlyKeys(img, 'input.image', ['data'])
      if (typeof img.data !== 'string') throw bad('input.image.data', 'must be a base64 string')
      // Check the length before the (linear) base64 scan of a huge string.
      if ((img.data.length / 4) * 3 > max + 3) throw new CairnError('TOO_LARGE', `input.image.data: more than ${max} bytes`)
      const data = decodeBase64(img.data, 'input.image.data')
      if (data.length === 0) throw bad('input.image.data', 'is empty')
      input = { kind: 'image', data, bytes: data.length }
    } else input = { kind: 'image', ref: contentRef(img, 'input.image') }
  } else {
    const t = raw.input.tensor
    if (!isObject(t)) throw bad('input.tensor', 'must be { shape, dtype, data }')
    onlyKeys(t, 'input.tensor', ['shape', 'dtype', 'data'])
    if (!Array.isArray(t.shape) || t.shape.length < 1 || t.shape.length > 6 || !t.shape.every(d => Number.isInteger(d) && d >= 1)) {
      throw bad('input.tensor.shape', 'must be 1 to 6 positive integers')
    }
    const shape = t.shape as number[]
    if (t.dtype !== 'float32' && t.dtype !== 'int32') throw bad('input.tensor.dtype', 'must be "float32" or "int32"')
    const elements = shape.reduce((a, b) => a * b, 1)
    const bytes = elements * 4
    if (bytes > max) throw new CairnError('TOO_LARGE', `input.tensor.shape: ${elements} elements (${bytes} bytes) is more than ${max} bytes`)
    let data: Float32Array | Int32Array
    if (typeof t.data === 'string') {
      // The length first: a string of the wrong size is refused before it is decoded.
      const got = (t.data.length / 4) * 3 - (t.data.endsWith('==') ? 2 : t.data.endsWith('=') ? 1 : 0)
      if (t.data.length % 4 === 0 && got !== bytes) throw bad('input.tensor.data', `holds ${got} bytes; shape [${shape.join(', ')}] of ${t.dtype} needs ${bytes}`)
      data = typedValues(decodeBase64(t.data, 'input.tensor.data'), t.dtype)
    } else if (Array.isArray(t.data)) {
      if (t.data.length !== elements) throw bad('input.tensor.data', `holds ${t.data.length} numbers; shape [${shape.join(', ')}] needs ${elements}`)
      const okNum =
        t.dtype === 'int32' ? (n: unknown) => Number.isInteger(n) && (n as number) >= -2147483648 && (n as number) <= 2147483647 : (n: unknown) => typeof n === 'number' && Number.isFinite(n)
      const i = t.data.findIndex(n => !okNum(n))
      if (i !== -1) throw bad(`input.tensor.data[${i}]`, t.dtype === 'int32' ? 'must be a 32-bit integer' : 'must be a finite number')
      data = t.dtype === 'int32' ? Int32Array.from(t.data as number[]) : Float32Array.from(t.data as number[])
    } else throw bad('input.tensor.data', 'must be a base64 string or an array of numbers')
    input = { kind: 'tensor', shape, dtype: t.dtype, data, bytes }
  }
  // The hand checks above are stricter than the schema; this only guards against drift.
  if (!Value.Check(InferenceParamsSchema, raw)) throw bad('params', [...Value.Errors(InferenceParamsSchema, raw)][0]?.message ?? 'invalid')
  return { model, input, topK }
}
