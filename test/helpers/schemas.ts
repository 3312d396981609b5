// Validates payloads against the JSON Schemas published in docs/schemas, with Ajv: an
// independent validator reading the files users read, not the TypeBox objects.

import { readFileSync } from 'node:fs'
import { Ajv, type ValidateFunction } from 'ajv'

const ajv = new Ajv({ allErrors: true, strict: true, strictTuples: false })
const cache = new Map<string, ValidateFunction>()

function docSchema(name: string): ValidateFunction {
  let v = cache.get(name)
  if (!v) {
    const schema = JSON.parse(readFileSync(new URL(`../../docs/schemas/${name}.json`, import.meta.url), 'utf8'))
    v = ajv.compile(schema)
    cache.set(name, v)
  }
  return v
}

/** Returns null when valid, else a readable list of errors. */
export function schemaErrors(name: string, payload: unknown): string | null {
  const v = docSchema(name)
  return v(payload) ? null : ajv.errorsText(v.errors, { dataVar: name })
}
