// Bundles the CLI into one ESM file (dist/cairn.mjs) for the device and for OTA.
// Native addons stay external and ship beside it (node_modules/better-sqlite3).
import { build } from 'esbuild'
import { readFileSync } from 'node:fs'

const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8'))

await build({
  entryPoints: [new URL('./bin.ts', import.meta.url).pathname],
  outfile: new URL('../dist/cairn.mjs', import.meta.url).pathname,
  bundle: true,
  platform: 'node',
  format: 'esm',
  target: 'node20',
  sourcemap: 'linked',
  external: ['better-sqlite3'],
  define: { __CAIRN_VERSION__: JSON.stringify(pkg.version) },
  // Bundled CommonJS dependencies call require(); give ESM one.
  banner: { js: "#!/usr/bin/env node\nimport { createRequire as __cairnRequire } from 'node:module';\nconst require = __cairnRequire(import.meta.url);" },
  logLevel: 'warning',
  legalComments: 'none',
})

const { chmodSync } = await import('node:fs')
chmodSync(new URL('../dist/cairn.mjs', import.meta.url), 0o755)
