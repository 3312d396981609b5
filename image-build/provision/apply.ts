// Performs provisioning steps on a file system root ('/' on the device, a temp dir in
// tests). Each file is written to a temporary name, synced and renamed, so a power cut
// leaves the old file or the new one, never half of one.

import { chownSync, closeSync, fsyncSync, lstatSync, mkdirSync, openSync, renameSync, rmSync, symlinkSync, writeSync, chmodSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fsyncDirSync } from '../../protocol/durable-files.js'
import type { Owner, Step } from './provision-plan.js'

export interface ApplyOptions {
  /** prefix for every absolute path in the steps */
  readonly root: string
  /** set file owners (only possible as root; tests run without) */
  readonly chown: boolean
}

export function applySteps(steps: readonly Step[], opts: ApplyOptions): void {
  const at = (p: string) => join(opts.root, p)
  const own = (p: string, o: Owner | undefined) => {
    if (o && opts.chown) chownSync(p, o.uid, o.gid)
  }
  for (const step of steps) {
    const p = at(step.path)
    switch (step.kind) {
      case 'mkdir':
        // A directory the agent's user owns (its state dir) could have been swapped for a
        // link since the last boot: root must never chmod or chown through it.
        if (isLink(p)) rmSync(p)
        mkdirSync(p, { recursive: true })
        if (isLink(p)) throw new Error(`${p} is a symbolic link`)
        chmodSync(p, step.mode)
        own(p, step.owner)
        break
      case 'write': {
        mkdirSync(dirname(p), { recursive: true })
        const tmp = `${p}.tmp-${process.pid}`
        const fd = openSync(tmp, 'w', step.mode)
        try {
          writeSync(fd, step.content)
          fsyncSync(fd)
        } finally {
          closeSync(fd)
        }
        chmodSync(tmp, step.mode)
        own(tmp, step.owner)
        renameSync(tmp, p)
        break
      }
      case 'symlink': {
        mkdirSync(dirname(p), { recursive: true })
        const tmp = `${p}.tmp-${process.pid}`
        rmSync(tmp, { force: true })
        symlinkSync(step.target, tmp)
        renameSync(tmp, p)
        break
      }
      case 'remove':
        if (exists(p)) rmSync(p, { recursive: step.recursive ?? false, force: true })
        break
    }
  }
  syncDirs(steps.map(s => dirname(at(s.path))))
}

function isLink(p: string): boolean {
  try {
    return lstatSync(p).isSymbolicLink()
  } catch {
    return false
  }
}

function exists(p: string): boolean {
  try {
    lstatSync(p)
    return true
  } catch {
    return false
  }
}

function syncDirs(dirs: readonly string[]): void {
  // Best effort: a directory may have been removed by a later step.
  for (const d of new Set(dirs)) fsyncDirSync(d)
}
