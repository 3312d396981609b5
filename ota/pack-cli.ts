// `cairn release pack`: makes the release target of an agent version, the tar of one
// slot tree (ota/slot-pack.ts), ready for `cairn release add`; `cairn release pack-os`
// the target of a Cairn OS release (image-build/os-update/release-format.ts).

import { closeSync, openSync, readSync, writeFileSync } from 'node:fs'
import { parseArgs } from 'node:util'
import { CairnError } from '../protocol/errors.js'
import { sha256Hex } from '../protocol/hash.js'
import { isSemver } from '../protocol/semver.js'
import { packSlot } from './slot-pack.js'
import { NEUTRAL_ROOT_LABEL, packOsRelease } from '../image-build/os-update/release-format.js'


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
  io.out.write(`wrote ${values.out} (${data.length} bytes, sha256 ${sha256Hex(data)}): cairn release add --repo DIR --version ${values.version} --channel NAME ${values.out}\n`)
  return 0
}

export const PACK_OS_HELP = `  cairn release pack-os --boot DIR --root root.img --version V --out FILE.tar.zst [--level N]
              (a Cairn OS release: the boot slot's files and the root ext4 image; the image
              build makes one: image-build/build.sh --os-release)`

/** `cairn release pack-os`: the target of an OS release (image-build/os-update/release-format.ts). */
export async function packOsCmd(args: readonly string[], io: { out: Out }): Promise<number> {
  const { values } = parseArgs({
    args: [...args],
    options: { boot: { type: 'string' }, root: { type: 'string' }, version: { type: 'string' }, out: { type: 'string' }, level: { type: 'string' } },
    strict: true,
  })
  for (const req of ['boot', 'root', 'version', 'out'] as const) if (!values[req]) throw new CairnError('BAD_REQUEST', `--${req} is required\nusage:\n${PACK_OS_HELP}`)
  if (!isSemver(values.version!)) throw new CairnError('BAD_REQUEST', `--version ${values.version} is not a semantic version`)
  const level = values.level === undefined ? undefined : Number(values.level)
  if (level !== undefined && !(Number.isInteger(level) && level >= 0 && level <= 19)) throw new CairnError('BAD_REQUEST', `--level must be 0 (no compression) to 19, got ${values.level}`)
  const label = labelOf(values.root!)
  if (label !== NEUTRAL_ROOT_LABEL) throw new CairnError('BAD_REQUEST', `${values.root}: its ext4 label is ${JSON.stringify(label)}; an OS release's root carries ${NEUTRAL_ROOT_LABEL} (the device names it after the slot it lands in)`)
  let packed
  try {
    packed = await packOsRelease({ version: values.version!, bootDir: values.boot!, rootImage: values.root!, out: values.out!, ...(level !== undefined ? { level } : {}) })
  } catch (err) {
    throw new CairnError('BAD_REQUEST', (err as Error).message)
  }
  io.out.write(`wrote ${values.out} (${packed.bytes} bytes from ${packed.tarBytes}, sha256 ${packed.sha256}): cairn release add --repo DIR --kind os --arch arm64 --version ${values.version} --channel NAME ${values.out}\n`)
  return 0
}

/** The volume label of an ext4 image (its superblock, bytes 1024 + 120..136). */
function labelOf(file: string): string | undefined {
  try {
    const sb = Buffer.alloc(1024)
    const fd = openSync(file, 'r')
    try {
      readSync(fd, sb, 0, 1024, 1024)
    } finally {
      closeSync(fd)
    }
    if (sb.readUInt16LE(56) !== 0xef53) return undefined
    return sb.subarray(120, 136).toString('utf8').replace(/\0.*$/s, '')
  } catch {
    return undefined
  }
}
