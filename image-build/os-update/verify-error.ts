// The errors and settings of the helper's TUF check that the rest of the helper needs
// without loading the TUF client (verify.ts is imported only when a write asks for it:
// the boot-time run, on the boot's critical path, never does).

import { readFileSync } from 'node:fs'

/** A release the helper refuses on the evidence: permanent for this version. */
export class VerifyError extends Error {
  override readonly name = 'VerifyError'
}

/** The channel settings of /opt/cairn/ota.env (written by build.sh --release-*), or
 * undefined when the image was built without a release channel. */
export function readOtaEnv(file: string): { releaseUrl: string; releaseRoot: string } | undefined {
  let text: string
  try {
    text = readFileSync(file, 'utf8')
  } catch {
    return undefined
  }
  const get = (k: string) => new RegExp(`^${k}=(.*)$`, 'm').exec(text)?.[1]?.trim()
  const releaseUrl = get('CAIRN_OTA_RELEASE_URL')
  const releaseRoot = get('CAIRN_OTA_RELEASE_ROOT')
  if (!releaseUrl || !releaseRoot || !/^https?:\/\//.test(releaseUrl)) return undefined
  return { releaseUrl, releaseRoot }
}
