// Message ids: time-ordered prefix (base36 ms) plus 64 random bits, so they sort
// roughly by creation and never collide across restarts or devices.

import { randomBytes } from 'node:crypto'

export function newId(now: number = Date.now()): string {
  return now.toString(36).padStart(9, '0') + '-' + randomBytes(8).toString('base64url')
}
