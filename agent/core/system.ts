// What the agent asks of the operating system, behind a port that tests replace.

import { spawn } from 'node:child_process'

export interface SystemPort {
  reboot(): Promise<void>
}

export function createSystemPort(rebootCommand: readonly string[]): SystemPort {
  return {
    reboot: () =>
      new Promise((resolve, reject) => {
        const [cmd, ...args] = rebootCommand
        const child = spawn(cmd!, args, { stdio: 'ignore' })
        child.on('error', reject)
        child.on('exit', code => (code === 0 ? resolve() : reject(new Error(`${rebootCommand.join(' ')} exited with ${code}`))))
      }),
  }
}
