// The walls between rooms (.dependency-cruiser.cjs, run by `npm run walls` in `npm test`)
// are live: on a small tree shaped like Cairn's, each forbidden import is reported under
// its rule, and the imports the layout allows pass. Without this, a rule that matched no
// path (a typo, a renamed room) would pass for ever.

import t from 'tap'
import { execFileSync } from 'node:child_process'
import { mkdirSync, writeFileSync } from 'node:fs'
import { dirname, join } from 'node:path'

const REPO = join(import.meta.dirname, '..')
const DEPCRUISE = join(REPO, 'node_modules', '.bin', 'depcruise')

interface Violation {
  rule: { name: string }
  from: string
  to: string
}

/** Writes `files` (path -> what it imports) as TypeScript modules and cruises them. */
function cruise(dir: string, files: Record<string, string[]>): Violation[] {
  writeFileSync(join(dir, 'tsconfig.json'), JSON.stringify({ compilerOptions: { module: 'NodeNext', moduleResolution: 'NodeNext', allowJs: true } }))
  for (const [file, imports] of Object.entries(files)) {
    mkdirSync(join(dir, dirname(file)), { recursive: true })
    const rel = (to: string) => {
      const r = join(dirname(file), '/')
        .split('/')
        .filter(Boolean)
        .map(() => '..')
        .join('/')
      return `${r || '.'}/${to.replace(/\.ts$/, '.js')}`
    }
    writeFileSync(join(dir, file), imports.map((to, i) => `import * as m${i} from '${rel(to)}'\nvoid m${i}\n`).join('') + 'export const here = 1\n')
  }
  let out: string
  try {
    out = execFileSync(DEPCRUISE, ['--config', join(REPO, '.dependency-cruiser.cjs'), '--output-type', 'json', ...new Set(Object.keys(files).map(f => f.split('/')[0]!))], {
      cwd: dir,
      encoding: 'utf8',
    })
  } catch (err) {
    // depcruise exits non-zero when it finds violations; the report is still on stdout
    out = (err as { stdout: string }).stdout
  }
  return (JSON.parse(out) as { summary: { violations: Violation[] } }).summary.violations
}

t.test('each forbidden import is reported under its rule', async t => {
  const dir = t.testdir()
  const found = cruise(dir, {
    'protocol/envelope.ts': ['agent/core/outbox.ts'],
    'hw/board.ts': ['protocol/errors.ts'],
    'agent/core/outbox.ts': ['ota/updater.ts'],
    'agent/core/commands.ts': ['agent/task/queue.ts'],
    'agent/task/queue.ts': [],
    'validator/ingest.ts': ['agent/core/outbox.ts'],
    'fleet/command-client.ts': ['agent/core/outbox.ts'],
    'fleet/sim/sim.ts': ['agent/task/queue.ts'],
    'ota/updater.ts': ['image-build/os-update/helper.ts'],
    'image-build/os-update/helper.ts': ['agent/core/outbox.ts'],
    'flows/node-red-host.ts': ['agent/core/outbox.ts'],
    'agent/local-api/api-client.ts': ['cli/cli.ts'],
    'cli/cli.ts': [],
    'protocol/errors.ts': [],
    'agent/cache/a.ts': ['agent/cache/b.ts'],
    'agent/cache/b.ts': ['agent/cache/a.ts'],
  })
  const rules = (from: string) => found.filter(v => v.from === from).map(v => v.rule.name)
  t.ok(rules('protocol/envelope.ts').includes('protocol-imports-no-program'), 'protocol-imports-no-program: protocol/envelope.ts')
  t.ok(rules('hw/board.ts').includes('hw-imports-no-cairn'), 'hw-imports-no-cairn: hw/board.ts')
  t.ok(rules('agent/core/outbox.ts').includes('agent-imports-no-other-program'), 'agent-imports-no-other-program: agent/core/outbox.ts')
  t.ok(rules('agent/core/commands.ts').includes('agent-core-imports-no-feature'), 'agent-core-imports-no-feature: agent/core/commands.ts')
  t.ok(rules('validator/ingest.ts').includes('validator-imports-only-protocol'), 'validator-imports-only-protocol: validator/ingest.ts')
  t.ok(rules('fleet/command-client.ts').includes('fleet-tools-import-only-protocol'), 'fleet-tools-import-only-protocol: fleet/command-client.ts')
  t.ok(rules('fleet/sim/sim.ts').includes('simulator-runs-only-the-device-side'), 'simulator-runs-only-the-device-side: fleet/sim/sim.ts')
  t.ok(rules('ota/updater.ts').includes('ota-plugs-into-the-agent-core-only'), 'ota-plugs-into-the-agent-core-only: ota/updater.ts')
  t.ok(rules('image-build/os-update/helper.ts').includes('image-build-not-agent-internals'), 'image-build-not-agent-internals: image-build/os-update/helper.ts')
  t.ok(rules('flows/node-red-host.ts').includes('flows-through-the-local-api-client'), 'flows-through-the-local-api-client: flows/node-red-host.ts')
  t.ok(rules('agent/local-api/api-client.ts').includes('nothing-imports-the-composition-room'), 'nothing-imports-the-composition-room: agent/local-api/api-client.ts')
  t.ok(
    found.some(v => v.rule.name === 'no-cycles' && v.from.startsWith('agent/cache/')),
    'a cycle',
  )
})

t.test('what the layout allows passes', async t => {
  const dir = t.testdir()
  const found = cruise(dir, {
    'protocol/messages.ts': ['hw/schema.ts', 'protocol/errors.ts'],
    'protocol/errors.ts': [],
    'hw/schema.ts': [],
    'agent/agent.ts': ['agent/core/outbox.ts', 'agent/task/queue.ts', 'protocol/errors.ts', 'hw/schema.ts'],
    'agent/core/outbox.ts': ['agent/config/config-schema.ts', 'protocol/errors.ts'],
    'agent/config/config-schema.ts': ['protocol/errors.ts'],
    'agent/task/queue.ts': ['agent/core/outbox.ts'],
    'ota/ota-service.ts': ['agent/core/outbox.ts', 'agent/config/config-schema.ts', 'protocol/errors.ts'],
    'image-build/provision/spec.ts': ['agent/config/config-schema.ts', 'ota/ota-service.ts', 'hw/schema.ts'],
    'fleet/sim/sim.ts': ['agent/core/outbox.ts', 'protocol/errors.ts'],
    'validator/ingest.ts': ['protocol/errors.ts'],
    'flows/node-red-host.ts': ['agent/local-api/api-client.ts'],
    'agent/local-api/api-client.ts': [],
    'cli/cli.ts': ['agent/agent.ts', 'ota/ota-service.ts', 'validator/ingest.ts', 'fleet/sim/sim.ts', 'image-build/provision/spec.ts', 'flows/node-red-host.ts'],
  })
  t.same(
    found.map(v => `${v.rule.name}: ${v.from} -> ${v.to}`),
    [],
  )
})
