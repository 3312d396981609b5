// Turns a tfjs-layers model in memory into the files of a Cairn model package
// (model.json + one weight shard), without tfjs's file or HTTP save handlers.

import * as tf from '@tensorflow/tfjs-core'
import type * as tfl from '@tensorflow/tfjs-layers'
import type { ModelJson } from './model-package.js'

const WEIGHTS_FILE = 'weights.bin'

export async function layersArtifacts(model: tfl.LayersModel): Promise<{ modelJson: ModelJson; shards: Record<string, Uint8Array> }> {
  let saved: tf.io.ModelArtifacts | undefined
  await model.save(
    tf.io.withSaveHandler(async artifacts => {
      saved = artifacts
      return { modelArtifactsInfo: { dateSaved: new Date(0), modelTopologyType: 'JSON' } }
    }),
  )
  if (saved === undefined) throw new Error('model.save gave no artifacts')
  const data = saved.weightData === undefined ? new Uint8Array(0) : new Uint8Array(tf.io.concatenateArrayBuffers(Array.isArray(saved.weightData) ? saved.weightData : [saved.weightData]))
  return {
    modelJson: {
      format: 'layers-model',
      modelTopology: saved.modelTopology,
      weightsManifest: [{ paths: data.length > 0 ? [WEIGHTS_FILE] : [], weights: saved.weightSpecs ?? [] }],
    },
    shards: data.length > 0 ? { [WEIGHTS_FILE]: data } : {},
  }
}
