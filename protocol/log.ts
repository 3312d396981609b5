// Structured JSON logs to a stream (stdout on the device, so journald keeps them),
// one child logger per component, and a bounded ring of recent lines for the
// `logs` command.

import { pino, type Logger, type Level } from 'pino'

export type { Logger }

export class LogRing {
  private readonly lines: string[] = []
  constructor(private readonly capacity: number) {}
  push(line: string): void {
    this.lines.push(line)
    if (this.lines.length > this.capacity) this.lines.splice(0, this.lines.length - this.capacity)
  }
  last(n: number): string[] {
    return n <= 0 ? [] : this.lines.slice(-n)
  }
}

export interface LogOptions {
  level: Level
  out?: { write(chunk: string): unknown }
  ring?: LogRing
}

export function createLogger(opts: LogOptions): Logger {
  const out = opts.out ?? process.stdout
  const ring = opts.ring
  const dest = {
    write(chunk: string) {
      out.write(chunk)
      ring?.push(chunk.endsWith('\n') ? chunk.slice(0, -1) : chunk)
    },
  }
  return pino({ level: opts.level, base: null, timestamp: pino.stdTimeFunctions.isoTime }, dest)
}
