// SHA-256 as the protocol writes it: lowercase hex, of bytes in memory or of a file read
// as a stream (release images and cached objects run to gigabytes).

import { createHash } from 'node:crypto'
import { createReadStream } from 'node:fs'

export function sha256Hex(data: string | Uint8Array): string {
  return createHash('sha256').update(data).digest('hex')
}

/** The file's SHA-256, read in chunks; rejects with the read error (ENOENT, EISDIR…). */
export async function sha256File(file: string): Promise<string> {
  const hash = createHash('sha256')
  for await (const chunk of createReadStream(file)) hash.update(chunk as Buffer)
  return hash.digest('hex')
}
