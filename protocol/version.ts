// The agent version: injected by the bundler (cli/bundle.mjs); "dev" when run from source.

declare const __CAIRN_VERSION__: string | undefined

export const VERSION: string = typeof __CAIRN_VERSION__ === 'string' ? __CAIRN_VERSION__ : '0.0.0-dev'
