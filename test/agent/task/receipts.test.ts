// Receipts and the task CLI: the vectors file matches the code, every vector verifies
// (with the code and with the OpenSSL-only recipe of docs/tasks.md), a tampered
// receipt is refused, and `cairn task submit` / `cairn task verify` work end to end
// against a real agent on real Mosquitto, with distinct exit codes, in MQTT 5 and 3.1.1.

import t from 'tap'
import { spawnSync } from 'node:child_process'
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { main } from '../../../cli/cli.js'
import { signedBytes, type Envelope } from '../../../protocol/envelope.js'
import { checkReceipt, encodeTaskMessage, taskMessageHash, type TaskReceipt } from '../../../protocol/task-format.js'
import { SUBMIT_EXIT } from '../../../fleet/task-cli.js'
import { taskVectors } from '../../../cli/vectors/task-vectors.js'
import { generatedDocFiles } from '../../../cli/docs-gen.js'
import { startBroker, type TestBroker } from '../../helpers/broker.js'
import { MQTT_VERSIONS } from '../../helpers/mqtt-versions.js'
import { tmp } from '../../helpers/agent.js'
import { schemaErrors } from '../../helpers/schemas.js'
import { FLEET, taskAgent } from '../../helpers/task-agent.js'

const docs = new URL('../../../docs/', import.meta.url)
const vectors = JSON.parse(readFileSync(new URL('vectors/tasks-v1.json', docs), 'utf8')) as ReturnType<typeof taskVectors>
const tasksMd = readFileSync(new URL('tasks.md', docs), 'utf8')
const byName = (prefix: string) => vectors.vectors.find(v => v.name.startsWith(prefix))!

async function cli(args: string[]) {
  let out = ''
  let err = ''
  const code = await main(args, { out: { write: (s: string) => (out += s) }, err: { write: (s: string) => (err += s) }, env: {} })
  return { code, out, err }
}

t.test('docs/vectors/tasks-v1.json and the task schemas match the code', async t => {
  const files = generatedDocFiles()
  t.equal(readFileSync(new URL('vectors/tasks-v1.json', docs), 'utf8'), files['vectors/tasks-v1.json'], 'vectors file is what npm run docs:gen writes')
  for (const name of ['task-request', 'task-cancel', 'task-receipt', 'task-update']) {
    t.equal(readFileSync(new URL(`schemas/${name}.json`, docs), 'utf8'), files[`schemas/${name}.json`], `${name}.json is current`)
  }
  t.same(taskVectors(), taskVectors(), 'deterministic')
})

t.test('every vector verifies, and the receipt is bound to the request', async t => {
  const req = byName('task.request').envelope as Envelope
  const rcpt = byName('task.receipt')
  for (const v of vectors.vectors) {
    t.equal(encodeTaskMessage(v.envelope as Envelope).toString('utf8'), v.wireUtf8, `${v.name}: wire form is JCS`)
    t.equal(signedBytes(v.envelope as Envelope).toString('hex'), v.signedBytesHex, `${v.name}: signed bytes`)
    t.equal(taskMessageHash(v.envelope as Envelope), v.sha256, `${v.name}: hash`)
    t.equal(schemaErrors('envelope', v.envelope), null, `${v.name}: envelope schema`)
  }
  t.equal(schemaErrors('task-request', req.body), null)
  t.equal(schemaErrors('task-cancel', byName('task.cancel').envelope.body), null)
  t.equal(schemaErrors('task-receipt', rcpt.envelope.body), null)
  const { checked } = checkReceipt(rcpt.wireUtf8, { device: vectors.device.keyId, request: req })
  t.equal(checked.length, 6, checked.join('\n'))
  t.equal((rcpt.envelope.body as { request: string }).request, byName('task.request').sha256)
  t.ok(tasksMd.includes(rcpt.wireUtf8), 'docs/tasks.md shows the receipt vector byte for byte')
  t.ok(tasksMd.includes(byName('task.request').wireUtf8), 'and the request it answers')
})

