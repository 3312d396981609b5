// `cairn release pack`: makes the release target of an agent version, the tar of one
// slot tree (ota/slot-pack.ts), ready for `cairn release add`.

import { createHash } from 'node:crypto'
import { writeFileSync } from 'node:fs'
import { parseArgs } from 'node:util'
import { CairnError } from '../agent/errors.js'
import { isSemver } from './semver.js'
import { packSlot } from './slot-pack.js'

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex')

type Out = { write(s: string): unknown }

export const PACK_HELP = `  cairn release pack --bundle dist/cairn.mjs --version V --out FILE [--node-modules DIR] [--gzip]
              (the slot tree as one tar: bundle, VERSION, better-sqlite3 for the target's arch)`

export function packCmd(args: readonly string[], io: { out: Out }): number {
  const { values } = parseArgs({
    args: [...args],
    options: { bundle: { type: 'string' }, version: { type: 'string' }, out: { type: 'string' }, 'node-modules': { type: 'string' }, gzip: { type: 'boolean' } },
    strict: true,
  })
  for (const req of ['bundle', 'version', 'out'] as const) if (!values[req]) throw new CairnError('BAD_REQUEST', `--${req} is required\nusage:\n${PACK_HELP}`)
  if (!isSemver(values.version!)) throw new CairnError('BAD_REQUEST', `--version ${values.version} is not a semantic version`)
  let data: Buffer
  try {
    data = packSlot({ bundle: values.bundle!, version: values.version!, gzip: values.gzip === true, ...(values['node-modules'] ? { nodeModules: values['node-modules'] } : {}) })
  } catch (err) {
    throw new CairnError('BAD_REQUEST', (err as Error).message)
  }
  writeFileSync(values.out!, data)
  io.out.write(`wrote ${values.out} (${data.length} bytes, sha256 ${sha256(data)}): cairn release add --repo DIR --version ${values.version} --channel NAME ${values.out}\n`)
  return 0
}
