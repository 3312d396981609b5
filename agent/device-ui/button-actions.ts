// The button inside the agent: hw/gpio/button.ts tells the gestures apart; this gives
// each its meaning (BUTTON_ACTIONS), publishes it as an MQTT event (kind `button.<action>`)
// and, on a confirmed long press, runs `system.reprovisionCommand` once the event has
// had its chance to reach the broker. Re-provisioning wipes the device's enrolment, so
// one long press alone never does it: it takes a second one inside the window.

import { spawn } from 'node:child_process'
import { watchButton, type ButtonGesture, type GpioLine } from '../../hw/gpio/index.js'
import type { Logger } from '../../protocol/log.js'
import { gpioCairnError, type GpioHost } from './gpio-host.js'

export interface ButtonOptions {
  host: GpioHost
  pin: number
  activeLow: boolean
  debounceMs: number
  longPressMs: number
  confirmWindowMs: number
  reprovisionCommand: readonly string[]
  publishEvent(kind: string, data: Record<string, unknown>): void
  /** Waits (bounded) until queued messages reached the broker. */
  settle(ms: number): Promise<unknown>
  log: Logger
}

export type ButtonAction = 'press' | 'long-press' | 'reprovision' | 'cancel'

/** What each gesture means to the agent. */
export const BUTTON_ACTIONS: Readonly<Record<ButtonGesture, ButtonAction>> = {
  press: 'press',
  'long-press': 'long-press',
  'confirmed-long-press': 'reprovision',
  cancel: 'cancel',
}

/** How long stop() waits for a running re-provision command before leaving it be. */
const STOP_WAIT_MS = 2000

export class AgentButton {
  private line: GpioLine | undefined
  private watcher: { stop(): void } | undefined
  private running: Promise<void> | undefined

  constructor(private readonly o: ButtonOptions) {}

  async start(): Promise<void> {
    try {
      this.line = await this.o.host.open('button', this.o.pin, { direction: 'in', edge: 'both', activeLow: this.o.activeLow, debounceMs: this.o.debounceMs })
    } catch (err) {
      throw gpioCairnError(err, this.o.pin)
    }
    try {
      this.watcher = await watchButton(this.line, {
        timers: this.o.host.timers,
        timing: { longPressMs: this.o.longPressMs, confirmWindowMs: this.o.confirmWindowMs },
        onGesture: gesture => this.act(BUTTON_ACTIONS[gesture]),
      })
    } catch (err) {
      await this.line.close().catch(() => undefined)
      this.line = undefined
      throw gpioCairnError(err, this.o.pin)
    }
  }

  async stop(): Promise<void> {
    this.watcher?.stop()
    await this.line?.close()
    // A re-provision command may wait on the very shutdown that is stopping us (a unit
    // that reboots, `systemctl start` waiting for it): never block stop() on it.
    const running = this.running
    if (running) {
      let timer: NodeJS.Timeout | undefined
      await Promise.race([running, new Promise<void>(r => (timer = setTimeout(r, STOP_WAIT_MS)))])
      clearTimeout(timer)
    }
  }

  private act(action: ButtonAction): void {
    // Called from a GPIO edge timer: a throw (the outbox refusing a write) would be uncaught.
    try {
      this.actNow(action)
    } catch (err) {
      this.o.log.error({ err, action }, 'button action failed')
    }
  }

  private actNow(action: ButtonAction): void {
    const pin = this.o.pin
    this.o.log.info({ action, pin }, 'button')
    if (action === 'press') this.o.publishEvent('button.press', { pin })
    else if (action === 'long-press') this.o.publishEvent('button.long-press', { pin, confirmWindowMs: this.o.confirmWindowMs })
    else if (action === 'cancel') this.o.publishEvent('button.cancel', { pin })
    else if (!this.running) {
      this.o.publishEvent('button.reprovision', { pin, command: [...this.o.reprovisionCommand] })
      this.running = this.reprovision().finally(() => (this.running = undefined))
    }
  }

  private async reprovision(): Promise<void> {
    await this.o.settle(3000).catch(() => undefined)
    const [cmd, ...args] = this.o.reprovisionCommand
    try {
      await new Promise<void>((resolve, reject) => {
        const child = spawn(cmd!, args, { stdio: 'ignore' })
        child.on('error', reject)
        child.on('exit', (code, signal) => (code === 0 ? resolve() : reject(new Error(`${this.o.reprovisionCommand.join(' ')} ${signal ? `was killed by ${signal}` : `exited with ${code}`}`))))
      })
      this.o.log.warn({ command: this.o.reprovisionCommand }, 're-provisioning started by the button')
    } catch (err) {
      this.o.log.error({ err }, 're-provisioning command failed')
      try {
        this.o.publishEvent('system.reprovision-failed', { message: (err as Error).message })
      } catch {
        // logged above; the outbox refusing must not reject this promise
      }
    }
  }
}
