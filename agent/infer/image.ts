// Image inputs: JPEG and PNG decoded in pure JavaScript (jpeg-js, pngjs, no native
// code to build for arm64), resized and normalised the way the model's metadata says.
// Runs inside the inference worker. Width and height are read from the file header and
// checked against the pixel limit before anything is decoded, so a small file that
// claims 100,000 × 100,000 pixels (a decompression bomb) is refused without allocating.

import { inflateSync } from 'node:zlib'
import jpeg from 'jpeg-js'
import { PNG } from 'pngjs'
import { CairnError } from '../../protocol/errors.js'
import type { ModelMeta } from './model-package.js'

export interface DecodedImage {
  width: number
  height: number
  /** RGB, row-major, width × height × 3 */
  rgb: Uint8Array
}

export type ImageFormat = 'png' | 'jpeg'

const badInput = (message: string, cause?: unknown) => new CairnError('BAD_INPUT', message, cause === undefined ? undefined : { cause })

/** Format and size from the header alone. */
export function probeImage(buf: Uint8Array): { format: ImageFormat; width: number; height: number } {
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength)
  if (buf.length >= 24 && dv.getUint32(0) === 0x89504e47 && dv.getUint32(4) === 0x0d0a1a0a) {
    // PNG: the first chunk must be IHDR: width and height as big-endian u32.
    if (dv.getUint32(12) !== 0x49484452) throw badInput('input.image: PNG without an IHDR chunk first')
    return { format: 'png', width: dv.getUint32(16), height: dv.getUint32(20) }
  }
  if (buf.length >= 4 && buf[0] === 0xff && buf[1] === 0xd8) {
    // JPEG: walk the marker segments to the first start-of-frame.
    let pos = 2
    while (pos + 4 <= buf.length) {
      if (buf[pos] !== 0xff) throw badInput(`input.image: corrupt JPEG (no marker at byte ${pos})`)
      const marker = buf[pos + 1]!
      if (marker === 0xff) {
        pos++
        continue
      }
      const len = dv.getUint16(pos + 2)
      const isSof = marker >= 0xc0 && marker <= 0xcf && marker !== 0xc4 && marker !== 0xc8 && marker !== 0xcc
      if (isSof) {
        if (pos + 9 > buf.length) break
        return { format: 'jpeg', height: dv.getUint16(pos + 5), width: dv.getUint16(pos + 7) }
      }
      if (marker === 0xda || len < 2) break
      pos += 2 + len
    }
    throw badInput('input.image: corrupt JPEG (no frame header)')
  }
  throw badInput('input.image: not a PNG or JPEG file')
}

export function decodeImage(buf: Uint8Array, maxPixels: number): DecodedImage {
  const { format, width, height } = probeImage(buf)
  if (width === 0 || height === 0) throw badInput(`input.image: ${format} of ${width}×${height} pixels`)
  if (width * height > maxPixels) throw new CairnError('TOO_LARGE', `input.image: ${width}×${height} = ${width * height} pixels, more than the limit of ${maxPixels}`)
  if (format === 'jpeg') {
    let img
    try {
      img = jpeg.decode(buf, { useTArray: true, formatAsRGBA: false, tolerantDecoding: false, maxResolutionInMP: maxPixels / 1e6, maxMemoryUsageInMB: Math.ceil((maxPixels * 8) / 1e6) + 16 })
    } catch (err) {
      throw badInput(`input.image: corrupt JPEG: ${(err as Error).message}`, err)
    }
    if (img.width !== width || img.height !== height || img.data.length !== width * height * 3) throw badInput('input.image: corrupt JPEG (size changed while decoding)')
    return { width, height, rgb: img.data }
  }
  if (buf[28] === 1) checkInterlacedPng(buf, width, height)
  let png
  try {
    png = PNG.sync.read(Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength))
  } catch (err) {
    throw badInput(`input.image: corrupt PNG: ${(err as Error).message}`, err)
  }
  if (png.width !== width || png.height !== height) throw badInput('input.image: corrupt PNG (size changed while decoding)')
  // pngjs always gives RGBA, 8 bits; alpha is dropped (composited over nothing).
  const rgb = new Uint8Array(width * height * 3)
  const src = png.data
  for (let i = 0, j = 0; j < rgb.length; i += 4, j += 3) {
    rgb[j] = src[i]!
    rgb[j + 1] = src[i + 1]!
    rgb[j + 2] = src[i + 2]!
  }
  return { width, height, rgb }
}

