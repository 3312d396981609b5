// OS slot write benchmark, run by bench/run.ts (`npm run bench`, BENCH_ONLY=os-write): the
// root helper's write of an OS release into the inactive pair (writeOsSlot: copy the
// release into root's staging dir while hashing it, then unpack that verified copy onto
// the partitions, e2fsck, resize2fs, label, mkfs.vfat + mcopy), against the shortest
// shell pipeline that checks and writes the same release:
//   sha256sum release && zstd -dc release | tar -xO root.img | dd of=root conv=fsync
// plus the same finishing commands. The pipeline checks one copy of the file and writes
// another read of it (the agent could swap the bytes in between); the helper's extra
// copy is what closing that gap costs. "Partitions" are plain files here, in the same
// temp dir, so both write through the same file system. Rounds alternate, medians.

import { execFileSync } from 'node:child_process'
import { createHash } from 'node:crypto'
import { mkdirSync, statSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { packOsRelease } from '../image-build/os-update/release-format.js'
import { writeOsSlot, type SlotTarget } from '../image-build/os-update/write-slot.js'
import type { BenchKit } from './proofs.js'

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!
const mtools = { env: { ...process.env, MTOOLS_SKIP_CHECK: '1' } }

export async function benchOsWrite(kit: BenchKit): Promise<Record<string, unknown>> {
  const dir = kit.tmp('cairn-bench-os-')
  const rootMiB = kit.quick ? 96 : 256
  // a root tree: half incompressible data, half text-like (compresses as a real root does)
  const tree = join(dir, 'tree')
  mkdirSync(join(tree, 'etc'), { recursive: true })
  writeFileSync(join(tree, 'etc', 'cairn-release'), 'CAIRN_VERSION=2.0.0\n')
  const random = Buffer.alloc((rootMiB / 2) << 20)
  for (let i = 0; i < random.length; i += 32) createHash('sha256').update(String(i)).digest().copy(random, i)
  writeFileSync(join(tree, 'blob.bin'), random)
  writeFileSync(join(tree, 'text.txt'), Buffer.from('cairn os release benchmark line\n'.repeat(((rootMiB / 4) << 20) / 32)))
  const root = join(dir, 'root.img')
  execFileSync('mke2fs', ['-q', '-F', '-t', 'ext4', '-L', 'cairn-root', '-d', tree, root, `${rootMiB}M`])
  const boot = join(dir, 'boot')
  mkdirSync(boot)
  writeFileSync(join(boot, 'config.txt'), '[all]\narm_64bit=1\n')
  writeFileSync(join(boot, 'cmdline.txt'), 'root=LABEL=cairn-rootA rootwait panic=10\n')
  writeFileSync(join(boot, 'vmlinuz'), random.subarray(0, 20 << 20))
  const release = join(dir, 'cairn-os-2.0.0.tar.zst')
  const packed = await packOsRelease({ version: '2.0.0', bootDir: boot, rootImage: root, out: release, level: 3 })
  kit.log(`release: ${packed.bytes} bytes (${packed.tarBytes} as tar, root ${rootMiB} MiB)`)

  const target = (name: string): SlotTarget => {
    const d = join(dir, name)
    mkdirSync(d, { recursive: true })
    execFileSync('truncate', ['-s', `${rootMiB + 64}M`, join(d, 'root')])
    execFileSync('truncate', ['-s', '64M', join(d, 'boot')])
    return {
      rootDevice: join(d, 'root'),
      rootBytes: (rootMiB + 64) << 20,
      rootLabel: 'cairn-rootB',
      bootDevice: join(d, 'boot'),
      bootBytes: 64 << 20,
      bootLabel: 'CAIRN-BOOTB',
      staging: join(d, 'staging'),
    }
  }
  const helper = async (): Promise<number> => {
    const t = target('helper')
    const t0 = performance.now()
    await writeOsSlot(release, '2.0.0', { length: packed.bytes, sha256: packed.sha256 }, t)
    return (performance.now() - t0) / 1000
  }
  const pipeline = async (): Promise<number> => {
    const t = target('pipeline')
    const stage = join(dir, 'pipeline', 'bootfiles')
    mkdirSync(stage, { recursive: true })
    const t0 = performance.now()
    const sha = execFileSync('sha256sum', [release], { encoding: 'utf8' }).split(' ')[0]
    if (sha !== packed.sha256) throw new Error('baseline: hash mismatch')
    execFileSync('sh', ['-c', 'zstd -dc "$1" | tar -xO root.img | dd of="$2" bs=4M conv=fsync,notrunc status=none', 'sh', release, t.rootDevice])
    execFileSync('sh', ['-c', 'zstd -dc "$1" | tar -x -C "$2" --strip-components=1 boot', 'sh', release, stage])
    for (const [cmd, args] of [
      ['e2fsck', ['-f', '-p', t.rootDevice]],
      ['resize2fs', [t.rootDevice]],
      ['e2label', [t.rootDevice, 'cairn-rootB']],
      ['mkfs.vfat', ['-n', 'CAIRN-BOOTB', t.bootDevice]],
    ] as const)
      execFileSync(cmd, [...args], { stdio: 'ignore' })
    execFileSync('sh', ['-c', 'mcopy -s -i "$1" "$2"/* ::/ && sync', 'sh', t.bootDevice, stage], mtools)
    return (performance.now() - t0) / 1000
  }
  const rounds = kit.quick ? 2 : 3
  const h: number[] = []
  const p: number[] = []
  for (let i = 0; i < rounds; i++) {
    p.push(await pipeline())
    h.push(await helper())
    kit.log(`round ${i + 1}: helper ${h[i]!.toFixed(2)} s, pipeline ${p[i]!.toFixed(2)} s`)
  }
  const hs = median(h)
  const ps = median(p)
  const mbps = (s: number) => Math.round((statSync(root).size / s / 1e6) * 10) / 10
  kit.row({
    bench: 'os-write',
    figure: `OS slot write (${rootMiB} MiB root, ${(packed.bytes / 1e6).toFixed(0)} MB release): seconds`,
    value: Math.round(hs * 100) / 100,
    unit: 's',
    baseline: Math.round(ps * 100) / 100,
    ratio: hs / ps,
    verdict: 'info',
    note: `helper ${mbps(hs)} MB/s of root image vs the check-then-write pipeline ${mbps(ps)} MB/s; the helper also copies the release once (what closes the gap between check and write)`,
  })
  return { rootMiB, releaseBytes: packed.bytes, helperS: h, pipelineS: p, ratio: hs / ps }
}
