// `cairn release pack-os`: makes the target of a Cairn OS release (release-format.ts):
// the boot slot's files and the root ext4 image, ready for `cairn release add --kind os`.
// It sits with the OS image because the format is the image's; the composition room
// adds it under `cairn release`.

import { closeSync, openSync, readSync } from 'node:fs'
import { Command } from 'commander'
import { CairnError } from '../../protocol/errors.js'
import { isSemver } from '../../protocol/semver.js'
import { NEUTRAL_ROOT_LABEL, packOsRelease } from './release-format.js'

type Out = { write(s: string): unknown }

interface PackOsOptions {
  boot: string
  root: string
  version: string
  out: string
  level?: string
}

export function packOsCommand(io: { out: Out }): Command {
  return new Command('pack-os')
    .description("make a Cairn OS release's target: the boot slot's files and the root ext4 image (image-build/build.sh --os-release makes one)")
    .requiredOption('--boot <dir>', "the boot slot's files")
    .requiredOption('--root <file>', `the root ext4 image (labelled ${NEUTRAL_ROOT_LABEL})`)
    .requiredOption('--version <v>', 'the release version (semver)')
    .requiredOption('--out <file>', 'where to write it (FILE.tar.zst)')
    .option('--level <n>', 'zstd level, 0 (no compression) to 19')
    .addHelpText(
      'after',
      `
Example:
  cairn release pack-os --boot out/boot --root out/root.img --version 0.2.0 --out cairn-os-0.2.0.tar.zst`,
    )
    .action(async (o: PackOsOptions) => {
      if (!isSemver(o.version)) throw new CairnError('BAD_REQUEST', `--version ${o.version} is not a semantic version`)
      const level = o.level === undefined ? undefined : Number(o.level)
      if (level !== undefined && !(Number.isInteger(level) && level >= 0 && level <= 19)) throw new CairnError('BAD_REQUEST', `--level must be 0 (no compression) to 19, got ${o.level}`)
      const label = labelOf(o.root)
      if (label !== NEUTRAL_ROOT_LABEL)
        throw new CairnError(
          'BAD_REQUEST',
          `${o.root}: its ext4 label is ${JSON.stringify(label)}; an OS release's root carries ${NEUTRAL_ROOT_LABEL} (the device names it after the slot it lands in)`,
        )
      let packed
      try {
        packed = await packOsRelease({ version: o.version, bootDir: o.boot, rootImage: o.root, out: o.out, ...(level !== undefined ? { level } : {}) })
      } catch (err) {
        throw new CairnError('BAD_REQUEST', (err as Error).message)
      }
      io.out.write(
        `wrote ${o.out} (${packed.bytes} bytes from ${packed.tarBytes}, sha256 ${packed.sha256}): cairn release add --repo DIR --kind os --arch arm64 --version ${o.version} --channel NAME ${o.out}\n`,
      )
    })
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