t.test('tampered receipts are refused', async t => {
  const rcpt = byName('task.receipt').envelope as unknown as TaskReceipt
  const req = byName('task.request').envelope as Envelope
  const cases: Array<[string, unknown, string]> = [
    ['result changed', { ...rcpt, body: { ...rcpt.body, result: { top: [{ label: 'square', p: 0.875 }] } } }, 'BAD_SIGNATURE'],
    ['outcome changed', { ...rcpt, body: { ...rcpt.body, outcome: 'failed', error: { code: 'TIMEOUT', message: 'x' } } }, 'BAD_SIGNATURE'],
    ['signature re-spelled', { ...rcpt, sig: rcpt.sig.slice(0, 85) + 'B' }, 'BAD_REQUEST'],
    ['signed by another key', { ...rcpt, iss: vectors.dispatcher.keyId }, 'BAD_SIGNATURE'],
    ['extra field', { ...rcpt, body: { ...rcpt.body, bonus: 1 } }, 'BAD_REQUEST'],
    ['not JSON', '{"type":', 'BAD_JSON'],
  ]
  for (const [name, value, code] of cases) {
    t.throws(() => checkReceipt(typeof value === 'string' ? value : JSON.stringify(value)), { code }, name)
  }
  t.throws(() => checkReceipt(rcpt, { device: vectors.dispatcher.keyId }), { code: 'UNTRUSTED_KEY' }, 'not the expected device')
  t.throws(() => checkReceipt(rcpt, { request: { ...req, id: 'vector-req-0002' } }), { code: 'BAD_REQUEST' }, 'another request')
  t.throws(() => checkReceipt(rcpt, { request: { ...req, iss: 'x' } as Envelope }), { code: 'BAD_REQUEST', message: /request is not a signed envelope/ }, 'a request file that is no envelope')
  t.throws(() => checkReceipt(rcpt, { request: byName('task.cancel').envelope as Envelope }), { code: 'BAD_REQUEST' }, 'a cancel is not a request')
})

// ---- the OpenSSL recipe, run exactly as docs/tasks.md prints it ----

const recipes = new Map<string, string>()
for (const m of tasksMd.matchAll(/```sh\n# recipe: ([^\n]+)\n([\s\S]*?)```/g)) recipes.set(m[1]!, m[2]!)
function runRecipe(name: string, files: Record<string, string | Buffer>) {
  const script = recipes.get(name)
  if (script === undefined) throw new Error(`docs/tasks.md has no "# recipe: ${name}" block`)
  const dir = mkdtempSync(join(tmpdir(), 'cairn-task-ossl-'))
  for (const [f, data] of Object.entries(files)) writeFileSync(join(dir, f), data)
  const r = spawnSync('bash', ['-c', script], { cwd: dir, encoding: 'utf8' })
  return { status: r.status, out: `${r.stdout}${r.stderr}` }
}

t.test('the OpenSSL-only recipes verify the vectors and refuse a one-byte change', async t => {
  if (spawnSync('openssl', ['version']).status !== 0) {
    t.comment('SKIP: openssl not installed')
    return
  }
  t.same([...recipes.keys()].sort(), ['request binding', 'verify receipt.json'])
  for (const v of vectors.vectors) {
    const r = runRecipe('verify receipt.json', { 'receipt.json': v.wireUtf8 })
    t.equal(r.status, 0, `${v.name}: ${r.out}`)
    t.match(r.out, /Signature Verified Successfully/)
    t.equal(r.out.split('\n')[0], v.sha256, `${v.name}: the hash`)
  }
  const wire = byName('task.receipt').wireUtf8
  const bad = runRecipe('verify receipt.json', { 'receipt.json': wire.replace('"p":0.875', '"p":0.975') })
  t.not(bad.status, 0)
  t.match(bad.out, /Signature Verification Failure/)
  const bind = runRecipe('request binding', { 'receipt.json': wire, 'request.json': byName('task.request').wireUtf8 })
  t.equal(bind.status, 0, bind.out)
  t.match(bind.out, /bound to the request/)
  const other = runRecipe('request binding', { 'receipt.json': wire, 'request.json': byName('task.cancel').wireUtf8 })
  t.not(other.status, 0, 'another message is not the request')
})

