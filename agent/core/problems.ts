// What the device reports as wrong with itself while it keeps running (a remote
// configuration set aside, a full disk): one entry per code, in the retained status
// (`problems`) until cleared. Changes republish the status.

import type { StatusMessage } from '../../protocol/messages.js'

export type Problem = NonNullable<StatusMessage['problems']>[number]

export class Problems {
  private readonly byCode = new Map<string, Problem>()
  private listener: (() => void) | undefined

  /** Called after each change (the agent republishes its status). */
  onChange(listener: () => void): void {
    this.listener = listener
  }

  set(code: string, message: string, now: number): void {
    const cur = this.byCode.get(code)
    if (cur?.message === message) return
    this.byCode.set(code, { code, message: message.slice(0, 1000), since: cur?.since ?? now })
    this.listener?.()
  }

  clear(code: string): void {
    if (this.byCode.delete(code)) this.listener?.()
  }

  list(): Problem[] {
    return [...this.byCode.values()]
  }
}
