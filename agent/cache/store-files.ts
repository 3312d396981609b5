// What the content store does straight on the filesystem: the repair scan that makes
// the index agree with the object files (hashing each with protocol/hash.ts), free space.

import { lstatSync, readdirSync, rmSync, statfsSync, unlinkSync } from 'node:fs'
import { join } from 'node:path'
import { sha256File } from '../../protocol/hash.js'
import { HEX_PATTERN } from './cid.js'
import type { indexStatements } from './index-db.js'

export interface RepairReport {
  /** Files found without an index row (or with a wrong size), verified and indexed. */
  indexed: number
  /** Index rows whose file was gone. */
  forgotten: number
  /** Files that failed verification or were not objects, deleted. */
  deleted: number
  /** Temp files of interrupted downloads, deleted. */
  temps: number
}

/** Reconciles the index with the files under <dir>/objects: a file without a row, or
 * whose size disagrees with its row, is re-hashed and indexed (or deleted when its bytes
 * do not match its name); a row without a file is dropped; anything that is not an
 * object file is deleted; so are temp files, unless downloads are running. */
export async function repairIndex(dir: string, st: ReturnType<typeof indexStatements>, o: { keepTemps: boolean }): Promise<RepairReport> {
  const report: RepairReport = { indexed: 0, forgotten: 0, deleted: 0, temps: 0 }
  const tmpDir = join(dir, 'tmp')
  if (!o.keepTemps) {
    for (const name of readdirSync(tmpDir)) {
      rmSync(join(tmpDir, name), { force: true, recursive: true })
      report.temps++
    }
  }
  const onDisk = new Set<string>()
  const objects = join(dir, 'objects')
  for (const sub of readdirSync(objects)) {
    const subDir = join(objects, sub)
    if (!/^[0-9a-f]{2}$/.test(sub) || !lstatSync(subDir).isDirectory()) {
      rmSync(subDir, { force: true, recursive: true })
      report.deleted++
      continue
    }
    for (const name of readdirSync(subDir)) {
      const file = join(subDir, name)
      // lstat: a symlink, even one named like an object, is never an object.
      const s = lstatSync(file)
      if (!HEX_PATTERN.test(name) || name.slice(0, 2) !== sub || !s.isFile()) {
        rmSync(file, { force: true, recursive: true })
        report.deleted++
        continue
      }
      const row = st.get.get(name)
      if (row && row.bytes === s.size) {
        onDisk.add(name)
        continue
      }
      if ((await sha256File(file)) !== name) {
        unlinkSync(file)
        if (row) st.del.run(name)
        report.deleted++
        continue
      }
      const t = Math.floor(s.mtimeMs)
      st.put.run(name, s.size, t, t)
      onDisk.add(name)
      report.indexed++
    }
  }
  for (const row of st.all.all()) {
    if (!onDisk.has(row.sha256)) {
      st.del.run(row.sha256)
      report.forgotten++
    }
  }
  return report
}

export function diskFree(dir: string): number {
  const s = statfsSync(dir)
  return s.bavail * s.bsize
}
