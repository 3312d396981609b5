// The real machine running the tests, through the real command runner: the sample
// must validate and agree with what Node itself reports about the host.
import { Value } from '@sinclair/typebox/value'
import os from 'node:os'
import { setTimeout as sleep } from 'node:timers/promises'
import t from 'tap'
import { createCommandRunner, createTelemetry, TelemetrySampleSchema } from '../../hw/index.js'

t.test('root "/" with real commands', { skip: process.platform !== 'linux' && 'needs Linux /proc' }, async t => {
  const telemetry = createTelemetry({ root: '/', run: createCommandRunner() })
  const first = await telemetry.sample()
  t.ok(Value.Check(TelemetrySampleSchema, first), JSON.stringify([...Value.Errors(TelemetrySampleSchema, first)].slice(0, 3)))

  t.equal(first.memory?.totalBytes, os.totalmem(), 'MemTotal matches os.totalmem()')
  t.ok(Math.abs((first.uptimeS ?? -1e9) - os.uptime()) < 5, 'uptime matches os.uptime() within 5 s')
  t.equal(first.load?.length, 3)
  first.load?.forEach((v, i) => t.ok(Math.abs(v - (os.loadavg()[i] ?? -1)) < 1, `load[${i}] close to os.loadavg()`))
  t.ok((first.disk?.[0]?.totalBytes ?? 0) > 0, 'disk usage of "/"')
  // df reads the same statfs numbers; its "1B-blocks" column must equal totalBytes.
  const df = await createCommandRunner().run('df', ['-B1', '--output=size,avail', '/'])
  const [size, avail] = df?.stdout.trim().split('\n')[1]?.trim().split(/\s+/).map(Number) ?? []
  if (size !== undefined) t.equal(first.disk?.[0]?.totalBytes, size, 'total matches df')
  if (avail !== undefined) t.ok(Math.abs((first.disk?.[0]?.availableBytes ?? 0) - avail) < 64 * 1024 * 1024, 'available matches df within 64 MiB')
  t.equal(first.board.arch, ({ x64: 'x86_64', arm64: 'aarch64' } as Record<string, string>)[process.arch] ?? first.board.arch)

  // Enough wall time for the jiffy counters to move on every core.
  const until = Date.now() + 150
  while (Date.now() < until) Math.sqrt(Math.random())
  await sleep(250)
  const second = await telemetry.sample()
  t.ok(Value.Check(TelemetrySampleSchema, second))
  const pct = second.cpu?.percent
  t.ok(pct !== undefined && pct >= 0 && pct <= 100, `cpu percent ${pct} within 0..100`)
  t.equal(second.cpu?.cores?.filter(c => c.percent !== undefined).length, os.cpus().length, 'a percent for every online core')
  t.ok(
    second.net?.every(n => n.rxBytesPerS !== undefined),
    'rates on the second sample',
  )
  t.comment(JSON.stringify(second))
})
