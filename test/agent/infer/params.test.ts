// Inference task parameters: every refusal names the field; sizes are checked before
// anything is decoded.
import t, { type Test } from 'tap'
import { DEMO_MODEL_SHA256 } from '../../../agent/infer/demo-model.js'
import { parseInferenceParams } from '../../../agent/infer/params.js'

const parse = (p: unknown, maxInputBytes = 1024) => parseInferenceParams(p, { maxInputBytes })
const SHA = 'a'.repeat(64)
const f32 = (n: number) => Buffer.from(new Float32Array(n).buffer).toString('base64')

function refuses(t: Test, p: unknown, code: string, field: RegExp, maxInputBytes?: number) {
  t.throws(() => parse(p, maxInputBytes), { name: 'CairnError', code, message: field }, `${code} ${field}`)
}

t.test('demo, hashes and defaults', async t => {
  const p = parse({ model: 'demo', input: { image: { data: 'iVBORw==' } } })
  t.same(p.model, { sha256: DEMO_MODEL_SHA256, urls: [], demo: true })
  t.equal(p.topK, 5)
  t.same(p.input, { kind: 'image', data: Buffer.from([0x89, 0x50, 0x4e, 0x47]), bytes: 4 }, 'decoded once, here')
  const q = parse({ model: { sha256: SHA, urls: ['http://127.0.0.1:1/m'] }, input: { tensor: { shape: [2, 2], dtype: 'int32', data: [1, 2, 3, 4] } }, topK: 3 })
  t.same(q.model, { sha256: SHA, urls: ['http://127.0.0.1:1/m'], demo: false })
  t.same(q.input, { kind: 'tensor', shape: [2, 2], dtype: 'int32', data: Int32Array.from([1, 2, 3, 4]), bytes: 16 })
  t.ok(q.input.kind === 'tensor' && q.input.data instanceof Int32Array)
  const r = parse({ model: 'demo', input: { tensor: { shape: [3], dtype: 'float32', data: Buffer.from(new Float32Array([1.5, -2, 3]).buffer).toString('base64') } } })
  t.ok(r.input.kind === 'tensor' && r.input.data instanceof Float32Array, 'base64 comes out as the dtype’s typed array')
  t.same(r.input.kind === 'tensor' && [...r.input.data], [1.5, -2, 3])
  t.same(parse({ model: 'demo', input: { image: { sha256: SHA } } }).input, { kind: 'image', ref: { sha256: SHA, urls: [] } })
})

t.test('bad fields are named', async t => {
  const img = { image: { data: 'iVBORw==' } }
  refuses(t, null, 'BAD_REQUEST', /^params/)
  refuses(t, { model: 'resnet', input: img }, 'BAD_REQUEST', /^model:/)
  refuses(t, { model: { sha256: 'ABC' }, input: img }, 'BAD_REQUEST', /^model\.sha256/)
  refuses(t, { model: { sha256: SHA, urls: ['file:///etc/passwd'] }, input: img }, 'BAD_REQUEST', /^model\.urls\[0\]/)
  refuses(t, { model: { sha256: SHA, extra: 1 }, input: img }, 'BAD_REQUEST', /^model\.extra/)
  refuses(t, { model: 'demo', input: img, topK: 0 }, 'BAD_REQUEST', /^topK/)
  refuses(t, { model: 'demo', input: img, other: 1 }, 'BAD_REQUEST', /^params\.other/)
  refuses(t, { model: 'demo', input: {} }, 'BAD_REQUEST', /^input:/)
  refuses(t, { model: 'demo', input: { image: img.image, tensor: {} } }, 'BAD_REQUEST', /^input:/)
  refuses(t, { model: 'demo', input: { image: { data: 'not base64!' } } }, 'BAD_REQUEST', /^input\.image\.data/)
  refuses(t, { model: 'demo', input: { image: { data: '' } } }, 'BAD_REQUEST', /^input\.image\.data: is empty/)
  // Node's own decoder would skip or accept all of these: the length check catches them.
  for (const data of ['iVBO Rw==', 'iVB!Rw==', 'iV=ORw==', 'iVBORw=A', 'iVB-Rw==', 'iVB_Rw==', 'iVBORw===', 'A===', '====']) {
    refuses(t, { model: 'demo', input: { image: { data } } }, 'BAD_REQUEST', /^input\.image\.data: is not valid base64/)
  }
  refuses(t, { model: 'demo', input: { tensor: { shape: [1], dtype: 'float32', data: 'AAA!AA==' } } }, 'BAD_REQUEST', /^input\.tensor\.data: is not valid base64/)
  refuses(t, { model: 'demo', input: { image: { sha256: 'x' } } }, 'BAD_REQUEST', /^input\.image\.sha256/)
})

t.test('tensor shape, dtype and element count', async t => {
  const tensor = (x: object) => ({ model: 'demo', input: { tensor: { shape: [2, 3], dtype: 'float32', data: f32(6), ...x } } })
  t.equal(parse(tensor({})).input.kind, 'tensor')
  refuses(t, tensor({ shape: [] }), 'BAD_REQUEST', /^input\.tensor\.shape/)
  refuses(t, tensor({ shape: [2, 0] }), 'BAD_REQUEST', /^input\.tensor\.shape/)
  refuses(t, tensor({ shape: [2, 1.5] }), 'BAD_REQUEST', /^input\.tensor\.shape/)
  refuses(t, tensor({ dtype: 'float64' }), 'BAD_REQUEST', /^input\.tensor\.dtype/)
  refuses(t, tensor({ data: f32(5) }), 'BAD_REQUEST', /^input\.tensor\.data: holds 20 bytes; shape \[2, 3\] of float32 needs 24/)
  refuses(t, tensor({ data: [1, 2, 3] }), 'BAD_REQUEST', /^input\.tensor\.data: holds 3 numbers/)
  refuses(t, tensor({ data: [1, 2, 3, 4, 5, 'x'] }), 'BAD_REQUEST', /^input\.tensor\.data\[5\]/)
  refuses(t, tensor({ dtype: 'int32', data: [1, 2, 3, 4, 5, 0.5] }), 'BAD_REQUEST', /^input\.tensor\.data\[5\]: must be a 32-bit integer/)
  refuses(t, tensor({ data: { a: 1 } }), 'BAD_REQUEST', /^input\.tensor\.data/)
})

t.test('sizes are bounded before decoding', async t => {
  // 1 KiB limit: a 1e9-element shape is refused from the shape alone.
  refuses(t, { model: 'demo', input: { tensor: { shape: [1000, 1000, 1000], dtype: 'float32', data: [] } } }, 'TOO_LARGE', /^input\.tensor\.shape/)
  refuses(t, { model: 'demo', input: { image: { data: 'A'.repeat(4000) } } }, 'TOO_LARGE', /^input\.image\.data/)
  t.equal(parse({ model: 'demo', input: { image: { data: 'A'.repeat(1364) } } }).input.kind, 'image')
})
