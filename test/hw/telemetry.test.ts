// Collector behaviour across samples: inventory caching, queued calls, clocks.
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import t from 'tap'
import { createFixtureRunner, createTelemetry } from '../../hw/index.js'

t.test('accelerator inventory is reused for a minute, then refreshed', async t => {
  const root = t.testdir({ dev: { null: '' } })
  let clock = 0
  let smiCalls = 0
  const fixture = createFixtureRunner({})
  const run = {
    run(cmd: string, args: readonly string[]) {
      if (cmd === 'nvidia-smi') smiCalls++
      return fixture.run(cmd, args)
    },
  }
  const telemetry = createTelemetry({ root, run, diskPaths: [] }, { now: () => clock })
  t.equal((await telemetry.sample()).accelerators, undefined)
  await writeFile(join(root, 'dev', 'hailo0'), '')
  clock += 30_000
  t.equal((await telemetry.sample()).accelerators, undefined, 'still the cached inventory')
  clock += 30_000
  t.strictSame(
    (await telemetry.sample()).accelerators?.map(a => a.source),
    ['/dev/hailo0'],
  )
  t.equal(smiCalls, 2, 'nvidia-smi asked once per refresh, not once per sample')
})

t.test('overlapping sample() calls run one after the other', async t => {
  const root = t.testdir({ proc: { stat: 'cpu  10 0 0 90\ncpu0 10 0 0 90\n' } })
  const telemetry = createTelemetry({ root, run: createFixtureRunner({}), diskPaths: [] })
  const [a, b] = await Promise.all([telemetry.sample(), telemetry.sample()])
  t.equal(a.cpu?.percent, undefined)
  // Same snapshot twice: the counters did not move, so there is no honest percentage.
  t.equal(b.cpu?.percent, undefined)
  await writeFile(join(root, 'proc', 'stat'), 'cpu  40 0 0 160\ncpu0 40 0 0 160\n')
  t.equal((await telemetry.sample()).cpu?.percent, 30)
})

t.test('board is detected once', async t => {
  let unames = 0
  const run = {
    run(cmd: string) {
      if (cmd === 'uname') unames++
      return Promise.resolve(cmd === 'uname' ? { code: 0, stdout: 'aarch64\n' } : null)
    },
  }
  const telemetry = createTelemetry({ root: t.testdir({}), run, diskPaths: [] })
  await telemetry.sample()
  await telemetry.sample()
  t.equal((await telemetry.board()).arch, 'aarch64')
  t.equal(unames, 1)
})
