// The status LED inside the agent: shows the agent's state (agent-state.ts) with the
// blink patterns of led-patterns.ts, played by hw/gpio's LedPlayer, unless a local API client has set a pattern
// with `led.set`, which holds until the client sets 'auto'. Writes are serialised so a
// burst of state changes and overrides cannot interleave on the line.

import { LedPlayer, type GpioLine } from '../../hw/gpio/index.js'
import { CairnError } from '../../protocol/errors.js'
import type { Logger } from '../../protocol/log.js'
import type { LedSetPattern } from '../local-api/protocol.js'
import { gpioCairnError, type GpioHost } from './gpio-host.js'
import { LED_PATTERNS, type LedState } from './led-patterns.js'

/** What the LED shows: an agent state's pattern, or a steady level a client set. Each is
 * a lowercase word or words joined by '-' (telemetry's io.led.shown pattern). */
export type LedShown = LedState | 'on' | 'off'

export interface LedInfo {
  pin?: number
  shown: LedShown
  source: 'agent' | 'api'
  driver?: string
}

/** What each led.set pattern plays: a state's pattern, or a steady level. */
const OVERRIDES: Record<Exclude<LedSetPattern, 'auto'>, LedShown> = {
  on: 'on',
  off: 'off',
  online: 'online',
  offline: 'broker-unreachable',
  error: 'provisioning-error',
  updating: 'updating',
  blink: 'no-network',
}

export class StatusLight {
  private line: GpioLine | undefined
  private led: LedPlayer | undefined
  private agentState: LedState
  private override: Exclude<LedSetPattern, 'auto'> | undefined
  private shown: LedShown = 'off'
  private chain: Promise<void> = Promise.resolve()
  private driverName: string | undefined
  private stopped = false

  constructor(private readonly o: { host: GpioHost; pin: number; activeLow: boolean; log: Logger; initial: LedState }) {
    this.agentState = o.initial
  }

  async start(): Promise<void> {
    const driver = await this.o.host.driver()
    this.driverName = driver.name
    try {
      // Opened active-high: LedPlayer's frames carry the inversion for active-low wiring.
      this.line = await this.o.host.open('led', this.o.pin, { direction: 'out', initial: this.o.activeLow ? 1 : 0 })
    } catch (err) {
      throw gpioCairnError(err, this.o.pin)
    }
    await this.apply()
  }

  /** The agent's state changed. */
  showAgent(state: LedState): Promise<void> {
    this.agentState = state
    return this.apply()
  }

  /** A local API client's led.set. */
  async set(pattern: LedSetPattern): Promise<LedInfo> {
    if (!this.line) throw new CairnError('GPIO', `the status LED on BCM ${this.o.pin} could not be opened (see the agent log)`)
    this.override = pattern === 'auto' ? undefined : pattern
    await this.apply()
    return this.info()
  }

  info(): LedInfo {
    return { pin: this.o.pin, shown: this.shown, source: this.override ? 'api' : 'agent', ...(this.driverName ? { driver: this.driverName } : {}) }
  }

  /** Leaves the LED dark and stops the loop; the line is released with the driver. */
  stop(): Promise<void> {
    this.stopped = true
    return this.enqueue(async () => {
      await this.led?.stop()
      this.led = undefined
      await this.write(this.o.activeLow ? 1 : 0)
      await this.line?.close()
    })
  }

  private apply(): Promise<void> {
    return this.enqueue(async () => {
      const line = this.line
      if (!line || this.stopped) return
      const want = this.override ? OVERRIDES[this.override] : this.agentState
      if (want === this.shown && (this.led !== undefined) === (want !== 'on' && want !== 'off')) return
      if (want === 'on' || want === 'off') {
        await this.led?.stop()
        this.led = undefined
        await this.write((want === 'on') !== this.o.activeLow ? 1 : 0)
      } else {
        this.led ??= new LedPlayer(line, { timers: this.o.host.timers, activeLow: this.o.activeLow, log: this.o.log })
        this.led.play(LED_PATTERNS[want].steps)
      }
      this.shown = want
    })
  }

  private async write(level: 0 | 1): Promise<void> {
    try {
      await this.line?.write(level)
    } catch (err) {
      this.o.log.warn({ err, pin: this.o.pin }, 'status LED write failed')
    }
  }

  private enqueue(step: () => Promise<void>): Promise<void> {
    const next = this.chain.then(step).catch(err => this.o.log.warn({ err }, 'status LED update failed'))
    this.chain = next
    return next
  }
}
