// Test stand-in for systemd's Restart=always: runs the OTA launcher (ota/launcher.mjs)
// as a real process in its own process group and starts it again whenever it exits,
// after a short delay. Each start of the launcher is one start attempt, as on a device.

import { spawn, type ChildProcess } from 'node:child_process'

export interface SupervisorOptions {
  launcher: string
  otaDir: string
  fallback?: string
  graceS?: number
  agentArgs: string[]
  env?: NodeJS.ProcessEnv
  restartDelayMs?: number
  /** Each line the launcher or the agent prints. */
  onLine?: (line: string) => void
}

export interface Supervisor {
  /** Exit of every launcher run so far. */
  readonly exits: Array<{ code: number | null; signal: NodeJS.Signals | null; at: number }>
  readonly lines: string[]
  starts(): number
  /** The launcher process running now, if any. */
  current(): ChildProcess | undefined
  /** SIGTERM to the launcher (it forwards it), then SIGKILL to its group. */
  stop(): Promise<void>
  /** SIGKILL to the launcher's whole group, no restart (a quick teardown). */
  kill(): Promise<void>
}

export function supervise(o: SupervisorOptions): Supervisor {
  const exits: Supervisor['exits'] = []
  const lines: string[] = []
  let starts = 0
  let stopping = false
  let child: ChildProcess | undefined
  let restartTimer: NodeJS.Timeout | undefined
  const args = [o.launcher, '--ota-dir', o.otaDir, ...(o.fallback ? ['--fallback', o.fallback] : []), ...(o.graceS !== undefined ? ['--grace-s', String(o.graceS)] : []), '--', ...o.agentArgs]
  const onData = (buf: { rest: string }) => (chunk: Buffer) => {
    buf.rest += chunk.toString()
    let nl
    while ((nl = buf.rest.indexOf('\n')) !== -1) {
      const line = buf.rest.slice(0, nl)
      buf.rest = buf.rest.slice(nl + 1)
      lines.push(line)
      if (lines.length > 20_000) lines.splice(0, 5000)
      o.onLine?.(line)
    }
  }
  const start = () => {
    if (stopping) return
    starts++
    const c = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'], detached: true, env: { ...process.env, ...o.env } })
    child = c
    c.stdout!.on('data', onData({ rest: '' }))
    c.stderr!.on('data', onData({ rest: '' }))
    c.once('exit', (code, signal) => {
      exits.push({ code, signal, at: Date.now() })
      // The agent may outlive a launcher killed with SIGKILL: clear the whole group.
      try {
        process.kill(-c.pid!, 'SIGKILL')
      } catch {
        // already gone
      }
      if (child === c) child = undefined
      if (!stopping) restartTimer = setTimeout(start, o.restartDelayMs ?? 100)
    })
  }
  start()
  return {
    exits,
    lines,
    starts: () => starts,
    current: () => child,
    kill: async () => {
      stopping = true
      clearTimeout(restartTimer)
      const c = child
      if (!c || c.exitCode !== null || c.signalCode !== null) return
      await new Promise<void>(resolve => {
        c.once('exit', () => resolve())
        try {
          process.kill(-c.pid!, 'SIGKILL')
        } catch {
          resolve()
        }
      })
    },
    stop: async () => {
      stopping = true
      clearTimeout(restartTimer)
      const c = child
      if (!c || c.exitCode !== null || c.signalCode !== null) return
      await new Promise<void>(resolve => {
        const t = setTimeout(() => {
          try {
            process.kill(-c.pid!, 'SIGKILL')
          } catch {
            // gone
          }
        }, 10_000)
        c.once('exit', () => {
          clearTimeout(t)
          resolve()
        })
        c.kill('SIGTERM')
      })
    },
  }
}
