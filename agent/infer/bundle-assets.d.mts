/** Builds dist/infer-worker.mjs and copies its assets into `outDir`. */
export function buildInferenceAssets(outDir: string): Promise<void>
/** The files buildInferenceAssets() put beside the bundle, relative to `outDir`. */
export function inferenceAssetPaths(outDir: string): string[]
