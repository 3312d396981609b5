// Image decoding inside the worker: PNG and JPEG in pure JS, corrupt files and pixel
// bombs refused with stable codes before any big allocation, bilinear resize and
// normalisation as the model's metadata says.
import t from 'tap'
import jpeg from 'jpeg-js'
import { PNG } from 'pngjs'
import { crc32, deflateSync } from 'node:zlib'
import { decodeImage, probeImage, toInputTensor } from '../../../agent/infer/image.js'

function png(width: number, height: number, fill: (x: number, y: number) => [number, number, number]): Buffer {
  const p = new PNG({ width, height })
  for (let y = 0; y < height; y++) for (let x = 0; x < width; x++) p.data.set([...fill(x, y), 255], (y * width + x) * 4)
  return PNG.sync.write(p)
}

/** A PNG header that claims `w`×`h` pixels, and nothing behind it. */
function pngBomb(w: number, h: number): Buffer {
  const b = Buffer.alloc(33)
  Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]).copy(b)
  b.writeUInt32BE(13, 8)
  b.write('IHDR', 12, 'ascii')
  b.writeUInt32BE(w, 16)
  b.writeUInt32BE(h, 20)
  b.set([8, 2, 0, 0, 0], 24)
  return b
}

/** A JPEG with an APP0 segment and a SOF0 claiming `w`×`h`. */
function jpegBomb(w: number, h: number): Buffer {
  const app0 = Buffer.from([0xff, 0xe0, 0x00, 0x10, ...Buffer.from('JFIF\0'), 1, 1, 0, 0, 1, 0, 1, 0, 0])
  const sof = Buffer.from([0xff, 0xc0, 0x00, 0x11, 8, h >> 8, h & 255, w >> 8, w & 255, 3, 1, 0x22, 0, 2, 0x11, 1, 3, 0x11, 1])
  return Buffer.concat([Buffer.from([0xff, 0xd8]), app0, sof, Buffer.from([0xff, 0xd9])])
}

t.test('PNG and JPEG decode to RGB', async t => {
  const p = png(3, 2, (x, y) => [x * 100, y * 200, 7])
  t.same(probeImage(p), { format: 'png', width: 3, height: 2 })
  const img = decodeImage(p, 100)
  t.same([...img.rgb.slice(0, 6)], [0, 0, 7, 100, 0, 7])
  t.same([...img.rgb.slice(9, 12)], [0, 200, 7])
  const rgba = Buffer.alloc(16 * 8 * 4, 0)
  for (let i = 0; i < 16 * 8; i++) rgba.set([200, 40, 40, 255], i * 4)
  const j = jpeg.encode({ width: 16, height: 8, data: rgba }, 95).data
  t.same(probeImage(j), { format: 'jpeg', width: 16, height: 8 })
  const dj = decodeImage(j, 1000)
  t.equal(dj.rgb.length, 16 * 8 * 3)
  t.ok(Math.abs(dj.rgb[0]! - 200) < 8 && Math.abs(dj.rgb[1]! - 40) < 8, `JPEG colour kept: ${[...dj.rgb.slice(0, 3)]}`)
})

t.test('corrupt images are BAD_INPUT', async t => {
  const good = png(8, 8, () => [1, 2, 3])
  t.throws(() => decodeImage(Buffer.from('hello, not an image'), 1e6), { code: 'BAD_INPUT', message: /not a PNG or JPEG/ })
  const truncated = good.subarray(0, good.length - 20)
  t.throws(() => decodeImage(truncated, 1e6), { code: 'BAD_INPUT', message: /corrupt PNG/ })
  const flipped = Buffer.from(good)
  flipped[40] = flipped[40]! ^ 0xff // inside IDAT: CRC and zlib checks fail
  t.throws(() => decodeImage(flipped, 1e6), { code: 'BAD_INPUT', message: /corrupt PNG/ })
  t.throws(() => decodeImage(Buffer.from([0xff, 0xd8, 0x00, 0x00, 0x00]), 1e6), { code: 'BAD_INPUT', message: /corrupt JPEG/ })
  const j = jpeg.encode({ width: 16, height: 16, data: Buffer.alloc(16 * 16 * 4, 90) }, 80).data
  t.throws(() => decodeImage(j.subarray(0, 200), 1e6), { code: 'BAD_INPUT', message: /corrupt JPEG/ })
})

