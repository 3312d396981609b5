// OS releases end to end below the agent: `cairn release pack-os`'s format (packOsRelease),
// the helper's streaming reader and its refusals, the slot writer on real file systems
// (partition "devices" are plain files here: mke2fs, e2fsck, resize2fs, e2label,
// mkfs.vfat and mtools work on them as on /dev/mmcblk0pN), and the helper's own TUF
// check against a real repository on loopback.

import t from 'tap'
import { execFileSync, spawnSync } from 'node:child_process'
import { createHash } from 'node:crypto'
import { existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { packOsRelease, readOsRelease, ReleaseFormatError, type ChunkWriter, type OsReleaseSink } from '../../image-build/os-update/release-format.js'
import { writeOsSlot, type SlotTarget } from '../../image-build/os-update/write-slot.js'
import { verifyOsTarget, VerifyError } from '../../image-build/os-update/verify-release.js'
import { packTar, type TarEntry } from '../../protocol/tar.js'
import { makeRepo, serveRepo, tmp } from '../helpers/release.js'

const TOOLS = ['mke2fs', 'e2fsck', 'resize2fs', 'e2label', 'debugfs', 'mkfs.vfat', 'mcopy', 'mdir', 'mtype', 'zstd']
const missing = TOOLS.filter(c => spawnSync('sh', ['-c', `command -v ${c} || test -x /usr/sbin/${c} || test -x /sbin/${c}`]).status !== 0)
if (missing.length) t.comment(`skipping the slot writer tests: ${missing.join(', ')} not installed (apt-get install e2fsprogs dosfstools mtools zstd; .ci/run does)`)

const sha256 = (f: string) => createHash('sha256').update(readFileSync(f)).digest('hex')
const mtools = { env: { ...process.env, MTOOLS_SKIP_CHECK: '1' }, encoding: 'utf8' as const }

/** A small OS release as the build makes one: boot files, a root ext4 image labelled cairn-root. */
function buildRelease(dir: string, version: string, opts: { rootMiB?: number } = {}) {
  const boot = join(dir, `boot-${version}`)
  const tree = join(dir, `tree-${version}`)
  mkdirSync(join(boot, 'overlays'), { recursive: true })
  mkdirSync(join(tree, 'etc'), { recursive: true })
  writeFileSync(join(boot, 'config.txt'), '[all]\narm_64bit=1\nkernel=vmlinuz\n')
  writeFileSync(join(boot, 'cmdline.txt'), 'console=ttyS1,115200 root=LABEL=cairn-rootA rootfstype=ext4 rootwait rw panic=10\n')
  writeFileSync(join(boot, 'vmlinuz'), Buffer.alloc(300_000, 7))
  writeFileSync(join(boot, 'overlays', 'disable-bt.dtbo'), 'dtbo')
  writeFileSync(join(tree, 'etc', 'cairn-release'), `CAIRN_VERSION=${version}\n`)
  writeFileSync(join(tree, 'big.bin'), Buffer.alloc(2 << 20, 3))
  const root = join(dir, `root-${version}.img`)
  execFileSync('mke2fs', ['-q', '-F', '-t', 'ext4', '-L', 'cairn-root', '-d', tree, root, `${opts.rootMiB ?? 8}M`])
  return { boot, root }
}

/** The inactive pair: a 24 MiB root and a 16 MiB boot "partition". */
function slotB(dir: string): SlotTarget {
  mkdirSync(dir, { recursive: true })
  const rootDevice = join(dir, 'p6')
  const bootDevice = join(dir, 'p3')
  execFileSync('truncate', ['-s', '24M', rootDevice])
  execFileSync('truncate', ['-s', '16M', bootDevice])
  return { rootDevice, rootBytes: 24 << 20, rootLabel: 'cairn-rootB', bootDevice, bootBytes: 16 << 20, bootLabel: 'CAIRN-BOOTB', staging: join(dir, 'staging') }
}

const file = (path: string, data: string | Buffer): TarEntry => ({ path, type: 'file', mode: 0o644, data: Buffer.from(data) })
const dir_ = (path: string): TarEntry => ({ path, type: 'dir', mode: 0o755 })
const labelOf = (dev: string) => spawnSync('e2label', [dev], { encoding: 'utf8' }).stdout.trim()

t.test('pack and write: the inactive pair ends up bootable, named after its slot', { skip: missing.length > 0 && `needs ${missing.join(', ')}` }, async t => {
  const dir = tmp('cairn-os-release-')
  const { boot, root } = buildRelease(dir, '2.0.0')
  const out = join(dir, 'cairn-os-2.0.0.tar.zst')
  const packed = await packOsRelease({ version: '2.0.0', bootDir: boot, rootImage: root, out })
  t.equal(packed.bytes, statSync(out).size)
  t.equal(packed.sha256, sha256(out), 'the packer reports the hash TUF will sign')
  t.ok(packed.bytes < packed.tarBytes / 4, `zstd: ${packed.tarBytes} tar bytes in ${packed.bytes}`)
  t.same(
    execFileSync('sh', ['-c', 'zstd -dc "$1" | tar -t', 'sh', out], { encoding: 'utf8' }).trim().split('\n'),
    ['VERSION', 'boot/', 'boot/cmdline.txt', 'boot/config.txt', 'boot/overlays/', 'boot/overlays/disable-bt.dtbo', 'boot/vmlinuz', 'root.img'],
    'GNU tar reads it: VERSION, boot/, root.img, in that order',
  )

  const target = slotB(dir)
  const report = await writeOsSlot(out, '2.0.0', { length: packed.bytes, sha256: packed.sha256 }, target)
  t.match(report, { rootBytes: statSync(root).size, bootFiles: 4 })
  t.equal(labelOf(target.rootDevice), 'cairn-rootB', 'the root is named after its slot only now')
  const sb = execFileSync('dumpe2fs', ['-h', target.rootDevice], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] })
  const fsBytes = Number(/Block count:\s+(\d+)/.exec(sb)![1]) * Number(/Block size:\s+(\d+)/.exec(sb)![1])
  t.ok(statSync(root).size < 9 << 20 && fsBytes === 24 << 20, `grown from the 8 MiB image to fill the 24 MiB partition (${fsBytes} bytes)`)
  t.equal(
    execFileSync('debugfs', ['-R', 'cat /etc/cairn-release', target.rootDevice], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }),
    'CAIRN_VERSION=2.0.0\n',
    'the release root is on the partition',
  )
  execFileSync('e2fsck', ['-fn', target.rootDevice], { stdio: 'ignore' })
  const files = execFileSync('mdir', ['-b', '-i', target.bootDevice, '::/'], mtools)
    .split('\n')
    .filter(Boolean)
    .map(l => l.replace(/^::\//, ''))
  t.same(files.sort(), ['cmdline.txt', 'config.txt', 'overlays/', 'vmlinuz'])
  t.equal(execFileSync('mtype', ['-i', target.bootDevice, '::/overlays/disable-bt.dtbo'], mtools), 'dtbo', 'with its overlays/ directory')
  t.equal(
    execFileSync('mtype', ['-i', target.bootDevice, '::/cmdline.txt'], mtools),
    'console=ttyS1,115200 root=LABEL=cairn-rootB rootfstype=ext4 rootwait rw panic=10\n',
    "cmdline.txt names this slot's root",
  )
  t.match(execFileSync('sh', ['-c', 'dosfslabel "$1" 2>/dev/null || mlabel -s -i "$1" ::', 'sh', target.bootDevice], mtools), /CAIRN-BOOTB/)
  t.equal(readFileSync(join(dir, 'p3')).length, 16 << 20)

  // a plain (uncompressed) tar is read the same way
  const plain = join(dir, 'plain.tar')
  const p2 = await packOsRelease({ version: '2.0.0', bootDir: boot, rootImage: root, out: plain, level: 0 })
  const t2 = slotB(join(dir, 'again'))
  await writeOsSlot(plain, '2.0.0', { length: p2.bytes, sha256: p2.sha256 }, t2)
  t.equal(labelOf(t2.rootDevice), 'cairn-rootB')
})

