// Bundles the first-boot program into dist/image/provision.mjs (installed in the image
// as /opt/cairn/provision.mjs). No native addons: it runs before anything else is set up.
import { build } from 'esbuild'
import { readFileSync } from 'node:fs'

const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8'))

await build({
  entryPoints: [new URL('./cli.ts', import.meta.url).pathname],
  outfile: new URL('../../dist/image/provision.mjs', import.meta.url).pathname,
  bundle: true,
  platform: 'node',
  format: 'esm',
  target: 'node20',
  define: { __CAIRN_VERSION__: JSON.stringify(pkg.version) },
  banner: { js: "import { createRequire as __cairnRequire } from 'node:module';\nconst require = __cairnRequire(import.meta.url);" },
  logLevel: 'warning',
  legalComments: 'none',
})
