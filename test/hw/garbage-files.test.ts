// Every file of every fixture board overwritten with random bytes, and every
// command answering random bytes: parsers must reject it all without throwing.
// Only presence-based findings (a /dev node exists) may survive.
import { Value } from '@sinclair/typebox/value'
import { readdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import t from 'tap'
import { createFixtureRunner, createTelemetry, TelemetrySampleSchema } from '../../hw/index.js'
import { BOARDS, openBoard } from './fixture/open-board.js'

// Deterministic, so a failure can be replayed.
function prng(seed: number): () => number {
  let s = seed >>> 0
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0
    return s
  }
}

function garbage(next: () => number): Buffer {
  const len = 16 + (next() % 200)
  return Buffer.from(Array.from({ length: len }, () => next() & 0xff))
}

async function scramble(dir: string, next: () => number): Promise<void> {
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name)
    if (entry.isDirectory()) await scramble(path, next)
    else await writeFile(path, garbage(next))
  }
}

const MEASUREMENTS = ['uptimeS', 'load', 'cpu', 'memory', 'net', 'thermal', 'throttle', 'fan', 'power', 'gpu'] as const

BOARDS.forEach((name, i) => {
  t.test(name, async t => {
    const fx = await openBoard(t, name)
    const next = prng(0xc0ffee + i)
    await scramble(fx.ctx.root, next)
    const commands = Object.fromEntries(Object.keys(fx.commands).map(k => [k, garbage(next).toString('latin1')]))
    let clock = 0
    const telemetry = createTelemetry({ ...fx.ctx, run: createFixtureRunner(commands) }, { now: () => clock })
    for (let n = 0; n < 2; n++) {
      const s = await telemetry.sample()
      t.ok(Value.Check(TelemetrySampleSchema, s), `sample ${n + 1} validates`)
      for (const field of MEASUREMENTS) t.equal(s[field], undefined, `${field} absent`)
      t.equal(s.board.kind, 'generic', 'an unreadable model string names no board')
      t.ok(
        (s.accelerators ?? []).every(a => a.source.startsWith('/dev/')),
        'only device-node findings survive',
      )
      await scramble(fx.ctx.root, next)
      clock += 1000
    }
  })
})
