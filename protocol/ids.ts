// Message ids: time-ordered prefix (base36 ms) plus 64 random bits, so they sort
// roughly by creation and never collide across restarts or devices. Written with the
// Web Crypto global only, so the console signs commands with the same ids in a browser.

export function newId(now: number = Date.now()): string {
  const random = globalThis.crypto.getRandomValues(new Uint8Array(8))
  return now.toString(36).padStart(9, '0') + '-' + base64url(random)
}

/** base64url without padding (RFC 4648 §5), as Buffer's 'base64url' writes it. */
export function base64url(bytes: Uint8Array): string {
  let text = ''
  for (const b of bytes) text += String.fromCharCode(b)
  return btoa(text).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '')
}