/**
 * pngjs inflates an interlaced PNG's data without a bound (plain zlib.inflateSync; it
 * bounds only non-interlaced ones), so a small file that inflates to gigabytes would
 * exhaust memory. Inflate it here first, bounded by what the header's size allows.
 */
function checkInterlacedPng(buf: Uint8Array, width: number, height: number): void {
  const channels = ({ 0: 1, 2: 3, 3: 1, 4: 2, 6: 4 } as Record<number, number>)[buf[25]!] ?? 4
  const bits = channels * (buf[24] ?? 8)
  // The pixels' bytes, plus per row of each Adam7 pass (under 2 × height + 7 rows in
  // all) a filter byte and at most one byte of rounding.
  const bound = Math.ceil((width * bits) / 8) * height + 2 * (2 * height + 7) + 64
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength)
  const idat: Uint8Array[] = []
  for (let pos = 8; pos + 8 <= buf.length;) {
    const len = dv.getUint32(pos)
    const type = dv.getUint32(pos + 4)
    if (type === 0x49444154) idat.push(buf.subarray(pos + 8, Math.min(pos + 8 + len, buf.length))) // IDAT
    if (type === 0x49454e44) break // IEND
    pos += 12 + len
  }
  try {
    inflateSync(Buffer.concat(idat), { maxOutputLength: bound })
  } catch (err) {
    const e = err as { code?: string; message?: string }
    if (e.code === 'ERR_BUFFER_TOO_LARGE') throw new CairnError('TOO_LARGE', `input.image: PNG data inflates to more than its ${width}×${height} pixels need`)
    throw badInput(`input.image: corrupt PNG: ${e.message}`, err)
  }
}

/**
 * Resizes to the model's input size and normalises: value = (pixel × scale − mean[c]) /
 * std[c]. Bilinear uses half-pixel centres (what tf.image.resizeBilinear does with
 * halfPixelCenters), so a 2× downscale averages 2×2 blocks. Returns the model's input
 * tensor data in its layout, batch of one.
 */
export function toInputTensor(img: DecodedImage, input: ModelMeta['input']): { data: Float32Array; shape: number[] } {
  const H = input.height!
  const W = input.width!
  const C = input.channels!
  const scale = input.scale ?? 1 / 255
  const mean = input.mean ?? [0]
  const std = input.std ?? [1]
  const nchw = input.layout === 'NCHW'
  const nearest = input.resize === 'nearest'
  const out = new Float32Array(H * W * C)
  const sx = img.width / W
  const sy = img.height / H
  const src = img.rgb
  const px = new Float32Array(3)
  for (let y = 0; y < H; y++) {
    const fy = Math.min(Math.max((y + 0.5) * sy - 0.5, 0), img.height - 1)
    const y0 = nearest ? Math.min(Math.floor((y + 0.5) * sy), img.height - 1) : Math.floor(fy)
    const y1 = Math.min(y0 + 1, img.height - 1)
    const wy = nearest ? 0 : fy - y0
    for (let x = 0; x < W; x++) {
      const fx = Math.min(Math.max((x + 0.5) * sx - 0.5, 0), img.width - 1)
      const x0 = nearest ? Math.min(Math.floor((x + 0.5) * sx), img.width - 1) : Math.floor(fx)
      const x1 = Math.min(x0 + 1, img.width - 1)
      const wx = nearest ? 0 : fx - x0
      const a = (y0 * img.width + x0) * 3
      const b = (y0 * img.width + x1) * 3
      const c = (y1 * img.width + x0) * 3
      const d = (y1 * img.width + x1) * 3
      for (let k = 0; k < 3; k++) {
        const top = src[a + k]! + (src[b + k]! - src[a + k]!) * wx
        const bottom = src[c + k]! + (src[d + k]! - src[c + k]!) * wx
        px[k] = top + (bottom - top) * wy
      }
      if (C === 1) {
        const v = 0.299 * px[0]! + 0.587 * px[1]! + 0.114 * px[2]!
        out[nchw ? y * W + x : y * W + x] = (v * scale - mean[0]!) / std[0]!
        continue
      }
      for (let k = 0; k < 3; k++) {
        const v = (px[k]! * scale - (mean[k] ?? mean[0]!)) / (std[k] ?? std[0]!)
        out[nchw ? k * H * W + y * W + x : (y * W + x) * 3 + k] = v
      }
    }
  }
  return { data: out, shape: nchw ? [1, C, H, W] : [1, H, W, C] }
}
