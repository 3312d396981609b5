// How the agent gets its release channel: TUF (ota/tuf-channel.ts) from the agent
// settings; tests may inject their own through RunAgentOptions.ota.channelFactory.

import { CairnError } from '../protocol/errors.js'
import type { Logger } from '../protocol/log.js'
import { TufChannel } from './tuf-channel.js'
import type { ReleaseChannel, ReleaseInfo } from './release-types.js'

interface ChannelOptions {
  /** The published TUF repository. */
  releaseUrl: string
  /** The trusted root.json shipped with the agent. */
  releaseRoot: string | undefined
  /** Where the client keeps verified metadata between checks (<otaDir>/tuf). */
  cacheDir: string
  /** Which releases the channel offers (default agent). */
  kind?: ReleaseInfo['kind']
  log: Logger
}

export type ChannelFactory = (o: ChannelOptions) => ReleaseChannel

export const defaultChannelFactory: ChannelFactory = o => {
  if (!o.releaseRoot) throw new CairnError('OTA_DISABLED', 'ota.releaseRoot (--release-root FILE) is required: the trusted TUF root.json that ships with the agent')
  return new TufChannel({ releaseUrl: o.releaseUrl, metadataDir: o.cacheDir, trustedRoot: o.releaseRoot, ...(o.kind ? { kind: o.kind } : {}) })
}
