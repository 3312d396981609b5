// Loaded into every test process (package.json: tap's node-arg --import): whatever the
// test spawns (agents, brokers, Node-RED, tool stand-ins) is killed when the test process
// exits, however it exits: a failed assertion that skipped a teardown, an uncaught error,
// tap's timeout. Before this, one failed run left an agent and its inference worker
// running for 37 minutes (issue 17, finding 9). CI also fails when a process outlives
// the suite (.ci/run).
//
// Every way Node starts a child (spawn, fork, exec, execFile) goes through
// ChildProcess.prototype.spawn, so wrapping that one method sees them all.

import { ChildProcess } from 'node:child_process'

const live = new Set<ChildProcess>()
// Not in Node's type declarations, but the method every child starts through.
type Spawn = (this: ChildProcess, ...args: unknown[]) => unknown
const proto = ChildProcess.prototype as unknown as { spawn: Spawn }
const original = proto.spawn

proto.spawn = function (this: ChildProcess, ...args: unknown[]) {
  const r = original.apply(this, args)
  live.add(this)
  this.once('exit', () => live.delete(this))
  return r
}

process.on('exit', () => {
  for (const child of live) {
    if (child.exitCode !== null || child.signalCode !== null) continue
    try {
      child.kill('SIGKILL')
    } catch {
      // already gone
    }
  }
})
