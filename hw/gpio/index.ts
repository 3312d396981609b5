// Picks the GPIO driver at run time: sysfs when the header chip is there and
// exportable, else the libgpiod tools when they and /dev/gpiochip* exist, else
// the in-memory fake, with the reason logged. Nothing touches the system until
// createGpio() is called.
import type { HwContext } from '../context.js'
import { createFakeGpio } from './fake.js'
import { createGpiodDriver, probeGpiod, type GpiodOptions } from './gpiod.js'
import { createSysfsDriver, probeSysfs, type SysfsOptions } from './sysfs.js'
import { silentLog, type DriverName, type GpioDriver, type GpioLog, type GpioTimers } from './types.js'

export * from './types.js'
export { chipForBcm, headerChip, sysfsChips, HEADER_CHIP_LABELS } from './chips.js'
export type { ChipLine, GpioChip } from './chips.js'
export { EdgeFilter } from './edge-filter.js'
export { createFakeGpio } from './fake.js'
export type { FakeGpio, FakeGpioOptions } from './fake.js'
export { createGpiodDriver, gpiodCommands, probeGpiod } from './gpiod.js'
export type { GpiodOptions, GpiodSetup } from './gpiod.js'
export { parseGpiodetect, parseGpiodVersion, parseGpioget, parseGpioinfo, parseGpiomonEvent } from './gpiod-parse.js'
export { createSysfsDriver, nodeSysfsFiles, probeSysfs } from './sysfs.js'
export type { SysfsFiles, SysfsOptions } from './sysfs.js'
export { createProcessSpawner } from './spawn.js'
export type { ProcessSpawner, ToolProcess } from './spawn.js'
export { ManualTimers, systemTimers } from './timers.js'
export { describeSteps, ledFrames, LedPlayer } from './led-player.js'
export type { LedFrame, LedPlayerOptions, LedStep } from './led-player.js'
export { ButtonMachine, DEFAULT_BUTTON_TIMING, watchButton } from './button.js'
export type { ButtonGesture, ButtonState, ButtonTiming, ButtonWatchOptions } from './button.js'

export interface CreateGpioOptions {
  /** Skip detection (config `gpio.driver`); 'fake' always succeeds. */
  driver?: DriverName
  timers?: GpioTimers
  log?: GpioLog
  sysfs?: Omit<SysfsOptions, 'timers' | 'log'>
  gpiod?: Omit<GpiodOptions, 'timers' | 'log'>
}

export interface GpioSelection {
  driver: GpioDriver
  /** Why each better driver was passed over (empty when the first choice worked). */
  reasons: string[]
}

export async function createGpio(ctx: HwContext, opts: CreateGpioOptions = {}): Promise<GpioSelection> {
  const log = opts.log ?? silentLog
  const common = { log, ...(opts.timers === undefined ? {} : { timers: opts.timers }) }
  const reasons: string[] = []
  const want = opts.driver

  if (want === undefined || want === 'sysfs') {
    const probe = await probeSysfs(ctx)
    if ('chip' in probe) {
      log.info({ driver: 'sysfs', chip: probe.chip }, 'gpio driver selected')
      return { driver: createSysfsDriver(ctx, probe.chip, { ...opts.sysfs, ...common }), reasons }
    }
    reasons.push(`sysfs: ${probe.reason}`)
  }
  if (want === undefined || want === 'gpiod') {
    const probe = await probeGpiod(ctx)
    if ('chip' in probe) {
      log.info({ driver: 'gpiod', libgpiod: probe.version, chip: probe.chip, passedOver: reasons }, 'gpio driver selected')
      return { driver: createGpiodDriver(ctx, probe, { ...opts.gpiod, ...common }), reasons }
    }
    reasons.push(`gpiod: ${probe.reason}`)
  }
  if (want === 'fake') log.info({ driver: 'fake' }, 'gpio driver selected (configured)')
  else if (want === undefined) log.warn({ driver: 'fake', reasons }, 'no usable GPIO; using the in-memory fake')
  else log.warn({ driver: 'fake', wanted: want, reasons }, 'configured gpio driver unusable; using the in-memory fake')
  return { driver: createFakeGpio(opts.timers === undefined ? {} : { timers: opts.timers }), reasons }
}

/**
 * Releases every line when the process exits (unexport, or end the gpioset and
 * gpiomon children), including exits through process.exit(). Returns the remover.
 * Call it from the one place that wires the program, not at import time.
 */
export function releaseOnExit(driver: GpioDriver, proc: Pick<NodeJS.Process, 'on' | 'off'> = process): () => void {
  const handler = () => driver.releaseSync()
  proc.on('exit', handler)
  return () => {
    proc.off('exit', handler)
  }
}
