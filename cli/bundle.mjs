// Bundles the CLI into one ESM file (dist/cairn.mjs) for the device and for OTA.
// Native addons stay external and ship beside it (node_modules/better-sqlite3).
// The OTA launcher (ota/launcher.mjs, plain JS) is copied beside the bundle as is, and
// bundle-assets.json lists the files the bundle loads from beside itself.
//
//   node cli/bundle.mjs [--outfile FILE] [--entry FILE]
//   CAIRN_VERSION=x.y.z overrides the version from package.json (tests build v2, v3…
//   into temp dirs with --outfile, never over dist/cairn.mjs).
import { build } from 'esbuild'
import { chmodSync, copyFileSync, readFileSync, writeFileSync } from 'node:fs'
import { dirname, join, resolve } from 'node:path'
import { parseArgs } from 'node:util'
import { buildNodeRedClient } from '../flows/build-client.mjs'
import { buildConsole } from '../fleet/console/build-console.mjs'
import { buildInferenceAssets, inferenceAssetPaths } from '../agent/infer/bundle-assets.mjs'
import { SEMVER_PATTERN } from '../protocol/semver-pattern.mjs'

const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8'))
const { values } = parseArgs({ options: { outfile: { type: 'string' }, entry: { type: 'string' } }, strict: true })
const outfile = values.outfile ? resolve(values.outfile) : new URL('../dist/cairn.mjs', import.meta.url).pathname
const entry = values.entry ? resolve(values.entry) : new URL('./bin.ts', import.meta.url).pathname
const version = process.env.CAIRN_VERSION || pkg.version
if (!new RegExp(SEMVER_PATTERN).test(version)) {
  process.stderr.write(`bundle: CAIRN_VERSION ${JSON.stringify(version)} is not a semantic version\n`)
  process.exit(2)
}

await build({
  entryPoints: [entry],
  outfile,
  bundle: true,
  platform: 'node',
  format: 'esm',
  target: 'node20',
  sourcemap: 'linked',
  // node-red: `cairn demo` imports it at run time when installed (flows/node-red-host.ts).
  external: ['better-sqlite3', 'node-red'],
  define: { __CAIRN_VERSION__: JSON.stringify(version) },
  // Bundled CommonJS dependencies call require(); give ESM one.
  banner: { js: "#!/usr/bin/env node\nimport { createRequire as __cairnRequire } from 'node:module';\nconst require = __cairnRequire(import.meta.url);" },
  logLevel: 'warning',
  legalComments: 'none',
})

chmodSync(outfile, 0o755)
copyFileSync(new URL('../ota/launcher.mjs', import.meta.url), join(dirname(outfile), 'launcher.mjs'))
// The inference worker bundle, tfjs wasm binaries and the demo model (agent/infer/).
await buildInferenceAssets(dirname(outfile))
// The fleet console (fleet/console/): served by `cairn fleet serve` from console/ beside the bundle.
await buildConsole(join(dirname(outfile), 'console'))
// What a copy of the bundle needs beside it, for whatever installs or packs it (an OTA
// slot: ota/slot-pack.ts; the .deb; the OS image): they read this list instead of
// importing the build's code.
writeFileSync(join(dirname(outfile), 'bundle-assets.json'), JSON.stringify({ version, assets: inferenceAssetPaths(dirname(outfile)) }, null, 1) + '\n')

// The Node-RED package's copy of the local-API client (flows/build-client.mjs); only
// for the default build, not for the test builds into temp dirs.
if (!values.outfile) await buildNodeRedClient()
