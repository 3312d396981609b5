// Reading and writing a Cairn OS disk image without mounting it (FAT cannot be mounted
// on the build host): the partition table through sfdisk, FAT through mtools at a byte
// offset, ext4 through debugfs on an extracted copy.

import { execFileSync, spawnSync } from 'node:child_process'
import { closeSync, openSync, readFileSync, readSync } from 'node:fs'
import { join } from 'node:path'

export interface Partition {
  readonly n: number
  readonly startBytes: number
  readonly sizeBytes: number
  readonly type: string
}

function partitions(img: string): Partition[] {
  const t = JSON.parse(execFileSync('sfdisk', ['-J', img], { encoding: 'utf8' })) as {
    partitiontable: { sectorsize?: number; partitions: Array<{ node: string; start: number; size: number; type: string }> }
  }
  const sector = t.partitiontable.sectorsize ?? 512
  return t.partitiontable.partitions.map(p => ({ n: Number(/(\d+)$/.exec(p.node)![1]), startBytes: p.start * sector, sizeBytes: p.size * sector, type: p.type }))
}

export function partition(img: string, n: number): Partition {
  const p = partitions(img).find(x => x.n === n)
  if (!p) throw new Error(`${img}: no partition ${n}`)
  return p
}

const mtoolsEnv = { ...process.env, MTOOLS_SKIP_CHECK: '1' }
const fat = (img: string, n: number) => `${img}@@${partition(img, n).startBytes}`

export function fatList(img: string, n: number): string[] {
  const out = execFileSync('mdir', ['-b', '-i', fat(img, n), '::/'], { encoding: 'utf8', env: mtoolsEnv })
  return out
    .split('\n')
    .filter(Boolean)
    .map(l => l.replace(/^::\//, ''))
}

export function fatRead(img: string, n: number, name: string): Buffer | undefined {
  const r = spawnSync('mtype', ['-i', fat(img, n), `::/${name}`], { env: mtoolsEnv, maxBuffer: 256 * 1024 * 1024 })
  return r.status === 0 ? r.stdout : undefined
}

export function fatCopyOut(img: string, n: number, name: string, dest: string): void {
  execFileSync('mcopy', ['-n', '-i', fat(img, n), `::/${name}`, dest], { env: mtoolsEnv })
}

export function fatWrite(img: string, n: number, name: string, src: string): void {
  execFileSync('mcopy', ['-o', '-i', fat(img, n), src, `::/${name}`], { env: mtoolsEnv })
}

export function fatDelete(img: string, n: number, name: string): void {
  execFileSync('mdel', ['-i', fat(img, n), `::/${name}`], { env: mtoolsEnv })
}

/** Writes `files` (name → local file) into an ext4 partition in place (debugfs at the
 * partition's offset), replacing what is there. */
export function ext4Write(img: string, n: number | 'whole', files: Record<string, string>): void {
  const target = n === 'whole' ? img : `${img}?offset=${partition(img, n).startBytes}`
  for (const [dest, src] of Object.entries(files)) {
    spawnSync('debugfs', ['-w', '-R', `rm ${dest}`, target], { encoding: 'utf8' })
    const r = spawnSync('debugfs', ['-w', '-R', `write ${src} ${dest}`, target], { encoding: 'utf8' })
    const back = spawnSync('debugfs', ['-R', `cat ${dest}`, target], { maxBuffer: 64 << 20 })
    if (r.status !== 0 || !back.stdout.equals(readFileSync(src))) throw new Error(`debugfs could not write ${dest}: ${r.stderr}`)
  }
}

/** The raw bytes of a partition (for looking for text left in free clusters). */
export function partitionBytes(img: string, n: number): Buffer {
  const p = partition(img, n)
  const buf = Buffer.alloc(p.sizeBytes)
  const fd = openSync(img, 'r')
  try {
    readSync(fd, buf, 0, p.sizeBytes, p.startBytes)
  } finally {
    closeSync(fd)
  }
  return buf
}

/** Copies an ext4 partition out (sparse) and reads files from it with debugfs. */
export function ext4Reader(img: string, n: number, dir: string): { cat(path: string): string | undefined; ls(path: string): string } {
  const p = partition(img, n)
  const file = join(dir, `p${n}.ext4`)
  execFileSync('dd', [`if=${img}`, `of=${file}`, 'bs=1M', `skip=${p.startBytes}`, `count=${p.sizeBytes}`, 'iflag=skip_bytes,count_bytes', 'conv=sparse', 'status=none'])
  const debugfs = (req: string) => spawnSync('debugfs', ['-R', req, file], { encoding: 'utf8' })
  return {
    cat: path => {
      const r = debugfs(`cat ${path}`)
      return r.status === 0 && !/File not found/.test(r.stderr) ? r.stdout : undefined
    },
    ls: path => debugfs(`ls -l ${path}`).stdout,
  }
}

/** Names in an initramfs: concatenated newc cpio archives, each plain or compressed
 * (Debian's is a plain one with the modules, then a zstd one with the rest). */
export function initramfsList(file: string): string[] {
  const names: string[] = []
  let data = readFileSync(file)
  let i = 0
  while (i < data.length) {
    const magic = data.readUInt32LE(i)
    if (magic === 0xfd2fb528 || (data[i] === 0x1f && data[i + 1] === 0x8b) || (data[i] === 0xfd && data.subarray(i + 1, i + 6).toString() === '7zXZ\0')) {
      const tool = magic === 0xfd2fb528 ? 'zstd' : data[i] === 0x1f ? 'gzip' : 'xz'
      data = execFileSync(tool, ['-dc'], { input: data.subarray(i), maxBuffer: 512 * 1024 * 1024 })
      i = 0
      continue
    }
    if (data.subarray(i, i + 6).toString() !== '070701') throw new Error(`${file}: unknown data at byte ${i}`)
    const field = (n: number) => parseInt(data.subarray(i + 6 + n * 8, i + 14 + n * 8).toString(), 16)
    const fileSize = field(6)
    const nameSize = field(11)
    const name = data.subarray(i + 110, i + 110 + nameSize - 1).toString()
    i += ((110 + nameSize + 3) & ~3) + ((fileSize + 3) & ~3)
    if (name === 'TRAILER!!!') {
      while (i < data.length && data[i] === 0) i++
      continue
    }
    names.push(name)
  }
  return names
}
