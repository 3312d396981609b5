// Builds the fleet console (fleet/console/app.tsx: Preact and uPlot) into three files,
// dist/console/{index.html, app.js, app.css}, which `cairn fleet serve` serves as they are:
// no CDN, nothing fetched from another host, so it works offline on a LAN. Called by
// cli/bundle.mjs (npm run build).
import { build } from 'esbuild'
import { mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'

const here = fileURLToPath(new URL('.', import.meta.url))

/** Builds the console into `outDir` (created if missing). */
export async function buildConsole(outDir) {
  mkdirSync(outDir, { recursive: true })
  await build({
    entryPoints: { app: join(here, 'app.tsx') },
    outdir: outDir,
    bundle: true,
    format: 'esm',
    platform: 'browser',
    target: ['chrome110', 'firefox115', 'safari16'],
    jsx: 'automatic',
    jsxImportSource: 'preact',
    minify: true,
    sourcemap: false,
    logLevel: 'warning',
    legalComments: 'eof',
  })
  // No inline script or style: the page's Content-Security-Policy allows only these files.
  writeFileSync(
    join(outDir, 'index.html'),
    `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Cairn fleet</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/console/app.css">
<script type="module" src="/console/app.js"></script>
</head>
<body><div id="app"></div></body>
</html>
`,
  )
}
