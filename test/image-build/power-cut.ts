// What the power cut test (boot.ts, "power cuts") checks on the disk and on the wire:
// the data partition as the next boot would find it (ext4's journal replayed, then a
// read-only fsck), every SQLite database of the agent through `PRAGMA integrity_check`,
// the chain head and the remote configuration it holds; and the heartbeats the broker
// saw, as one chain.

import { execFileSync, spawnSync } from 'node:child_process'
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs'
import { join } from 'node:path'
import Database from 'better-sqlite3'
import { messageHash } from '../../protocol/proof-format.js'
import type { ProofEnvelope } from '../../protocol/proof-format.js'

/** A small seeded generator (mulberry32): the cut moments of a run can be repeated. */
export function seeded(seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let x = Math.imul(a ^ (a >>> 15), 1 | a)
    x = (x + Math.imul(x ^ (x >>> 7), 61 | x)) ^ x
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296
  }
}

interface DiskAfterCut {
  /** e2fsck -E journal_only: the journal replay the next mount would do */
  readonly replay: { status: number | null; out: string }
  /** e2fsck -fn after the replay: 0 when the file system is clean */
  readonly fsck: { status: number | null; out: string }
  /** every *.db under the agent's state dir, relative path → integrity_check's answer */
  readonly databases: Record<string, string>
  /** the chain head in state.db: its last heartbeat */
  readonly head: { seq: number; hash: string } | undefined
  /** seq → hash of the heartbeats state.db still holds */
  readonly heartbeats: ReadonlyMap<number, string>
  /** <stateDir>/config.remote.json (set-config), parsed */
  readonly remoteConfig: { telemetry?: { periodS?: number } } | undefined
}

/** Reads the data partition (bytes `start`…`start+size` of `img`) as the next boot finds
 * it, in a scratch copy under `dir` (removed afterwards). `stateDir` is the agent's state
 * dir on that partition. */
export function diskAfterCut(img: string, start: number, size: number, stateDir: string, dir: string): DiskAfterCut {
  mkdirSync(dir, { recursive: true })
  const fs = join(dir, 'data.ext4')
  try {
    execFileSync('dd', [`if=${img}`, `of=${fs}`, 'bs=1M', `skip=${start}`, `count=${size}`, 'iflag=skip_bytes,count_bytes', 'conv=sparse', 'status=none'])
    const run = (args: string[]) => {
      const r = spawnSync('e2fsck', args, { encoding: 'utf8' })
      return { status: r.status, out: `${r.stdout}${r.stderr}`.trim() }
    }
    const replay = run(['-E', 'journal_only', '-y', fs])
    const fsck = run(['-f', '-n', fs])
    const out = join(dir, 'state')
    mkdirSync(out)
    const dump = spawnSync('debugfs', ['-R', `rdump ${stateDir} ${out}`, fs], { encoding: 'utf8' })
    const base = join(out, stateDir.split('/').pop()!)
    if (!existsSync(join(base, 'state.db'))) throw new Error(`no state.db under ${stateDir} on the data partition: ${dump.stderr}`)
    const databases: Record<string, string> = {}
    let head: DiskAfterCut['head']
    const heartbeats = new Map<number, string>()
    for (const rel of walk(base).filter(f => f.endsWith('.db'))) {
      // opened read-write: SQLite rolls a hot WAL into its view as the agent would at start
      const db = new Database(join(base, rel))
      try {
        databases[rel] = (db.pragma('integrity_check') as Array<{ integrity_check: string }>).map(r => r.integrity_check).join('; ')
        if (rel === 'state.db') {
          for (const r of db.prepare('SELECT seq, hash FROM heartbeats ORDER BY seq').all() as Array<{ seq: number; hash: string }>) heartbeats.set(r.seq, r.hash)
          const last = [...heartbeats].pop()
          head = last ? { seq: last[0], hash: last[1] } : undefined
        }
      } finally {
        db.close()
      }
    }
    const remote = join(base, 'config.remote.json')
    const remoteConfig = existsSync(remote) ? (JSON.parse(readFileSync(remote, 'utf8')) as DiskAfterCut['remoteConfig']) : undefined
    return { replay, fsck, databases, head, heartbeats, remoteConfig }
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}

function walk(dir: string, prefix = ''): string[] {
  return readdirSync(dir).flatMap(name => {
    const rel = prefix ? `${prefix}/${name}` : name
    return statSync(join(dir, name)).isDirectory() ? walk(join(dir, name), rel) : [rel]
  })
}

interface Link {
  readonly seq: number
  readonly prev: string
  readonly hash: string
}

/** The heartbeats one device published, as the chain they must form: one hash per `seq`
 * (a redelivery repeats the same bytes), every `prev` the hash of the heartbeat before,
 * no `seq` missing between the first and the last. Returns what is wrong, [] if nothing. */
export function chainProblems(envelopes: ReadonlyArray<ProofEnvelope<{ seq: number; prev: string }>>): string[] {
  const bySeq = new Map<number, Set<string>>()
  const links: Link[] = []
  for (const e of envelopes) {
    const link = { seq: e.body.seq, prev: e.body.prev, hash: messageHash(e) }
    links.push(link)
    const set = bySeq.get(link.seq) ?? new Set<string>()
    set.add(link.hash)
    bySeq.set(link.seq, set)
  }
  const problems: string[] = []
  for (const [seq, hashes] of bySeq) if (hashes.size > 1) problems.push(`seq ${seq} signed ${hashes.size} times with different content (an equivocation)`)
  for (const l of links) {
    const before = bySeq.get(l.seq - 1)
    if (before && !before.has(l.prev)) problems.push(`seq ${l.seq}'s prev is not the hash of seq ${l.seq - 1} (a fork)`)
  }
  const seqs = [...bySeq.keys()].sort((a, b) => a - b)
  for (let i = 1; i < seqs.length; i++) if (seqs[i]! !== seqs[i - 1]! + 1) problems.push(`seqs ${seqs[i - 1]! + 1}…${seqs[i]! - 1} never arrived`)
  return problems
}
