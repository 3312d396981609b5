// The shipped example flows (flows/node-red-contrib-cairn/examples/*.json, what the
// editor's Import > Examples menu offers): each parses, uses only node types that exist
// (Node-RED's core nodes or the Cairn package's), and is wired consistently, so an
// import never shows "unknown node" or dangling wires. The flows' behaviour is tested
// end to end in e2e.test.ts.

import t from 'tap'
import { readdirSync, readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import { cairnPackageDir } from '../../flows/node-red-host.js'

const pkgDir = cairnPackageDir()
const examplesDir = join(pkgDir, 'examples')
const require = createRequire(import.meta.url)

/** Node types registered by `RED.nodes.registerType("x", …)` in the given .js files. */
function registeredTypes(files: string[]): Set<string> {
  const types = new Set<string>()
  for (const f of files) {
    for (const m of readFileSync(f, 'utf8').matchAll(/registerType\(\s*["']([^"']+)["']/g)) types.add(m[1]!)
  }
  return types
}

function coreTypes(): Set<string> {
  const core = join(dirname(require.resolve('@node-red/nodes/package.json')), 'core')
  const files = readdirSync(core, { withFileTypes: true })
    .filter(d => d.isDirectory())
    .flatMap(d =>
      readdirSync(join(core, d.name))
        .filter(f => f.endsWith('.js'))
        .map(f => join(core, d.name, f)),
    )
  return registeredTypes(files)
}

function cairnTypes(): Set<string> {
  const pkg = JSON.parse(readFileSync(join(pkgDir, 'package.json'), 'utf8')) as { 'node-red': { nodes: Record<string, string> } }
  return registeredTypes(Object.values(pkg['node-red'].nodes).map(f => join(pkgDir, f)))
}

const core = coreTypes()
const cairn = cairnTypes()
const files = readdirSync(examplesDir).filter(f => f.endsWith('.json'))

t.test('the type lists are real', async t => {
  for (const type of ['inject', 'debug', 'switch', 'change', 'http in', 'http response', 'template', 'catch', 'rbe']) t.ok(core.has(type), `core has ${type}`)
  t.same([...cairn].sort(), ['cairn-agent', 'cairn-events', 'cairn-gpio-in', 'cairn-gpio-out', 'cairn-infer', 'cairn-led', 'cairn-telemetry'])
  t.ok(files.length >= 4, `${files.length} example flows`)
})

for (const file of files) {
  t.test(file, async t => {
    const flow = JSON.parse(readFileSync(join(examplesDir, file), 'utf8')) as Array<Record<string, unknown>>
    t.ok(Array.isArray(flow), 'a flow is an array of nodes')
    const ids = new Map(flow.map(n => [n.id as string, n]))
    t.equal(ids.size, flow.length, 'node ids are unique')
    const tabs = flow.filter(n => n.type === 'tab')
    t.equal(tabs.length, 1, 'one tab')
    for (const n of flow) {
      const type = n.type as string
      t.ok(type === 'tab' || core.has(type) || cairn.has(type), `${n.id}: type ${JSON.stringify(type)} exists`)
      if (n.z !== undefined) t.equal(ids.get(n.z as string)?.type, 'tab', `${n.id} sits on the flow's tab`)
      for (const out of (n.wires as string[][] | undefined) ?? []) {
        for (const target of out) t.ok(ids.has(target), `${n.id} → ${target} exists`)
      }
      if (type.startsWith('cairn-') && type !== 'cairn-agent') t.equal(ids.get(n.agent as string)?.type, 'cairn-agent', `${n.id} names a cairn-agent config node`)
      for (const scoped of (n.scope as string[] | undefined) ?? []) t.ok(ids.has(scoped), `${n.id} catches from ${scoped}`)
    }
    const agents = flow.filter(n => n.type === 'cairn-agent')
    // One shared id and the device paths: importing several examples reuses one connection.
    t.same(
      agents.map(a => [a.id, a.socket, a.tokenFile]),
      [['cairn-agent-device', '/var/lib/cairn/api.sock', '/var/lib/cairn/api.token']],
    )
  })
}