t.test('pixel bombs are refused from the header, before decoding', async t => {
  t.throws(() => decodeImage(pngBomb(100_000, 100_000), 16e6), { code: 'TOO_LARGE', message: /100000×100000 = 10000000000 pixels/ })
  t.throws(() => decodeImage(jpegBomb(60_000, 60_000), 16e6), { code: 'TOO_LARGE', message: /60000×60000/ })
  t.throws(() => decodeImage(pngBomb(0, 10), 16e6), { code: 'BAD_INPUT' })
  // Under the limit, the fake header is decoded and found corrupt.
  t.throws(() => decodeImage(pngBomb(10, 10), 16e6), { code: 'BAD_INPUT' })
})

/** An interlaced (Adam7) RGB PNG of w×h whose IDAT is `raw` deflated. */
function interlacedPng(w: number, h: number, raw: Buffer): Buffer {
  const chunk = (type: string, data: Buffer) => {
    const td = Buffer.concat([Buffer.from(type, 'ascii'), data])
    const out = Buffer.alloc(12 + data.length)
    out.writeUInt32BE(data.length, 0)
    td.copy(out, 4)
    out.writeUInt32BE(crc32(td), 8 + data.length)
    return out
  }
  const ihdr = Buffer.alloc(13)
  ihdr.writeUInt32BE(w, 0)
  ihdr.writeUInt32BE(h, 4)
  ihdr.set([8, 2, 0, 0, 1], 8) // 8 bits, RGB, interlaced
  return Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), chunk('IHDR', ihdr), chunk('IDAT', deflateSync(raw)), chunk('IEND', Buffer.alloc(0))])
}

t.test('interlaced PNG: decoded; a zlib bomb inside one is refused before pngjs inflates it', async t => {
  // 2×2 in Adam7: pass 1 has (0,0), pass 6 (1,0), pass 7 the second row; each row a filter byte.
  const ok = interlacedPng(2, 2, Buffer.from([0, 10, 20, 30, 0, 40, 50, 60, 0, 70, 80, 90, 100, 110, 120]))
  t.same([...decodeImage(ok, 100).rgb], [10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 110, 120])
  const bomb = interlacedPng(10, 10, Buffer.alloc(64 * 1024 * 1024))
  t.ok(bomb.length < 200_000, `a small file (${bomb.length} bytes)`)
  t.throws(() => decodeImage(bomb, 16e6), { code: 'TOO_LARGE', message: /inflates to more than its 10×10 pixels need/ })
})

t.test('bilinear resize with half-pixel centres, normalisation, layouts', async t => {
  // 4×4 checker of 2×2 blocks (0 and 200) → 2×2: each output pixel averages one block.
  const img = { width: 4, height: 4, rgb: new Uint8Array(48) }
  for (let y = 0; y < 4; y++) for (let x = 0; x < 4; x++) img.rgb.fill(((x >> 1) + (y >> 1)) % 2 ? 200 : 0, (y * 4 + x) * 3, (y * 4 + x) * 3 + 3)
  const nhwc = toInputTensor(img, { kind: 'image', height: 2, width: 2, channels: 3, scale: 1, mean: [100], std: [100] })
  t.same(nhwc.shape, [1, 2, 2, 3])
  t.same([...nhwc.data], [-1, -1, -1, 1, 1, 1, 1, 1, 1, -1, -1, -1])
  const gray = toInputTensor(img, { kind: 'image', height: 2, width: 2, channels: 1, scale: 1 / 200, layout: 'NCHW' })
  t.same(gray.shape, [1, 1, 2, 2])
  t.same(
    [...gray.data].map(v => Math.round(v * 1000) / 1000),
    [0, 1, 1, 0],
  )
  const up = toInputTensor({ width: 2, height: 1, rgb: new Uint8Array([0, 0, 0, 100, 100, 100]) }, { kind: 'image', height: 1, width: 4, channels: 3, scale: 1 })
  t.same(
    [...up.data].filter((_, i) => i % 3 === 0),
    [0, 25, 75, 100],
  )
})
