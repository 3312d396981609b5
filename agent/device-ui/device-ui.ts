// What a headless owner sees and touches: the status LED showing the agent's state and
// the button (config `gpio`), plus the shared GPIO driver the local API lends lines
// from. Hardware that cannot be opened is logged and left out; it never stops the agent.
// What is held (the LED, the lines) goes out with each telemetry sample: io().

import { join } from 'node:path'
import type { Config } from '../config/config-schema.js'
import type { Logger } from '../../protocol/log.js'
import type { TelemetryMessage } from '../../protocol/messages.js'
import type { LocalBus } from '../core/local-bus.js'
import type { HwContext } from '../../hw/index.js'
import type { DriverName, GpioTimers } from '../../hw/gpio/index.js'
import { PROVISION_ERROR_FILE } from '../../protocol/state-files.js'
import { AgentState, hasNetwork, provisionErrorCheck, type AgentStateSnapshot } from './agent-state.js'
import { AgentButton } from './button-actions.js'
import { GpioHost } from './gpio-host.js'
import { StatusLight, type LedInfo } from './status-light.js'

export { AgentState, GpioHost, StatusLight, hasNetwork }
export type { LedInfo }

export interface DeviceUiOptions {
  config: Readonly<Config>
  hw: Omit<HwContext, 'diskPaths'>
  bus: LocalBus
  log: Logger
  connected(): boolean
  publishEvent(kind: string, data: Record<string, unknown>): void
  settle(ms: number): Promise<unknown>
  /** Test seams. */
  network?: () => boolean
  timers?: GpioTimers
}

export class DeviceUi {
  readonly gpio: GpioHost
  readonly state: AgentState
  /** Undefined when no LED is configured or it could not be opened. */
  light: StatusLight | undefined
  private button: AgentButton | undefined

  constructor(private readonly o: DeviceUiOptions) {
    const g = o.config.gpio
    const reserved = new Map<number, string>()
    if (g.statusLed) reserved.set(g.statusLed.pin, 'the status LED')
    if (g.button) reserved.set(g.button.pin, 'the button')
    this.gpio = new GpioHost({ hw: o.hw, driver: g.driver as 'auto' | DriverName, log: o.log, reserved, ...(o.timers ? { timers: o.timers } : {}) })
    const brokerUrl = o.config.broker.url
    this.state = new AgentState({
      bus: o.bus,
      connected: o.connected,
      network: o.network ?? (() => hasNetwork(brokerUrl)),
      provisioningError: provisionErrorCheck(join(o.config.stateDir, PROVISION_ERROR_FILE)),
    })
  }

  async start(): Promise<void> {
    const { gpio, system } = this.o.config
    const log = this.o.log
    this.state.start()
    if (gpio.statusLed) {
      const light = new StatusLight({ host: this.gpio, pin: gpio.statusLed.pin, activeLow: gpio.statusLed.activeLow, log, initial: this.state.snapshot.state })
      // Listening before the line is open: a change while start() waits for the driver
      // is not lost (the poll emits only on change, so a missed one would stick).
      const follow = (s: AgentStateSnapshot) => void light.showAgent(s.state)
      this.state.on('change', follow)
      try {
        await light.start()
        this.light = light
        log.info({ pin: gpio.statusLed.pin }, 'status LED on')
      } catch (err) {
        this.state.off('change', follow)
        log.error({ err, pin: gpio.statusLed.pin }, 'status LED not started')
      }
    }
    if (gpio.button) {
      const b = gpio.button
      const button = new AgentButton({ host: this.gpio, ...b, reprovisionCommand: system.reprovisionCommand, publishEvent: this.o.publishEvent, settle: this.o.settle, log })
      try {
        await button.start()
        this.button = button
        log.info({ pin: b.pin }, 'button watched')
      } catch (err) {
        log.error({ err, pin: b.pin }, 'button not started')
      }
    }
  }

  async ledInfo(): Promise<LedInfo | undefined> {
    return this.light?.info()
  }

  /** The status LED and the lines held open, for telemetry's `io`; undefined when the
   * agent holds no line and shows no LED. From memory: nothing is read from the pins. */
  io(): TelemetryMessage['io'] {
    const led = this.light?.info()
    const lines = this.gpio.lines()
    if (led?.pin === undefined && lines.length === 0) return undefined
    return { ...(led?.pin !== undefined ? { led: { pin: led.pin, shown: led.shown, source: led.source } } : {}), lines }
  }

  async stop(): Promise<void> {
    this.state.stop()
    await this.button?.stop().catch(() => undefined)
    await this.light?.stop().catch(() => undefined)
    await this.gpio.close().catch(err => this.o.log.warn({ err }, 'releasing GPIO failed'))
  }
}
