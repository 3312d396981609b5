// Long-running tool processes (gpioset holding a line, gpiomon streaming edges)
// behind an interface, so the gpiod driver's tests replay tool behaviour instead
// of needing a GPIO chip. One-shot tools still go through hw/command-runner.ts.
import { spawn } from 'node:child_process'
import { createInterface } from 'node:readline'

export interface ToolProcess {
  readonly command: string
  onLine(cb: (line: string) => void): void
  /** Called once; code is null when the process was killed or never started. */
  onExit(cb: (code: number | null, stderr: string) => void): void
  readonly running: boolean
  /** SIGTERM: gpioset and gpiomon release their lines and exit on it. */
  kill(): void
}

export interface ProcessSpawner {
  spawn(cmd: string, args: readonly string[]): ToolProcess
}

const STDERR_KEEP = 2048

export function createProcessSpawner(env: NodeJS.ProcessEnv = { ...process.env, LC_ALL: 'C' }): ProcessSpawner {
  return {
    spawn(cmd, args) {
      const lineCbs: Array<(line: string) => void> = []
      const exitCbs: Array<(code: number | null, stderr: string) => void> = []
      let exited: { code: number | null } | undefined
      let stderr = ''
      const child = spawn(cmd, [...args], { stdio: ['ignore', 'pipe', 'pipe'], env, windowsHide: true })
      const finish = (code: number | null): void => {
        if (exited !== undefined) return
        exited = { code }
        for (const cb of exitCbs) cb(code, stderr)
      }
      child.on('error', () => finish(null))
      // 'close' (not 'exit') so every stdout line has been delivered first.
      child.on('close', code => finish(typeof code === 'number' ? code : null))
      child.stderr.setEncoding('utf8')
      child.stderr.on('data', (chunk: string) => {
        stderr = (stderr + chunk).slice(-STDERR_KEEP)
      })
      createInterface({ input: child.stdout }).on('line', line => {
        for (const cb of lineCbs) cb(line)
      })
      return {
        command: [cmd, ...args].join(' '),
        onLine(cb) {
          lineCbs.push(cb)
        },
        onExit(cb) {
          if (exited !== undefined) cb(exited.code, stderr)
          else exitCbs.push(cb)
        },
        get running() {
          return exited === undefined
        },
        kill() {
          if (exited === undefined) child.kill('SIGTERM')
        },
      }
    },
  }
}

/** Resolves when the process has exited (immediately if it already has). */
export function whenExited(proc: ToolProcess): Promise<number | null> {
  return new Promise(resolve => proc.onExit(code => resolve(code)))
}
