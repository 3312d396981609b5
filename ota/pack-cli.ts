// `cairn release pack`: makes the release target of an agent version, the tar of one
// slot tree (ota/slot-pack.ts), ready for `cairn release add`. (`cairn release pack-os`,
// the target of a Cairn OS release, lives with the OS image: image-build/os-update/.)

import { writeFileSync } from 'node:fs'
import { Command } from 'commander'
import { CairnError } from '../protocol/errors.js'
import { sha256Hex } from '../protocol/hash.js'
import { isSemver } from '../protocol/semver.js'
import { packSlot } from './slot-pack.js'

type Out = { write(s: string): unknown }

interface PackOptions {
  bundle: string
  version: string
  out: string
  nodeModules?: string
  gzip?: boolean
}

export function packCommand(io: { out: Out }): Command {
  return new Command('pack')
    .description("make an agent release's target: the slot tree as one tar (bundle, VERSION, better-sqlite3 for the target's arch)")
    .requiredOption('--bundle <file>', 'the built CLI bundle (dist/cairn.mjs)')
    .requiredOption('--version <v>', 'the release version (semver)')
    .requiredOption('--out <file>', 'where to write the tar')
    .option('--node-modules <dir>', "node_modules to take better-sqlite3 from (built for the target's arch)")
    .option('--gzip', 'compress the tar')
    .addHelpText(
      'after',
      `
Example:
  cairn release pack --bundle dist/cairn.mjs --version 1.4.0 --out cairn-agent-arm64.tar --node-modules arm64/node_modules`,
    )
    .action((o: PackOptions) => {
      if (!isSemver(o.version)) throw new CairnError('BAD_REQUEST', `--version ${o.version} is not a semantic version`)
      let data: Buffer
      try {
        data = packSlot({ bundle: o.bundle, version: o.version, gzip: o.gzip === true, ...(o.nodeModules ? { nodeModules: o.nodeModules } : {}) })
      } catch (err) {
        throw new CairnError('BAD_REQUEST', (err as Error).message)
      }
      writeFileSync(o.out, data)
      io.out.write(`wrote ${o.out} (${data.length} bytes, sha256 ${sha256Hex(data)}): cairn release add --repo DIR --version ${o.version} --channel NAME ${o.out}\n`)
    })
}
