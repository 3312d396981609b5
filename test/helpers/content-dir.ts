// A small ContentSource over a directory, for inference tests: objects are files named
// by their SHA-256; lease() fetches missing ones from the given origins (loopback only
// in tests) and verifies every byte before the object becomes visible. putUnchecked()
// plants wrong bytes under a name, to test that the executor checks again.

import { createHash } from 'node:crypto'
import { existsSync, mkdirSync, renameSync, statSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { CairnError } from '../../protocol/errors.js'
import type { ContentLease, ContentSource } from '../../agent/task/executor-port.js'

export class ContentDir implements ContentSource {
  readonly leased = new Map<string, number>()
  fetches = 0

  constructor(readonly dir: string) {
    mkdirSync(dir, { recursive: true })
  }

  put(bytes: Uint8Array): string {
    const sha = createHash('sha256').update(bytes).digest('hex')
    writeFileSync(join(this.dir, sha), bytes)
    return sha
  }

  putUnchecked(sha256: string, bytes: Uint8Array): void {
    writeFileSync(join(this.dir, sha256), bytes)
  }

  private lease0(sha256: string, fetched: boolean): ContentLease {
    const path = join(this.dir, sha256)
    this.leased.set(sha256, (this.leased.get(sha256) ?? 0) + 1)
    let released = false
    return {
      sha256,
      path,
      bytes: statSync(path).size,
      fetched,
      release: () => {
        if (released) return
        released = true
        this.leased.set(sha256, (this.leased.get(sha256) ?? 1) - 1)
      },
    }
  }

  leaseLocal(sha256: string): ContentLease | undefined {
    return existsSync(join(this.dir, sha256)) ? this.lease0(sha256, false) : undefined
  }

  async lease(sha256: string, origins: readonly string[], opts: { signal: AbortSignal; maxBytes?: number }): Promise<ContentLease> {
    const local = this.leaseLocal(sha256)
    if (local) return local
    const errors: string[] = []
    for (const url of origins) {
      this.fetches++
      const res = await fetch(url, { signal: opts.signal })
      const body = Buffer.from(await res.arrayBuffer())
      if (!res.ok) {
        errors.push(`${url}: HTTP ${res.status}`)
        continue
      }
      if (opts.maxBytes !== undefined && body.length > opts.maxBytes) {
        errors.push(`${url}: more than ${opts.maxBytes} bytes`)
        continue
      }
      const got = createHash('sha256').update(body).digest('hex')
      if (got !== sha256) {
        errors.push(`${url}: bytes hash to ${got}`)
        continue
      }
      const tmp = join(this.dir, `.tmp-${sha256}`)
      writeFileSync(tmp, body)
      renameSync(tmp, join(this.dir, sha256))
      return this.lease0(sha256, true)
    }
    throw new CairnError('CONTENT_MISMATCH', `could not fetch ${sha256}: ${errors.join('; ') || 'no origin'}`)
  }
}
