// Part of the build (cli/bundle.mjs): the inference worker as a second bundle,
// dist/infer-worker.mjs (it runs in its own process, so it is not part of cairn.mjs,
// which stays free of tfjs), and the files it needs next to it: the tfjs wasm binaries
// and the demo model with its sample images. Paths are resolved at run time relative
// to the bundle (agent/infer/backends.ts, agent/infer/demo-model.ts).
import { build } from 'esbuild'
import { copyFileSync, existsSync, mkdirSync, readdirSync } from 'node:fs'
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const here = dirname(fileURLToPath(import.meta.url))

/** Builds dist/infer-worker.mjs and copies its assets into `outDir`. */
export async function buildInferenceAssets(outDir) {
  await build({
    entryPoints: [join(here, 'worker-entry.ts')],
    outfile: join(outDir, 'infer-worker.mjs'),
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node20',
    sourcemap: 'linked',
    // CommonJS parts of tfjs call require() and read __dirname (the wasm loader): give ESM both.
    banner: {
      js: "import { createRequire as __cairnRequire } from 'node:module';\nimport { dirname as __cairnDirname } from 'node:path';\nimport { fileURLToPath as __cairnPath } from 'node:url';\nconst require = __cairnRequire(import.meta.url);\nconst __filename = __cairnPath(import.meta.url);\nconst __dirname = __cairnDirname(__filename);",
    },
    logLevel: 'warning',
    legalComments: 'none',
  })
  const require = createRequire(import.meta.url)
  const wasmDir = dirname(require.resolve('@tensorflow/tfjs-backend-wasm/dist/tfjs-backend-wasm-simd.wasm'))
  for (const f of readdirSync(wasmDir)) if (/^tfjs-backend-wasm.*\.wasm$/.test(f)) copyFileSync(join(wasmDir, f), join(outDir, f))
  const model = join(here, 'demo', 'shapes.cairnmodel')
  if (existsSync(model)) copyFileSync(model, join(outDir, 'shapes.cairnmodel'))
  const samples = join(here, 'demo', 'samples')
  if (existsSync(samples)) {
    mkdirSync(join(outDir, 'demo-samples'), { recursive: true })
    for (const f of readdirSync(samples)) copyFileSync(join(samples, f), join(outDir, 'demo-samples', f))
  }
}

/** The files buildInferenceAssets() puts beside the bundle, relative to its directory:
 * whatever installs or packs dist/cairn.mjs (OTA slot, .deb, OS image) must ship them
 * too, or inference fails to start and the demo model is missing. */
export function inferenceAssetPaths(outDir) {
  const out = []
  for (const f of readdirSync(outDir)) if (/^infer-worker\.mjs$|^tfjs-backend-wasm.*\.wasm$|^shapes\.cairnmodel$/.test(f)) out.push(f)
  if (existsSync(join(outDir, 'demo-samples'))) for (const f of readdirSync(join(outDir, 'demo-samples'))) out.push(`demo-samples/${f}`)
  return out.sort()
}
