// The reaper (reap-children.ts, loaded into every test process) kills what a test process
// spawned when that process exits without its teardown: a plain exit, an uncaught error.
// Each case runs in a child Node with the reaper loaded, which spawns a long sleeper,
// prints its pid and dies; the sleeper must be gone once the child has exited.

import t from 'tap'
import { spawn } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { until } from './agent.js'

const reaper = fileURLToPath(new URL('./reap-children.ts', import.meta.url))

/** Running, as opposed to gone or a zombie waiting for init to reap it. */
const alive = (pid: number) => {
  try {
    return readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.[0] !== 'Z'
  } catch {
    return false
  }
}

for (const [how, ending] of [
  ['process.exit(1)', 'process.exit(1)'],
  ['an uncaught error', 'throw new Error("boom")'],
] as const)
  t.test(`a test process that ends by ${how} leaves no child behind`, async t => {
    const script = `const { spawn } = require('node:child_process'); const c = spawn('sleep', ['600'], { stdio: 'ignore' }); c.on('spawn', () => { console.log(c.pid); setTimeout(() => { ${ending} }, 10) })`
    const child = spawn(process.execPath, ['--import', 'tsx', '--import', reaper, '-e', script], { stdio: ['ignore', 'pipe', 'ignore'] })
    let out = ''
    child.stdout.on('data', d => (out += String(d)))
    await new Promise(r => child.once('exit', r))
    const pid = Number(out.trim())
    t.ok(pid > 0, `the sleeper started (pid ${pid})`)
    t.teardown(() => {
      if (alive(pid)) process.kill(pid, 'SIGKILL')
    })
    // SIGKILL was sent before the parent's exit; its delivery is the kernel's, a moment later.
    await until(() => !alive(pid), 10_000, 'the sleeper to die').catch(() => undefined)
    t.notOk(alive(pid), 'and is gone with its parent')
  })
