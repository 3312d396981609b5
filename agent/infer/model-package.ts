// The Cairn model package: one file, so that one SHA-256 names a model exactly. It is
// a plain ustar archive (protocol/tar.ts, whose reader refuses links and paths outside the
// archive) holding
//   cairn-model.json   what Cairn needs to feed and read the model (ModelMeta below)
//   model.json         a TensorFlow.js model, layers or graph format
//   *.bin              the weight shards model.json names
// Packing is deterministic (sorted entries, fixed mtime), so the same directory always
// gives the same hash.

import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { Type, type Static } from '@sinclair/typebox'
import { Value } from '@sinclair/typebox/value'
import { CairnError } from '../../protocol/errors.js'
import { fsyncDirSync } from '../../protocol/durable-files.js'
import { sha256Hex } from '../../protocol/hash.js'
import { packTar, readTar, safeRelative, treeEntries, TarError, writeEntries } from '../../protocol/tar.js'

export const META_FILE = 'cairn-model.json'
const MODEL_FILE = 'model.json'
/** Model packages above this are refused before unpacking (a Pi has little RAM). */
export const MAX_PACKAGE_BYTES = 512 * 1024 * 1024

const ModelMetaSchema = Type.Object(
  {
    name: Type.String({ minLength: 1, maxLength: 100 }),
    version: Type.Optional(Type.Integer({ minimum: 0 })),
    /** Class names, index = position in the output vector. */
    labels: Type.Optional(Type.Array(Type.String({ maxLength: 200 }), { maxItems: 100_000 })),
    input: Type.Object({
      /** 'image': images are decoded, resized and normalised; 'tensor': only tensors are accepted. */
      kind: Type.Union([Type.Literal('image'), Type.Literal('tensor')]),
      height: Type.Optional(Type.Integer({ minimum: 1, maximum: 4096 })),
      width: Type.Optional(Type.Integer({ minimum: 1, maximum: 4096 })),
      channels: Type.Optional(Type.Union([Type.Literal(1), Type.Literal(3)])),
      layout: Type.Optional(Type.Union([Type.Literal('NHWC'), Type.Literal('NCHW')])),
      resize: Type.Optional(Type.Union([Type.Literal('bilinear'), Type.Literal('nearest')])),
      /** value = (pixel × scale − mean[c]) / std[c]; pixel is 0..255. */
      scale: Type.Optional(Type.Number()),
      mean: Type.Optional(Type.Array(Type.Number(), { minItems: 1, maxItems: 3 })),
      std: Type.Optional(Type.Array(Type.Number({ exclusiveMinimum: 0 }), { minItems: 1, maxItems: 3 })),
    }),
    output: Type.Object({
      kind: Type.Union([Type.Literal('classification'), Type.Literal('tensor')]),
      /** For classification: whether the output is already a probability (softmax). */
      activation: Type.Optional(Type.Union([Type.Literal('softmax'), Type.Literal('logits'), Type.Literal('sigmoid')])),
    }),
  },
  { additionalProperties: true },
)
export type ModelMeta = Static<typeof ModelMetaSchema>

type ModelFormat = 'layers-model' | 'graph-model'

export interface ModelJson {
  format: ModelFormat
  modelTopology: unknown
  weightsManifest: Array<{ paths: string[]; weights: unknown[] }>
  signature?: unknown
  userDefinedMetadata?: unknown
  modelInitializer?: unknown
}

function invalid(message: string, cause?: unknown): CairnError {
  return new CairnError('MODEL_INVALID', message, cause === undefined ? undefined : { cause })
}

/** Checks cairn-model.json; throws MODEL_INVALID naming the field. */
function checkMeta(raw: unknown): ModelMeta {
  if (!Value.Check(ModelMetaSchema, raw)) {
    const e = [...Value.Errors(ModelMetaSchema, raw)][0]
    throw invalid(`${META_FILE}: ${e ? `${e.path || '/'}: ${e.message}` : 'invalid'}`)
  }
  const m = raw
  if (m.input.kind === 'image' && (m.input.height === undefined || m.input.width === undefined || m.input.channels === undefined)) {
    throw invalid(`${META_FILE}: /input: an image model needs height, width and channels`)
  }
  for (const k of ['mean', 'std'] as const) {
    const v = m.input[k]
    if (v !== undefined && v.length !== 1 && v.length !== (m.input.channels ?? 1)) throw invalid(`${META_FILE}: /input/${k}: needs 1 or ${m.input.channels} values`)
  }
  return m
}

/** Checks model.json's shape and that every shard it names is a safe relative path. */
function checkModelJson(raw: unknown): ModelJson {
  const m = raw as Partial<ModelJson> | null
  if (typeof m !== 'object' || m === null) throw invalid(`${MODEL_FILE}: not a JSON object`)
  if (m.format !== 'layers-model' && m.format !== 'graph-model') throw invalid(`${MODEL_FILE}: /format must be "layers-model" or "graph-model"`)
  if (typeof m.modelTopology !== 'object' || m.modelTopology === null) throw invalid(`${MODEL_FILE}: /modelTopology missing`)
  if (!Array.isArray(m.weightsManifest)) throw invalid(`${MODEL_FILE}: /weightsManifest must be an array`)
  for (const [i, g] of m.weightsManifest.entries()) {
    if (!Array.isArray(g?.paths) || !Array.isArray(g.weights)) throw invalid(`${MODEL_FILE}: /weightsManifest/${i} needs paths and weights`)
    for (const p of g.paths) {
      try {
        if (typeof p !== 'string' || safeRelative(p) === '') throw new TarError('empty')
      } catch {
        throw invalid(`${MODEL_FILE}: /weightsManifest/${i}/paths: unsafe shard path ${JSON.stringify(p)}`)
      }
    }
  }
  return m as ModelJson
}