t.test('nothing that is not the signed release reaches a partition', { skip: missing.length > 0 && `needs ${missing.join(', ')}` }, async t => {
  const dir = tmp('cairn-os-tamper-')
  const { boot, root } = buildRelease(dir, '2.0.0')
  const out = join(dir, 'r.tar.zst')
  const packed = await packOsRelease({ version: '2.0.0', bootDir: boot, rootImage: root, out })
  const signed = { length: packed.bytes, sha256: packed.sha256 }
  const target = slotB(dir)
  const before = { root: sha256(target.rootDevice), boot: sha256(target.bootDevice) }
  const untouched = (what: string) => {
    t.equal(sha256(target.rootDevice), before.root, `${what}: the root partition is untouched`)
    t.equal(sha256(target.bootDevice), before.boot, `${what}: the boot partition is untouched`)
    t.notOk(existsSync(target.staging), `${what}: nothing left in root's staging dir`)
  }
  const refused = async (image: string, re: RegExp, what: string, v = signed, extra: Partial<SlotTarget> = {}) => {
    const err = await writeOsSlot(image, '2.0.0', v, { ...target, ...extra }).then(
      () => undefined,
      (e: unknown) => e,
    )
    t.ok(err instanceof ReleaseFormatError, `${what}: refused (${(err as Error | undefined)?.message})`)
    t.match((err as Error | undefined)?.message, re, what)
    untouched(what)
  }

  // a hostile release the agent wrote under the signed name, at the signed length: its
  // root image calls itself cairn-rootA, which the next boot could have mounted as root
  const evil = buildRelease(join(dir, 'evil'), '2.0.0')
  execFileSync('e2label', [evil.root, 'cairn-rootA'])
  const evilOut = join(dir, 'evil.tar.zst')
  await packOsRelease({ version: '2.0.0', bootDir: evil.boot, rootImage: evil.root, out: evilOut, level: 0 })
  const sized = Buffer.alloc(packed.bytes)
  readFileSync(evilOut).copy(sized)
  writeFileSync(evilOut, sized)
  await refused(evilOut, /does not match the signed metadata/, 'a hostile root image (label cairn-rootA) of the signed length')
  // one byte changed after the agent's own check
  const bytes = readFileSync(out)
  bytes[bytes.length - 10] = bytes[bytes.length - 10]! ^ 0xff
  writeFileSync(join(dir, 'flipped'), bytes)
  await refused(join(dir, 'flipped'), /does not match the signed metadata/, 'one byte flipped')
  await refused(out, /not the signed length/, 'the wrong length, refused before reading', { ...signed, length: signed.length + 1 })
  execFileSync('mkfifo', [join(dir, 'fifo')])
  await refused(join(dir, 'fifo'), /not a plain file/, 'a FIFO (no hang on open)')
  await refused(out, /does not belong to the agent/, "a file that is not the agent's own", signed, { imageOwner: process.getuid!() + 4242 })

  // a signed archive that is not well formed: a boot file twice
  const dup = join(dir, 'dup.tar')
  writeFileSync(
    dup,
    packTar([
      file('VERSION', '2.0.0\n'),
      dir_('boot'),
      file('boot/config.txt', 'x'),
      file('boot/config.txt', 'y'),
      file('boot/cmdline.txt', 'root=LABEL=cairn-rootA'),
      file('root.img', readFileSync(root)),
    ]),
  )
  const dupErr = await writeOsSlot(dup, '2.0.0', { length: statSync(dup).size, sha256: sha256(dup) }, target).then(
    () => undefined,
    (e: unknown) => e,
  )
  t.match(dupErr, { name: 'ReleaseFormatError', message: /config\.txt twice/ }, 'a boot file twice: a format error, not a retry')
  t.equal(sha256(target.bootDevice), before.boot, 'the boot partition is untouched')

  // and the genuine one still goes through
  await writeOsSlot(out, '2.0.0', signed, target)
  t.equal(labelOf(target.rootDevice), 'cairn-rootB')
})

