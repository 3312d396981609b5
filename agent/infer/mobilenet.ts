// A MobileNet-class network for the benchmark: 224×224×3 input, MobileNet v1's layout
// of depthwise-separable convolutions (width multiplier `alpha`; 1 gives MobileNet v1's
// 4.2 M parameters and ~570 M multiply-adds), 1000 classes, random but seeded weights.
// Nothing is downloaded: this measures speed, not accuracy.

import * as tfl from '@tensorflow/tfjs-layers'
import type { ModelMeta } from './model-package.js'

export const MOBILENET_META: ModelMeta = {
  name: 'mobilenet-v1-class-224-random',
  version: 1,
  input: { kind: 'image', height: 224, width: 224, channels: 3, layout: 'NHWC', resize: 'bilinear', scale: 1 / 127.5, mean: [1], std: [1] },
  output: { kind: 'classification', activation: 'softmax' },
}

export function buildMobileNetLike(seed: number, alpha = 0.25): tfl.LayersModel {
  let s = seed
  const init = () => tfl.initializers.heNormal({ seed: s++ })
  const ch = (n: number) => Math.max(8, Math.round(n * alpha))
  const input = tfl.input({ shape: [224, 224, 3] })
  let x = tfl.layers.conv2d({ filters: ch(32), kernelSize: 3, strides: 2, padding: 'same', useBias: false, kernelInitializer: init() }).apply(input) as tfl.SymbolicTensor
  x = tfl.layers.reLU({ maxValue: 6 }).apply(tfl.layers.batchNormalization().apply(x)) as tfl.SymbolicTensor
  // [filters, stride] of MobileNet v1's 13 separable blocks
  const blocks: Array<[number, number]> = [
    [64, 1],
    [128, 2],
    [128, 1],
    [256, 2],
    [256, 1],
    [512, 2],
    [512, 1],
    [512, 1],
    [512, 1],
    [512, 1],
    [512, 1],
    [1024, 2],
    [1024, 1],
  ]
  for (const [filters, strides] of blocks) {
    x = tfl.layers.depthwiseConv2d({ kernelSize: 3, strides, padding: 'same', useBias: false, depthwiseInitializer: init() }).apply(x) as tfl.SymbolicTensor
    x = tfl.layers.reLU({ maxValue: 6 }).apply(tfl.layers.batchNormalization().apply(x)) as tfl.SymbolicTensor
    x = tfl.layers.conv2d({ filters: ch(filters), kernelSize: 1, padding: 'same', useBias: false, kernelInitializer: init() }).apply(x) as tfl.SymbolicTensor
    x = tfl.layers.reLU({ maxValue: 6 }).apply(tfl.layers.batchNormalization().apply(x)) as tfl.SymbolicTensor
  }
  x = tfl.layers.globalAveragePooling2d({}).apply(x) as tfl.SymbolicTensor
  const out = tfl.layers.dense({ units: 1000, activation: 'softmax', kernelInitializer: tfl.initializers.glorotUniform({ seed: s++ }) }).apply(x) as tfl.SymbolicTensor
  return tfl.model({ inputs: input, outputs: out })
}
