// What each local API op does, given a validated request. The agent's parts reach the
// ops through `LocalApiHost`, built in agent/agent.ts, so this file (and its tests)
// never touch the MQTT link, the outbox or the task queue directly.

import type { GpioDriver, GpioLine } from '../../hw/gpio/index.js'
import type { Json } from '../../protocol/canonical.js'
import { CairnError } from '../../protocol/errors.js'
import type { LocalBus } from '../core/local-bus.js'
import type { AgentState } from '../device-ui/agent-state.js'
import { gpioCairnError, type GpioHost } from '../device-ui/gpio-host.js'
import type { LedInfo } from '../device-ui/status-light.js'
import type { Op, OpArgs, OpResult, Topic } from './protocol.js'

export interface LocalApiHost {
  hello: { device: string; fleet: string; version: string }
  /** The status result less `device`, `fleet`, `version`, `state` and `led`, which the API adds. */
  status(): Promise<Omit<OpResult<'status'>, 'device' | 'fleet' | 'version' | 'state' | 'led'>>
  bus: LocalBus
  state: AgentState
  gpio: GpioHost
  /** The status LED, when one is configured and open. */
  led(): { set(pattern: OpArgs<'led.set'>['pattern']): Promise<LedInfo>; info(): LedInfo } | undefined
  selfTest(): Promise<{ ok: boolean; failures: string[] }>
  /** The task queue's local runner (RunningAgent.tasks.runLocal), when the agent has one. */
  runLocal?: ((type: 'inference', params: Record<string, unknown>, opts?: { timeoutMs?: number }) => Promise<{ taskId: string; result: Json; receipt: unknown }>) | undefined
}

/** A line a client opened; released when it closes it or disconnects. */
export interface LentLine {
  line: GpioLine
  mode: 'in' | 'out'
  unwatch?: () => void
}

/** The per-client state the ops read and change. */
export interface OpSession {
  topics: Set<Topic>
  kinds: string[] | undefined
  lines: Map<number, LentLine>
  /** Sends a gpio event to every client subscribed to 'gpio'. */
  gpioEvent(pin: number, value: 0 | 1, edge: 'rising' | 'falling'): void
}

export async function runOp<O extends Op>(op: O, args: OpArgs<O>, s: OpSession, host: LocalApiHost): Promise<unknown> {
  switch (op) {
    case 'subscribe':
    case 'unsubscribe': {
      const a = args as OpArgs<'subscribe'>
      for (const t of a.topics) {
        if (op === 'subscribe') s.topics.add(t)
        else s.topics.delete(t)
      }
      if (op === 'subscribe' && a.kinds) s.kinds = a.kinds
      if (!s.topics.has('event')) s.kinds = undefined
      return { topics: [...s.topics], ...(s.kinds ? { kinds: s.kinds } : {}) }
    }
    case 'status': {
      const led = host.led()?.info()
      return { ...host.hello, ...(await host.status()), state: host.state.snapshot.state, ...(led ? { led } : {}) }
    }
    case 'infer': {
      if (!host.runLocal) throw new CairnError('UNSUPPORTED', 'this agent runs no task queue, so it cannot run inference (tasks off, or a build without it)')
      const a = args as OpArgs<'infer'>
      // The inference executor names a model package as { sha256 } (agent/infer/params.ts).
      const model = a.model === undefined || a.model === 'demo' ? 'demo' : { sha256: a.model }
      return host.runLocal('inference', { ...a, model })
    }
    case 'led.set': {
      const led = host.led()
      if (!led) throw new CairnError('UNSUPPORTED', 'no status LED is configured on this device (gpio.statusLed)')
      return led.set((args as OpArgs<'led.set'>).pattern)
    }
    case 'self-test':
      return host.selfTest()
    case 'gpio.open':
      return gpioOpen(args as OpArgs<'gpio.open'>, s, host.gpio)
    case 'gpio.read': {
      const { pin } = args as OpArgs<'gpio.read'>
      const lent = lentLine(s, pin)
      return { pin, value: await guard(pin, () => lent.line.read()) }
    }
    case 'gpio.write': {
      const { pin, value } = args as OpArgs<'gpio.write'>
      const lent = lentLine(s, pin)
      if (lent.mode !== 'out') throw new CairnError('GPIO', `BCM ${pin} is open as an input; open it with mode 'out' to write`)
      await guard(pin, () => lent.line.write(value))
      return { pin, value }
    }
    case 'gpio.close': {
      const { pin } = args as OpArgs<'gpio.close'>
      const lent = lentLine(s, pin)
      s.lines.delete(pin)
      lent.unwatch?.()
      await guard(pin, () => lent.line.close())
      return { pin }
    }
  }
  throw new CairnError('UNKNOWN_OP', `unknown op ${String(op)}`)
}

async function gpioOpen(a: OpArgs<'gpio.open'>, s: OpSession, gpio: GpioHost): Promise<OpResult<'gpio.open'>> {
  const own = gpio.reservedFor(a.pin)
  if (own) throw new CairnError('PIN_BUSY', `BCM ${a.pin} is ${own}, driven by the agent itself`)
  if (s.lines.has(a.pin)) throw new CairnError('PIN_BUSY', `BCM ${a.pin} is already open on this connection`)
  let driver: GpioDriver
  try {
    driver = await gpio.driver()
  } catch (err) {
    throw gpioCairnError(err, a.pin)
  }
  const line = await guard(a.pin, () =>
    gpio.open('local-api', a.pin, {
      direction: a.mode,
      ...(a.edge !== undefined ? { edge: a.edge } : {}),
      ...(a.debounceMs !== undefined ? { debounceMs: a.debounceMs } : {}),
      ...(a.activeLow !== undefined ? { activeLow: a.activeLow } : {}),
      ...(a.initial !== undefined ? { initial: a.initial } : {}),
    }),
  )
  const lent: LentLine = { line, mode: a.mode }
  try {
    if (a.mode === 'in') lent.unwatch = line.watch(ev => s.gpioEvent(a.pin, ev.value, ev.edge))
    s.lines.set(a.pin, lent)
    const value = await guard(a.pin, () => line.read())
    return { pin: a.pin, mode: a.mode, value, driver: driver.name }
  } catch (err) {
    // The client is told the open failed, so it must not keep the line (or the pin stays
    // busy until it disconnects, and a retry says "already open").
    if (s.lines.get(a.pin) === lent) s.lines.delete(a.pin)
    lent.unwatch?.()
    await line.close().catch(() => undefined)
    throw gpioCairnError(err, a.pin)
  }
}

function lentLine(s: OpSession, pin: number): LentLine {
  const lent = s.lines.get(pin)
  if (!lent) throw new CairnError('BAD_REQUEST', `BCM ${pin} is not open on this connection (gpio.open it first)`)
  return lent
}

async function guard<T>(pin: number, f: () => Promise<T>): Promise<T> {
  try {
    return await f()
  } catch (err) {
    throw gpioCairnError(err, pin)
  }
}

/** Releases every line a client held (on disconnect). */
export async function releaseLines(s: OpSession): Promise<void> {
  const lines = [...s.lines.values()]
  s.lines.clear()
  for (const l of lines) {
    l.unwatch?.()
    await l.line.close().catch(() => undefined)
  }
}