/** Packs a directory holding cairn-model.json, model.json and its shards into one
 * package; returns its bytes and SHA-256. Checks the same things the device checks. */
export function packModel(dir: string): { bytes: Buffer; sha256: string } {
  checkMeta(JSON.parse(readFileSync(join(dir, META_FILE), 'utf8')))
  const mj = checkModelJson(JSON.parse(readFileSync(join(dir, MODEL_FILE), 'utf8')))
  for (const g of mj.weightsManifest) for (const p of g.paths) if (!existsSync(join(dir, p))) throw invalid(`${MODEL_FILE} names ${p}, which is not in ${dir}`)
  const entries = treeEntries(dir).map(e => ({ ...e, mode: e.type === 'dir' ? 0o755 : 0o644 }))
  const bytes = packTar(entries)
  return { bytes, sha256: sha256Hex(bytes) }
}

/** Writes a model directory from in-memory parts (the demo trainer and tests use it). */
export function writeModelDir(dir: string, parts: { meta: ModelMeta; modelJson: ModelJson; shards: Record<string, Uint8Array> }): void {
  mkdirSync(dir, { recursive: true })
  writeFileSync(join(dir, META_FILE), JSON.stringify(parts.meta, null, 2) + '\n')
  writeFileSync(join(dir, MODEL_FILE), JSON.stringify(parts.modelJson))
  for (const [name, data] of Object.entries(parts.shards)) writeFileSync(join(dir, name), data)
}

/**
 * Unpacks the package at `file` into `modelsDir/<sha256>/` unless it is there already,
 * and returns that directory. The file's hash is checked here again, whatever the
 * ContentSource did: a mismatch unpacks nothing. A temp directory is renamed into place,
 * so a crash never leaves a half-unpacked model that looks complete.
 */
export function unpackModel(file: string, sha256: string, modelsDir: string): string {
  const dest = join(modelsDir, sha256)
  if (existsSync(join(dest, META_FILE))) return dest
  // The size from the file system first: reading an oversized package would be the harm.
  const size = statSync(file).size
  if (size > MAX_PACKAGE_BYTES) throw invalid(`model package is ${size} bytes, more than ${MAX_PACKAGE_BYTES}`)
  const bytes = readFileSync(file)
  const actual = sha256Hex(bytes)
  if (actual !== sha256) throw new CairnError('CONTENT_MISMATCH', `model package hashes to ${actual}, not ${sha256}: not loaded`)
  let entries
  try {
    entries = readTar(bytes, { maxBytes: MAX_PACKAGE_BYTES, maxEntries: 1000 })
  } catch (err) {
    throw invalid(`model package is not a valid tar: ${(err as Error).message}`, err)
  }
  const byPath = new Map(entries.map(e => [e.path, e]))
  const metaEntry = byPath.get(META_FILE)
  const modelEntry = byPath.get(MODEL_FILE)
  if (!metaEntry?.data || !modelEntry?.data) throw invalid(`model package needs ${META_FILE} and ${MODEL_FILE} at its top level`)
  checkMeta(parseJson(metaEntry.data, META_FILE))
  const mj = checkModelJson(parseJson(modelEntry.data, MODEL_FILE))
  for (const g of mj.weightsManifest) for (const p of g.paths) if (!byPath.has(safeRelative(p))) throw invalid(`${MODEL_FILE} names shard ${p}, which is not in the package`)
  mkdirSync(modelsDir, { recursive: true })
  const tmp = join(modelsDir, `.tmp-${sha256}-${process.pid}-${Date.now()}`)
  rmSync(tmp, { recursive: true, force: true })
  mkdirSync(tmp)
  try {
    writeEntries(entries, tmp)
    try {
      renameSync(tmp, dest)
    } catch (err) {
      // Another process unpacked the same model meanwhile: same bytes, keep theirs.
      if (!existsSync(join(dest, META_FILE))) throw err
    }
    fsyncDirSync(dirname(dest))
  } finally {
    rmSync(tmp, { recursive: true, force: true })
  }
  return dest
}

function parseJson(data: Buffer, what: string): unknown {
  try {
    return JSON.parse(data.toString('utf8'))
  } catch (err) {
    throw invalid(`${what} is not valid JSON: ${(err as Error).message}`, err)
  }
}

/** Reads an unpacked model directory (as unpackModel left it). */
export function readModelDir(dir: string): { meta: ModelMeta; modelJson: ModelJson } {
  const meta = checkMeta(parseJson(readFileSync(join(dir, META_FILE)), META_FILE))
  const modelJson = checkModelJson(parseJson(readFileSync(join(dir, MODEL_FILE)), MODEL_FILE))
  return { meta, modelJson }
}
