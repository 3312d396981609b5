// A stand-in for the Raspberry Pi bootloader's A/B logic (autoboot.txt, tryboot_a_b=1),
// over real files: qemu has no Pi firmware, so the OS update tests boot through this.

import { existsSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { randomUUID } from 'node:crypto'
import { parseAutoboot, type Slot } from '../../image-build/os-update/autoboot.js'

/** What the Pi bootloader does with autoboot.txt (tryboot_a_b=1): boot [all]'s partition,
 * or once [tryboot]'s after `reboot '0 tryboot'`; the flag is gone after that one boot,
 * whatever happens in it. A slot without a readable cmdline.txt does not boot, and the
 * next reset boots [all] again. */
export class FirmwareStandIn {
  private tryboot = false
  private readonly cmdlineOf: (slot: Slot) => string | undefined
  /** `boot`: each slot's boot files as a directory, or a reader of its cmdline.txt (a
   * FAT image read with mtools). */
  constructor(
    private readonly config: string,
    boot: Readonly<Record<Slot, string>> | ((slot: Slot) => string | undefined),
  ) {
    this.cmdlineOf =
      typeof boot === 'function'
        ? boot
        : slot => {
            const f = join(boot[slot], 'cmdline.txt')
            return existsSync(f) ? readFileSync(f, 'utf8') : undefined
          }
  }

  setTryboot(): void {
    this.tryboot = true
  }

  /** Powers on (or resets): the slot whose root runs, and a fresh boot id. */
  boot(): { slot: Slot; bootId: string; trial: boolean } {
    const ab = parseAutoboot(readFileSync(join(this.config, 'autoboot.txt'), 'utf8'))
    const trial = this.tryboot
    this.tryboot = false
    const slot = trial ? ab.trial : ab.committed
    const root = this.rootOf(slot)
    if (root === undefined) {
      if (!trial) throw new Error(`slot ${slot} does not boot and it is the committed one: bricked`)
      return this.boot() // the failed trial resets; the flag is gone
    }
    return { slot: root, bootId: randomUUID(), trial }
  }

  private rootOf(slot: Slot): Slot | undefined {
    const m = /root=LABEL=cairn-root([AB])(\s|$)/.exec(this.cmdlineOf(slot) ?? '')
    return m ? (m[1] as Slot) : undefined
  }
}
