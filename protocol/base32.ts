// Lowercase RFC 4648 base32 without padding. Safe in MQTT topics, file names and
// DNS labels, and case-insensitive for people reading ids aloud.

const ALPHABET = 'abcdefghijklmnopqrstuvwxyz234567'

export function base32Encode(bytes: Uint8Array): string {
  let out = ''
  let bits = 0
  let acc = 0
  for (const b of bytes) {
    acc = (acc << 8) | b
    bits += 8
    while (bits >= 5) {
      out += ALPHABET[(acc >>> (bits - 5)) & 31]
      bits -= 5
    }
    acc &= (1 << bits) - 1
  }
  if (bits > 0) out += ALPHABET[(acc << (5 - bits)) & 31]
  return out
}

/** Decodes strictly: lowercase alphabet only, and unused trailing bits must be zero
 * so that every byte string has exactly one spelling. Returns null when invalid. */
export function base32Decode(text: string): Uint8Array | null {
  const out: number[] = []
  let bits = 0
  let acc = 0
  for (const ch of text) {
    const v = ALPHABET.indexOf(ch)
    if (v < 0) return null
    acc = (acc << 5) | v
    bits += 5
    if (bits >= 8) {
      out.push((acc >>> (bits - 8)) & 0xff)
      bits -= 8
    }
    acc &= (1 << bits) - 1
  }
  if (bits >= 5 || acc !== 0) return null
  return Uint8Array.from(out)
}
