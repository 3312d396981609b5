// What a Cairn signature covers (docs/protocol.md, "Signatures"), without Node: the one
// definition envelope.ts signs and verifies with, and the console's in-browser signer
// (fleet/console/signer.ts) signs with.
//
// Signed text = "CAIRN-SIG-1\n" || type || "\n" || JCS(envelope without "sig"), as UTF-8.

import { canonicalJson } from './canonical.js'

const SIG_PREFIX = 'CAIRN-SIG-1\n'

export function signingInput(env: { readonly type: string; readonly sig?: string }): string {
  const { sig: _ignored, ...rest } = env
  return SIG_PREFIX + env.type + '\n' + canonicalJson(rest)
}