/** Reads a tar through readOsRelease into memory. */
async function read(entries: TarEntry[] | Buffer, version = '2.0.0', limits = { maxRootBytes: 1 << 20, maxBootBytes: 1 << 20 }) {
  const tar = Buffer.isBuffer(entries) ? entries : packTar(entries)
  const got: Record<string, number> = {}
  const writer = (name: string): ChunkWriter => ({ write: async b => void (got[name] = (got[name] ?? 0) + b.length), close: async () => {} })
  const sink: OsReleaseSink = { bootDir: () => {}, bootFile: rel => writer(`boot/${rel}`), root: () => writer('root.img') }
  async function* chunks() {
    for (let i = 0; i < tar.length; i += 700) yield tar.subarray(i, i + 700)
  }
  const r = await readOsRelease(chunks(), version, limits, sink)
  return { r, got }
}

const good = () => [file('VERSION', '2.0.0\n'), dir_('boot'), file('boot/config.txt', 'x'), file('boot/cmdline.txt', 'root=LABEL=cairn-rootA'), file('root.img', Buffer.alloc(5000, 1))]

t.test('the reader: the one layout, and what it refuses', async t => {
  const ok = await read(good())
  t.same(ok.got, { 'boot/config.txt': 1, 'boot/cmdline.txt': 22, 'root.img': 5000 })
  t.same(ok.r, { bootFiles: ['config.txt', 'cmdline.txt'], bootBytes: 23, rootBytes: 5000 })
  const refused = async (entries: TarEntry[] | Buffer, re: RegExp, what: string, version?: string, limits?: { maxRootBytes: number; maxBootBytes: number }) => {
    const err = await read(entries, version, limits).then(
      () => undefined,
      (e: unknown) => e,
    )
    t.ok(err instanceof ReleaseFormatError, `${what}: a ReleaseFormatError`)
    t.match((err as Error | undefined)?.message, re, what)
  }
  await refused(good(), /says version "2\.0\.0", the signed metadata 2\.1\.0/, 'another version than signed', '2.1.0')
  await refused(good().slice(1), /first entry must be VERSION/, 'no VERSION first')
  await refused([good()[0]!, ...good().slice(2)], /boot\/ must follow VERSION/, 'no boot/')
  await refused(
    good().filter(e => e.path !== 'boot/cmdline.txt'),
    /lack cmdline\.txt/,
    'no cmdline.txt',
  )
  await refused(good().slice(0, 4), /no root\.img/, 'no root.img')
  await refused([...good(), file('extra', 'x')], /data after root\.img/, 'anything after root.img')
  await refused([...good().slice(0, 4), file('boot/../../etc/passwd', 'x'), good()[4]!], /unsafe path/, 'a path out of boot/')
  await refused([...good().slice(0, 4), file('etc/shadow', 'x'), good()[4]!], /unexpected entry "etc\/shadow"/, 'a file outside boot/')
  await refused([...good().slice(0, 4), file('boot/a/b/c', 'x'), good()[4]!], /unexpected entry/, 'boot/ deeper than one level')
  await refused([...good().slice(0, 4), file('boot/bad name', 'x'), good()[4]!], /unexpected entry/, 'a boot file name the FAT copy would mangle')
  await refused(good(), /root\.img is 5000 bytes; the root partition holds 4096/, 'a root larger than the partition', '2.0.0', { maxRootBytes: 4096, maxBootBytes: 1 << 20 })
  await refused(good(), /exceed the boot partition/, 'boot files larger than the partition', '2.0.0', { maxRootBytes: 1 << 20, maxBootBytes: 10 })
  // a symbolic link: tar type '2'
  const link = packTar(good())
  const withLink = Buffer.concat([link.subarray(0, link.length - 1024 - 512 - 5120), symlinkHeader('boot/vmlinuz', '/etc/shadow'), link.subarray(link.length - 1024 - 512 - 5120)])
  await refused(withLink, /tar type "2" \(only plain files and directories\)/, 'a symbolic link')
  const full = packTar(good())
  await refused(full.subarray(0, full.length - 2048), /truncated/, 'a truncated archive')
  const corrupt = Buffer.from(full)
  corrupt[1034] = corrupt[1034]! ^ 0xff
  await refused(corrupt, /bad tar header checksum/, 'a damaged header')
})

