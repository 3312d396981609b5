// Runs the few board tools telemetry needs (vcgencmd, nvidia-smi, uname) behind
// an interface, so tests replay captured output instead of spawning anything.
import { execFile } from 'node:child_process'

export interface CommandResult {
  code: number
  stdout: string
}

export interface CommandRunner {
  /** Resolves null when the command is missing, cannot start, or times out. Never rejects. */
  run(cmd: string, args: readonly string[]): Promise<CommandResult | null>
}

export interface CommandRunnerOptions {
  timeoutMs?: number
  env?: NodeJS.ProcessEnv
}

const DEFAULT_TIMEOUT_MS = 2000
// Board tools print a few lines; anything larger is not the output we parse.
const MAX_OUTPUT_BYTES = 1024 * 1024

export function createCommandRunner(opts: CommandRunnerOptions = {}): CommandRunner {
  const timeout = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS
  // The C locale keeps decimal points and messages in the format the parsers expect.
  const env = opts.env ?? { ...process.env, LC_ALL: 'C' }
  return {
    run(cmd, args) {
      return new Promise(resolve => {
        try {
          execFile(cmd, [...args], { timeout, env, maxBuffer: MAX_OUTPUT_BYTES, killSignal: 'SIGKILL', encoding: 'utf8', windowsHide: true }, (err, stdout) => {
            if (err === null) {
              resolve({ code: 0, stdout })
              return
            }
            // A numeric code is a real exit status (vcgencmd exits non-zero when
            // /dev/vcio is missing); a string code (ENOENT, EACCES, maxBuffer) or a
            // kill by our own timeout means there is no trustworthy output at all.
            if (typeof err.code === 'number' && err.killed !== true) {
              resolve({ code: err.code, stdout })
              return
            }
            resolve(null)
          })
        } catch {
          resolve(null)
        }
      })
    },
  }
}

/** Replays captured stdout keyed by the full command line, e.g. "vcgencmd get_throttled". */
export function createFixtureRunner(outputs: Record<string, string>): CommandRunner {
  const table = new Map(Object.entries(outputs))
  return {
    run(cmd, args) {
      const stdout = table.get([cmd, ...args].join(' '))
      return Promise.resolve(stdout === undefined ? null : { code: 0, stdout })
    },
  }
}
