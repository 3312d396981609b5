// The agent's one GPIO driver, shared by the status LED, the button and the lines the
// local API lends to clients. Created on first use, so an agent with no LED, no button
// and no GPIO client never probes /sys or runs gpiodetect. Lines are released when the
// agent stops and, as a last resort, when the process exits.

import { createGpio, GpioError, releaseOnExit, systemTimers, type DriverName, type GpioDriver, type GpioTimers } from '../../hw/gpio/index.js'
import type { HwContext } from '../../hw/index.js'
import { CairnError } from '../../protocol/errors.js'
import type { Logger } from '../../protocol/log.js'

export interface GpioHostOptions {
  hw: Omit<HwContext, 'diskPaths'>
  driver: 'auto' | DriverName
  log: Logger
  /** Pins the agent drives itself; the local API refuses them with PIN_BUSY. */
  reserved: ReadonlyMap<number, string>
  timers?: GpioTimers
}

export class GpioHost {
  readonly timers: GpioTimers
  private driverP: Promise<GpioDriver> | undefined
  private unhookExit: (() => void) | undefined
  private closed = false

  constructor(private readonly o: GpioHostOptions) {
    this.timers = o.timers ?? systemTimers()
  }

  /** Why a pin cannot be lent, or undefined. */
  reservedFor(pin: number): string | undefined {
    return this.o.reserved.get(pin)
  }

  driver(): Promise<GpioDriver> {
    if (this.closed) return Promise.reject(new CairnError('UNAVAILABLE', 'the agent is stopping'))
    this.driverP ??= createGpio(this.o.hw as HwContext, {
      timers: this.timers,
      log: this.o.log,
      ...(this.o.driver === 'auto' ? {} : { driver: this.o.driver }),
    }).then(sel => {
      this.unhookExit = releaseOnExit(sel.driver)
      return sel.driver
    })
    return this.driverP
  }

  /** The driver's name once created (status output), else undefined. */
  async driverName(): Promise<string | undefined> {
    return this.driverP ? (await this.driverP).name : undefined
  }

  async close(): Promise<void> {
    this.closed = true
    const p = this.driverP
    if (!p) return
    const d = await p
    await d.close()
    this.unhookExit?.()
  }
}

/** A GpioError as a CairnError with a code a client can branch on. */
export function gpioCairnError(err: unknown, pin: number): CairnError {
  if (err instanceof CairnError) return err
  if (err instanceof GpioError) {
    if (err.code === 'busy') return new CairnError('PIN_BUSY', err.message)
    if (err.code === 'no-such-pin') return new CairnError('BAD_REQUEST', err.message)
    return new CairnError('GPIO', err.message)
  }
  return new CairnError('GPIO', `BCM ${pin}: ${(err as Error).message}`)
}