function symlinkHeader(path: string, target: string): Buffer {
  const h = packTar([file(path, '')]).subarray(0, 512)
  const b = Buffer.from(h)
  b.write('2', 156, 1, 'ascii')
  b.write(target, 157, 100, 'utf8')
  b.write('        ', 148, 8, 'ascii')
  let sum = 0
  for (const x of b) sum += x
  b.write(sum.toString(8).padStart(6, '0') + '\0 ', 148, 8, 'ascii')
  return b
}

t.test("the helper's own TUF check of the target the agent names", async t => {
  const { repo } = makeRepo()
  const server = await serveRepo(repo)
  t.teardown(() => server.close())
  const d = tmp('cairn-os-verify-')
  const os = join(d, 'cairn-os-2.0.0-rpi-arm64.tar.zst')
  writeFileSync(os, 'pretend release bytes')
  const os3 = join(d, 'cairn-os-3.0.0-rpi-arm64.tar.zst')
  writeFileSync(os3, 'pretend release bytes, 3')
  const agent = join(d, 'cairn-agent.tar')
  writeFileSync(agent, 'agent bundle')
  repo.addRelease([os], { version: '2.0.0', channel: 'stable', rollout: 100, kind: 'os', arch: ['arm64'] })
  repo.addRelease([os3], { version: '3.0.0', channel: 'stable', rollout: 100, kind: 'os', boards: ['rpi5'] })
  repo.addRelease([agent], { version: '2.0.0', channel: 'stable', rollout: 100, kind: 'agent' })
  const trustedRoot = join(repo.paths.metadata, '1.root.json')
  const trust = { releaseUrl: server.url, trustedRoot, metadataDir: join(d, 'root-owned-tuf') }
  const dev = { runningVersion: '1.0.0', arch: 'arm64', board: 'rpi4' }
  const v = await verifyOsTarget(trust, { targetPath: 'cairn/2.0.0/cairn-os-2.0.0-rpi-arm64.tar.zst', version: '2.0.0' }, dev)
  t.same(v, { length: statSync(os).size, sha256: sha256(os) }, 'length and hash from the signed targets')
  const refused = async (req: { targetPath: string; version: string }, re: RegExp, what: string, device = dev) => {
    const err = await verifyOsTarget(trust, req, device).then(
      () => undefined,
      (e: unknown) => e,
    )
    t.ok(err instanceof VerifyError, `${what}: VerifyError`)
    t.match((err as Error | undefined)?.message, re, what)
  }
  await refused({ targetPath: 'cairn/2.0.0/cairn-agent.tar', version: '2.0.0' }, /kind agent, not an OS release/, 'an agent bundle')
  await refused({ targetPath: 'cairn/2.0.0/cairn-os-2.0.0-rpi-arm64.tar.zst', version: '9.9.9' }, /version 2\.0\.0 in the signed metadata, not 9\.9\.9/, 'a version the metadata does not say')
  await refused({ targetPath: 'cairn/9.0.0/x.tar.zst', version: '9.0.0' }, /not in the signed targets/, 'a target nobody signed')
  await refused({ targetPath: 'cairn/3.0.0/cairn-os-3.0.0-rpi-arm64.tar.zst', version: '3.0.0' }, /not for board rpi4/, 'another board')
  await refused({ targetPath: 'cairn/2.0.0/cairn-os-2.0.0-rpi-arm64.tar.zst', version: '2.0.0' }, /not newer than the running OS 2\.0\.0/, 'no downgrade or reinstall', {
    ...dev,
    runningVersion: '2.0.0',
  })
  await refused({ targetPath: 'cairn/2.0.0/cairn-os-2.0.0-rpi-arm64.tar.zst', version: '2.0.0' }, /not built for x64/, 'another architecture', { ...dev, arch: 'x64' })
  await server.close()
  const down = await verifyOsTarget(trust, { targetPath: 'cairn/2.0.0/cairn-os-2.0.0-rpi-arm64.tar.zst', version: '2.0.0' }, dev).then(
    () => undefined,
    (e: unknown) => e,
  )
  t.match(down, { message: /cannot reach the release server|HTTP|fetch/ }, 'a release server that is down fails')
  t.notOk(down instanceof VerifyError, 'as a failure to retry, not a verdict on the release')
})