// Device and dispatcher in the same MQTT version, then a dispatcher of the other.
for (const { mqttVersion, label } of MQTT_VERSIONS)
  t.test(`${label}: cairn task submit and cairn task verify against a real agent`, async t => {
    const broker: TestBroker = await startBroker()
    t.teardown(() => broker.close())
    const h = await taskAgent(t, { url: broker.url, mqttVersion })
    const dir = tmp()
    const base = ['--broker', broker.url, '--mqtt-version', String(mqttVersion), '--fleet', FLEET, '--key', h.dispatcher.file]
    const submit = (extra: string[]) => cli(['task', 'submit', h.device, ...base, ...extra])

    const ok = await submit(['--type', 'inference', '--params', JSON.stringify({ label: 'cli' }), '--request-out', join(dir, 'req.json'), '--priority', '4'])
    t.equal(ok.code, SUBMIT_EXIT.done, ok.err)
    const printed = JSON.parse(ok.out) as { outcome: string; result: unknown; receipt: TaskReceipt; task: string }
    t.equal(printed.outcome, 'done')
    t.same(printed.result, { echo: 'echo:cli' })
    t.match(ok.err, /accepted/, 'progress on stderr')
    t.match(ok.err, /receipt verified/)
    const reqFile = join(dir, 'req.json')
    t.equal(taskMessageHash(JSON.parse(readFileSync(reqFile, 'utf8')) as Envelope), printed.receipt.body.request)
    t.equal(spawnSync('openssl', ['dgst', '-sha256', '-r', reqFile], { encoding: 'utf8' }).stdout.slice(0, 64), printed.receipt.body.request, 'the saved request hashes to what the receipt cites')

    writeFileSync(join(dir, 'out.json'), ok.out)
    writeFileSync(join(dir, 'receipt.json'), encodeTaskMessage(printed.receipt))
    const v1 = await cli(['task', 'verify', join(dir, 'out.json'), '--device', h.device, '--request', reqFile])
    t.equal(v1.code, 0, v1.err)
    t.match(v1.out, /valid receipt: task \S+ \(inference\) done/)
    t.match(v1.out, /bound to request/)
    const pubFile = join(dir, 'device.pub')
    writeFileSync(pubFile, (await cli(['id', '--state-dir', h.a.stateDir, '--json'])).out.match(/"publicKey":"([^"]+)"/)![1]!.replace(/\\n/g, '\n'))
    t.equal((await cli(['task', 'verify', join(dir, 'receipt.json'), '--device', pubFile])).code, 0, 'device given as a public key file')

    const tampered = readFileSync(join(dir, 'receipt.json'), 'utf8').replace('echo:cli', 'echo:clj')
    writeFileSync(join(dir, 'tampered.json'), tampered)
    const v2 = await cli(['task', 'verify', join(dir, 'tampered.json')])
    t.equal(v2.code, 1)
    t.match(v2.err, /INVALID receipt \(BAD_SIGNATURE\)/)
    const v3 = await cli(['task', 'verify', join(dir, 'receipt.json'), '--device', h.dispatcher.keyId])
    t.equal(v3.code, 1, 'wrong device refused')

    const rej = await submit(['--type', 'inference', '--params', JSON.stringify({ label: 'x', mode: 'cannot' })])
    t.equal(rej.code, SUBMIT_EXIT.rejected, rej.err)
    t.match(JSON.parse(rej.out), { rejected: { error: { code: 'UNSUPPORTED' } } })
    const failed = await submit(['--type', 'cache', '--params', JSON.stringify({ label: 'x', mode: 'fail' })])
    t.equal(failed.code, SUBMIT_EXIT.failed, failed.err)
    t.match(JSON.parse(failed.out), { outcome: 'failed', receipt: { body: { error: { code: 'CONTENT_MISMATCH' } } } })
    const other = mqttVersion === 5 ? 4 : 5
    const mixed = await submit(['--type', 'inference', '--params', JSON.stringify({ label: 'old' }), '--mqtt-version', String(other)])
    t.equal(mixed.code, SUBMIT_EXIT.done, `an MQTT ${other === 4 ? '3.1.1' : '5'} dispatcher: ${mixed.err}`)
    const offline = await cli(['task', 'submit', 'nosuchdevice', ...base, '--type', 'inference', '--params', '{}', '--timeout', '0.5'])
    t.equal(offline.code, SUBMIT_EXIT.timeout, 'no device: timeout')
    const usage = await cli(['task', 'submit', h.device, ...base, '--type', 'mining', '--params', '{}'])
    t.equal(usage.code, 2, 'usage error')
    t.same(h.ex.inference.runs, ['cli', 'old'])
  })

t.test('submit flags build the executors params', async t => {
  const { paramsFromFlags } = await import('../../../fleet/task-cli.js')
  const dir = tmp()
  writeFileSync(join(dir, 'x.png'), Buffer.from([0x89, 0x50, 0x4e, 0x47]))
  writeFileSync(join(dir, 't.json'), JSON.stringify({ shape: [1, 2], dtype: 'float32', data: [1, 2] }))
  t.same(paramsFromFlags({ type: 'inference', model: 'demo', input: join(dir, 'x.png'), 'top-k': '3' }), { model: 'demo', input: { image: { data: 'iVBORw==' } }, topK: 3 })
  t.same(paramsFromFlags({ type: 'inference', model: 'a'.repeat(64), 'model-url': ['http://127.0.0.1:1/m'], input: join(dir, 't.json') }), {
    model: { sha256: 'a'.repeat(64), urls: ['http://127.0.0.1:1/m'] },
    input: { tensor: { shape: [1, 2], dtype: 'float32', data: [1, 2] } },
  })
  t.same(paramsFromFlags({ type: 'cache', cid: ['b'.repeat(64), 'bafkreiabc'], origin: ['http://o/{cid}', 'http://mirror/all'], pin: true }), {
    objects: [
      { sha256: 'b'.repeat(64), origins: [`http://o/${'b'.repeat(64)}`, 'http://mirror/all'], pin: true },
      { cid: 'bafkreiabc', origins: ['http://o/bafkreiabc', 'http://mirror/all'], pin: true },
    ],
  })
  t.throws(() => paramsFromFlags({ type: 'inference', model: 'demo' }), { code: 'BAD_REQUEST' }, '--input required')
  t.throws(() => paramsFromFlags({ type: 'cache', cid: ['x'] }), { code: 'BAD_REQUEST' }, '--origin required')
})
