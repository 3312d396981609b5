// Makes the screenshots in docs/img/ from a real run: `cairn demo` (the bundle, as
// `npm start` runs it) with its embedded Node-RED, the shipped example flows deployed
// through Node-RED's admin API, and the editor drawn by headless Chromium.
//
//   npm run build && node --import tsx flows/editor-screenshots.ts [--out docs/img]
//
// Needs `chromium` (apt-get install chromium). Not part of the tests: pictures change
// with every Node-RED release, the docs only need them refreshed now and then.

import { spawn, spawnSync } from 'node:child_process'
import { mkdirSync, mkdtempSync, readdirSync, readFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { parseArgs } from 'node:util'
import { cairnPackageDir } from './node-red-host.js'

type FlowNode = Record<string, unknown> & { id: string; type: string }

const { values } = parseArgs({ options: { out: { type: 'string', default: 'docs/img' } } })
const out = resolve(values.out!)
mkdirSync(out, { recursive: true })
const repo = new URL('..', import.meta.url).pathname
const stateDir = mkdtempSync(join(tmpdir(), 'cairn-shots-'))

const demo = spawn(process.execPath, [join(repo, 'dist/cairn.mjs'), 'demo', '--state-dir', stateDir, '--port', '0', '--node-red-port', '0'], { stdio: ['ignore', 'pipe', 'inherit'] })
try {
  const url = await new Promise<string>((resolveUrl, reject) => {
    let text = ''
    const timer = setTimeout(() => reject(new Error(`no Node-RED URL from cairn demo within 60 s:\n${text}`)), 60_000)
    demo.stdout.on('data', (b: Buffer) => {
      text += b.toString()
      const m = /node-red\s+(http:\/\/127\.0\.0\.1:\d+\/)/.exec(text)
      if (m) {
        clearTimeout(timer)
        resolveUrl(m[1]!)
      }
    })
    demo.once('exit', code => reject(new Error(`cairn demo exited (${code}):\n${text}`)))
  })

  // Deploy the examples beside the starter flow, on the demo's own config node.
  const api = { 'content-type': 'application/json', 'node-red-api-version': 'v2' }
  const current = (await (await fetch(url + 'flows', { headers: api })).json()) as { rev: string; flows: FlowNode[] }
  const cfg = current.flows.find(n => n.type === 'cairn-agent')!.id
  const dir = join(cairnPackageDir(), 'examples')
  const examples = readdirSync(dir)
    .filter(f => f.endsWith('.json'))
    .sort()
    .flatMap(f => JSON.parse(readFileSync(join(dir, f), 'utf8')) as FlowNode[])
    .filter(n => n.type !== 'cairn-agent')
    .map(n => (typeof n.agent === 'string' ? { ...n, agent: cfg } : n))
  const res = await fetch(url + 'flows', {
    method: 'POST',
    headers: { ...api, 'node-red-deployment-type': 'full' },
    body: JSON.stringify({ rev: current.rev, flows: [...current.flows, ...examples] }),
  })
  if (!res.ok) throw new Error(`deploy failed: HTTP ${res.status} ${await res.text()}`)

  const shots: Array<[string, string]> = [
    ['node-red-palette.png', 'cairn-demo-tab'],
    ['node-red-flow-led-button.png', 'cairn-ex1'],
    ['node-red-flow-classify.png', 'cairn-ex3'],
    ['node-red-flow-alert.png', 'cairn-ex4'],
  ]
  for (const [file, tab] of shots) {
    const r = spawnSync(
      'chromium',
      ['--headless=new', '--no-sandbox', '--disable-gpu', '--hide-scrollbars', `--screenshot=${join(out, file)}`, '--window-size=1400,900', '--virtual-time-budget=15000', `${url}#flow/${tab}`],
      { encoding: 'utf8', timeout: 120_000 },
    )
    if (r.status !== 0) throw new Error(`chromium failed for ${file}: ${r.stderr}`)
    process.stdout.write(`${join(out, file)}\n`)
  }
} finally {
  demo.kill('SIGTERM')
}
