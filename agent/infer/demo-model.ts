// The demo model that ships with Cairn (trained by agent/infer/demo/train.ts, 4 shape
// classes, 32×32 RGB), so `npm start`, `cairn task submit --model demo` and the tests
// run a true classification with no network. From TypeScript sources the files are in
// agent/infer/demo/; in the bundle, cli/bundle.mjs copies them next to cairn.mjs.

import { existsSync } from 'node:fs'
import { fileURLToPath } from 'node:url'

/** SHA-256 of agent/infer/demo/shapes.cairnmodel; a test checks it against the file. */
export const DEMO_MODEL_SHA256 = 'a370c11eb560ed408c1c68abc81d6a6a277cef75c22434fb637e4187a1909fe3'
const DEMO_MODEL_FILE = 'shapes.cairnmodel'

const fromSources = import.meta.url.endsWith('.ts')

/** Path of the demo model package, or undefined when this install lacks it. */
export function demoModelPath(): string | undefined {
  const url = fromSources ? new URL(`./demo/${DEMO_MODEL_FILE}`, import.meta.url) : new URL(`./${DEMO_MODEL_FILE}`, import.meta.url)
  const path = fileURLToPath(url)
  return existsSync(path) ? path : undefined
}

/** Sample images that ship with the demo model, e.g. demoSamplePath('circle.png'). */
export function demoSamplePath(name: string): string {
  return fileURLToPath(fromSources ? new URL(`./demo/samples/${name}`, import.meta.url) : new URL(`./demo-samples/${name}`, import.meta.url))
}
