// A root with nothing in it (a container, a stripped-down image) must still give a
// valid sample: every measurement absent, nothing thrown.
import { Value } from '@sinclair/typebox/value'
import { join } from 'node:path'
import t from 'tap'
import { accelerators, createFixtureRunner, createTelemetry, detectBoard, TelemetrySampleSchema } from '../../hw/index.js'

t.test('empty root and no commands', async t => {
  const root = t.testdir({})
  const ctx = { root, run: createFixtureRunner({}), diskPaths: [join(root, 'no-such-mount')] }
  let clock = 0
  const telemetry = createTelemetry(ctx, { now: () => clock })
  for (let i = 0; i < 2; i++) {
    const s = await telemetry.sample()
    t.ok(Value.Check(TelemetrySampleSchema, s))
    t.strictSame(Object.keys(s), ['board'], `sample ${i + 1} holds only the board`)
    t.equal(s.board.kind, 'generic')
    t.match(s.board.model, /^generic \S+$/, 'no cpu model name to add')
    clock += 1000
  }
  t.strictSame(await accelerators(ctx), [])
})

t.test('root that does not exist at all', async t => {
  const ctx = { root: join(t.testdir({}), 'absent'), run: createFixtureRunner({}), diskPaths: [] }
  const s = await createTelemetry(ctx).sample()
  t.ok(Value.Check(TelemetrySampleSchema, s))
  t.strictSame(Object.keys(s), ['board'])
  t.equal((await detectBoard(ctx)).kind, 'generic')
})
