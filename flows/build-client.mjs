// Bundles the local-API client (agent/local-api/api-client.ts, with ws) into one CommonJS
// file inside the Node-RED package, so `npm pack` of flows/node-red-contrib-cairn is
// self-contained on a device: Node-RED loads nodes with require(), and the package has
// no runtime dependencies to install. Called by cli/bundle.mjs (npm run build) and by
// the flow tests when the bundle is missing or older than its source.
import { build } from 'esbuild'
import { existsSync, readFileSync, statSync } from 'node:fs'
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

export const clientSource = fileURLToPath(new URL('../agent/local-api/api-client.ts', import.meta.url))
export const clientBundle = fileURLToPath(new URL('./node-red-contrib-cairn/lib/client.cjs', import.meta.url))

export async function buildNodeRedClient(outfile = clientBundle) {
  // ws is MIT: its notice travels with every copy, and this bundle is one.
  const wsLicense = readFileSync(join(dirname(createRequire(import.meta.url).resolve('ws/package.json')), 'LICENSE'), 'utf8').trim()
  await build({
    banner: {
      js: `// Bundled from agent/local-api/api-client.ts by flows/build-client.mjs; do not edit.\n/*! ws (https://github.com/websockets/ws), bundled here:\n${wsLicense.replace(/\*\//g, '* /')}\n*/`,
    },
    entryPoints: [clientSource],
    outfile,
    bundle: true,
    platform: 'node',
    format: 'cjs',
    target: 'node20',
    // ws tries these optional native speed-ups inside try/catch; without them it uses JS.
    external: ['bufferutil', 'utf-8-validate'],
    logLevel: 'warning',
    legalComments: 'none',
  })
  return outfile
}

/** Builds the bundle unless it exists and is newer than every file of agent/local-api/. */
export async function ensureNodeRedClient() {
  if (existsSync(clientBundle)) {
    const built = statSync(clientBundle).mtimeMs
    const src = fileURLToPath(new URL('../agent/local-api/', import.meta.url))
    const { readdirSync } = await import('node:fs')
    const newest = Math.max(...readdirSync(src).map(f => statSync(src + f).mtimeMs))
    if (built >= newest) return clientBundle
  }
  return buildNodeRedClient()
}
