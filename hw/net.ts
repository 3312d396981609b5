// Per-interface traffic from /proc/net/dev, with rates from the previous reading.
// Loopback is left out: it is local chatter, not the node's network.
import { readText, round, type HwContext } from './context.js'

export interface NetCounters {
  rxBytes: number
  txBytes: number
}

export interface NetSample extends NetCounters {
  iface: string
  rxBytesPerS?: number
  txBytesPerS?: number
}

export function parseNetDev(text: string): Map<string, NetCounters> {
  const out = new Map<string, NetCounters>()
  for (const line of text.split('\n')) {
    // Old kernels print "eth0:123" with no space after the colon.
    const colon = line.indexOf(':')
    if (colon < 0) continue
    const iface = line.slice(0, colon).trim()
    if (!/^[A-Za-z0-9_.@-]{1,32}$/.test(iface) || iface === 'lo') continue
    const fields = line
      .slice(colon + 1)
      .trim()
      .split(/\s+/)
    if (fields.length !== 16 || !fields.every(f => /^\d{1,20}$/.test(f))) continue
    out.set(iface, { rxBytes: Number(fields[0]), txBytes: Number(fields[8]) })
  }
  return out
}

export async function readNetDev(ctx: HwContext): Promise<Map<string, NetCounters> | undefined> {
  const text = await readText(ctx, '/proc/net/dev')
  if (text === undefined) return undefined
  const counters = parseNetDev(text)
  return counters.size > 0 ? counters : undefined
}

export function buildNetSample(prev: { at: number; counters: Map<string, NetCounters> } | undefined, cur: { at: number; counters: Map<string, NetCounters> }): NetSample[] {
  const seconds = prev === undefined ? 0 : (cur.at - prev.at) / 1000
  const out: NetSample[] = []
  for (const [iface, c] of cur.counters) {
    const s: NetSample = { iface, rxBytes: c.rxBytes, txBytes: c.txBytes }
    const before = prev?.counters.get(iface)
    // A counter that went down was reset (interface re-created, 32-bit wrap): no rate this time.
    if (before !== undefined && seconds > 0) {
      if (c.rxBytes >= before.rxBytes) s.rxBytesPerS = round((c.rxBytes - before.rxBytes) / seconds, 1)
      if (c.txBytes >= before.txBytes) s.txBytesPerS = round((c.txBytes - before.txBytes) / seconds, 1)
    }
    out.push(s)
  }
  return out
}
