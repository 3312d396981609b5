// Filesystem capacity of the mount points the node stores data on.
// statfs asks the kernel about a live mount, which a directory tree cannot fake, so
// these paths are real paths and are NOT prefixed by the context root; tests pass a
// temporary directory instead.
import { statfs } from 'node:fs/promises'
import { round } from './context.js'

export interface DiskSample {
  path: string
  totalBytes: number
  freeBytes: number
  /** What an unprivileged process may still write (free minus the root reserve). */
  availableBytes: number
  usedPercent: number
}

export async function readDisk(path: string): Promise<DiskSample | undefined> {
  try {
    const s = await statfs(path)
    const total = s.blocks * s.bsize
    const free = s.bfree * s.bsize
    const available = s.bavail * s.bsize
    const used = total - free
    // df's definition: the root reserve counts neither as used nor as available.
    const usable = used + available
    return {
      path,
      totalBytes: total,
      freeBytes: free,
      availableBytes: available,
      usedPercent: usable > 0 ? round((used / usable) * 100, 1) : 0,
    }
  } catch {
    return undefined
  }
}
