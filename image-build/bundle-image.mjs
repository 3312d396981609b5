// Bundles the image's root-side programs: the first-boot program into
// dist/image/provision.mjs (/opt/cairn/provision.mjs) and the OS update helper into
// dist/image/os-update.mjs (/opt/cairn/os-update.mjs). No native addons: they run before
// anything else is set up, as root.
import { build } from 'esbuild'
import { readFileSync } from 'node:fs'

const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8'))

for (const [entry, out] of [
  ['./provision/provision-cli.ts', 'provision.mjs'],
  ['./os-update/helper-cli.ts', 'os-update.mjs'],
])
  await build({
    entryPoints: [new URL(entry, import.meta.url).pathname],
    outfile: new URL(`../dist/image/${out}`, import.meta.url).pathname,
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node20',
    define: { __CAIRN_VERSION__: JSON.stringify(pkg.version) },
    banner: { js: "import { createRequire as __cairnRequire } from 'node:module';\nconst require = __cairnRequire(import.meta.url);" },
    logLevel: 'warning',
    legalComments: 'none',
  })
