// Generated training data for the demo model: one coloured shape (circle, square,
// triangle or cross) of random size, place and colour on a noisy random background.
// Everything comes from a seeded PRNG, so the data set, and with it the trained model,
// is the same on every run.

export const SHAPE_LABELS = ['circle', 'square', 'triangle', 'cross'] as const
type ShapeLabel = (typeof SHAPE_LABELS)[number]

/** mulberry32: small, fast, good enough for data generation. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

export interface ShapeImage {
  /** RGB, row-major, `size × size × 3`. */
  rgb: Uint8Array
  size: number
  label: number
}

/** Whether (x, y) in a unit box centred at 0 (coordinates −1..1) lies in the shape. */
function inside(label: ShapeLabel, x: number, y: number): boolean {
  switch (label) {
    case 'circle':
      return x * x + y * y <= 1
    case 'square':
      return Math.abs(x) <= 0.8 && Math.abs(y) <= 0.8
    case 'triangle':
      // apex up; base at y = 0.8, apex at y = −0.9
      return y <= 0.8 && y >= -0.9 && Math.abs(x) <= ((y + 0.9) / 1.7) * 0.95
    case 'cross':
      return (Math.abs(x) <= 0.28 && Math.abs(y) <= 0.95) || (Math.abs(y) <= 0.28 && Math.abs(x) <= 0.95)
  }
}

export function drawShape(rand: () => number, size: number, label: number): ShapeImage {
  const name = SHAPE_LABELS[label]
  if (name === undefined) throw new RangeError(`no shape ${label}`)
  const bg = [rand() * 255, rand() * 255, rand() * 255]
  // A foreground colour clearly apart from the background, so the task is about shape.
  let fg: number[]
  do fg = [rand() * 255, rand() * 255, rand() * 255]
  while (Math.hypot(fg[0]! - bg[0]!, fg[1]! - bg[1]!, fg[2]! - bg[2]!) < 120)
  const r = size * (0.26 + rand() * 0.18)
  const cx = r + rand() * (size - 2 * r)
  const cy = r + rand() * (size - 2 * r)
  const angle = (rand() - 0.5) * 0.5 // slight rotation
  const cos = Math.cos(angle)
  const sin = Math.sin(angle)
  const noise = 10 + rand() * 30
  const rgb = new Uint8Array(size * size * 3)
  for (let py = 0; py < size; py++) {
    for (let px = 0; px < size; px++) {
      const dx = (px + 0.5 - cx) / r
      const dy = (py + 0.5 - cy) / r
      const on = inside(name, dx * cos + dy * sin, -dx * sin + dy * cos)
      const base = on ? fg : bg
      for (let c = 0; c < 3; c++) {
        const v = base[c]! + (rand() - 0.5) * 2 * noise
        rgb[(py * size + px) * 3 + c] = v < 0 ? 0 : v > 255 ? 255 : v
      }
    }
  }
  return { rgb, size, label }
}

/** `count` images, labels cycling so classes are balanced. */
export function shapeSet(seed: number, count: number, size: number): ShapeImage[] {
  const rand = seededRandom(seed)
  const out: ShapeImage[] = []
  for (let i = 0; i < count; i++) out.push(drawShape(rand, size, i % SHAPE_LABELS.length))
  return out
}
