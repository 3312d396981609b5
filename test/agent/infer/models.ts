// Model packages made for tests, built with tfjs-layers in the test process (no
// training): a tensor model, a memory hog, a slow model, and broken packages.

import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import '@tensorflow/tfjs-backend-cpu' // layers need a backend to create weights
import * as tfl from '@tensorflow/tfjs-layers'
import { layersArtifacts } from '../../../agent/infer/layers-save.js'
import { packModel, writeModelDir, type ModelJson, type ModelMeta } from '../../../agent/infer/model-package.js'
import { packTar } from '../../../protocol/tar.js'

async function pack(model: tfl.LayersModel, meta: ModelMeta): Promise<Buffer> {
  const dir = mkdtempSync(join(tmpdir(), 'cairn-test-model-'))
  writeModelDir(dir, { meta, ...(await layersArtifacts(model)) })
  return packModel(dir).bytes
}

const tensorMeta = (name: string): ModelMeta => ({ name, input: { kind: 'tensor' }, output: { kind: 'tensor' } })

/** y = x · W with W all ones: input [?, 4] float32, output [?, 2]. */
export function sumModel(): Promise<Buffer> {
  const m = tfl.sequential({ layers: [tfl.layers.dense({ inputShape: [4], units: 2, useBias: false, kernelInitializer: 'ones' })] })
  return pack(m, tensorMeta('sum'))
}

/** Blows a 32×32×3 input up to 4800×4800×3 floats (≈ 276 MB), twice: for memory limits. */
export function memoryHogModel(): Promise<Buffer> {
  const m = tfl.sequential({
    layers: [tfl.layers.upSampling2d({ inputShape: [32, 32, 3], size: [150, 150] }), tfl.layers.activation({ activation: 'sigmoid' }), tfl.layers.globalAveragePooling2d({})],
  })
  return pack(m, tensorMeta('memory-hog'))
}

/** An LSTM over 8000 time steps: thousands of small ops, a second or more of work in
 * little memory, for abort and crash tests. Input [1, 8000, 8]. */
export const SLOW_STEPS = 8000
export function slowModel(): Promise<Buffer> {
  const m = tfl.sequential({
    layers: [
      tfl.layers.lstm({ inputShape: [SLOW_STEPS, 8], units: 32, kernelInitializer: tfl.initializers.glorotUniform({ seed: 1 }), recurrentInitializer: tfl.initializers.glorotUniform({ seed: 2 }) }),
    ],
  })
  return pack(m, tensorMeta('slow'))
}

/** A package whose model.json passes the shape checks but whose topology tfjs cannot build. */
export function brokenTopologyPackage(): Buffer {
  const modelJson: ModelJson = { format: 'layers-model', modelTopology: { class_name: 'NoSuchModel', config: {} }, weightsManifest: [] }
  return packTar([
    { path: 'cairn-model.json', type: 'file', mode: 0o644, data: Buffer.from(JSON.stringify(tensorMeta('broken'))) },
    { path: 'model.json', type: 'file', mode: 0o644, data: Buffer.from(JSON.stringify(modelJson)) },
  ])
}

export const notATar = (): Buffer => Buffer.alloc(2048, 7)
