// docs/ota.md against the code it describes, where a reader acts on its words: the names
// `release add --arch/--board` must use, the defaults that size a trial, and the
// delivery guarantee of the outcome events. (What a release target holds is checked
// against a real pack in test/ota/pack.test.ts.)

import t from 'tap'
import { readFileSync } from 'node:fs'
import { Value } from '@sinclair/typebox/value'
import { ConfigSchema } from '../../agent/config/config-schema.js'
import { NODE_ARCH_TO_UNAME } from '../../hw/board.js'
import { BoardSchema } from '../../hw/schema.js'
import { DEFAULT_GRACE_S, KILL_AFTER_S } from '../../ota/launcher.mjs'

const doc = readFileSync(new URL('../../docs/ota.md', import.meta.url), 'utf8')

/** The text of the section under `heading` (to the next heading of its level or above). */
function section(heading: string): string {
  const at = doc.indexOf(`\n${heading}\n`)
  if (at < 0) throw new Error(`docs/ota.md has no "${heading}"`)
  const level = /^#+/.exec(heading)![0].length
  const rest = doc.slice(at + heading.length + 2)
  const next = rest.search(new RegExp(`\\n#{1,${level}} `))
  return next < 0 ? rest : rest.slice(0, next)
}

t.test('--arch and --board: the names a device compares, and the uname names beside them', async t => {
  const s = section('### Which devices a release is for')
  // The device compares process.arch (ota/ota-service.ts); the table pairs it with uname.
  const rows = [...s.matchAll(/^\| `([a-z0-9]+)` \| `([a-z0-9_]+)` \|/gm)].map(m => [m[1]!, m[2]!] as const)
  t.ok(rows.length >= 3, 'a table of Node and uname names')
  for (const [node, uname] of rows) t.equal(NODE_ARCH_TO_UNAME[node], uname, `${node} is ${uname} to the kernel`)
  t.ok(
    rows.some(([node]) => node === process.arch),
    `this machine's ${process.arch} is among them`,
  )
  const arch = /^\| `--arch` \|.*\| (`[^|]+`) \|$/m.exec(s)?.[1]
  t.same(
    arch?.match(/`([^`]+)`/g)?.map(x => x.slice(1, -1)),
    rows.map(([node]) => node),
    '--arch lists the same names',
  )
  const boards = /^\| `--board` \|.*\| (`[^|]+`) \|$/m
    .exec(s)?.[1]
    ?.match(/`([^`]+)`/g)
    ?.map(x => x.slice(1, -1))
  const kinds = (BoardSchema.properties.kind.anyOf as Array<{ const: string }>).map(k => k.const)
  t.same(boards, kinds, '--board lists every board kind of the status')
})

t.test('the trial defaults the docs size against are the code defaults', async t => {
  const defaults = Value.Default(ConfigSchema, {}) as { ota: { healthDeadlineS: number } }
  const deadline = defaults.ota.healthDeadlineS
  t.match(section('### Settings'), new RegExp(`\\| \`ota\\.healthDeadlineS\` \\| \\| ${deadline} \\|`), `settings table: ${deadline}`)
  t.match(section('### The health check'), new RegExp(`\\(default ${deadline} s\\)`), 'the health check')
  t.match(section('#### Sizing the health deadline'), new RegExp(`default of\\s+\\*\\*${deadline} s\\*\\*`), 'the sizing advice')
  const launcher = section('### The launcher')
  t.match(launcher, new RegExp(`default grace ${DEFAULT_GRACE_S} s`), `launcher grace ${DEFAULT_GRACE_S} s`)
  t.match(launcher, new RegExp(`SIGKILL ${KILL_AFTER_S} s later`), `SIGKILL ${KILL_AFTER_S} s after SIGTERM`)
  t.match(section('#### Sizing the health deadline'), new RegExp(`default ${DEFAULT_GRACE_S} s\\) \\+ ${KILL_AFTER_S} s to SIGKILL`), 'the worst case adds them up')
  // The bound, with the defaults: deadline + grace + SIGKILL leave room for a start.
  t.ok(deadline + DEFAULT_GRACE_S + KILL_AFTER_S <= 50, 'a hung trial is gone with 10 s or more to spare for the old version to start')
})

t.test('outcome events: recorded exactly once, delivered at least once, de-duplicated by id', async t => {
  const machine = section('### The state machine')
  t.match(machine, /recorded exactly once/)
  t.match(machine, /delivered at least once/)
  t.match(machine, /de-duplicate by `id`/i)
  t.notMatch(machine, /reported exactly once/, 'no promise of exactly-once delivery')
  t.match(section('### Events'), /at least once[\s\S]*de-duplicate by `id`/)
})
