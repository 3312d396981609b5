// autoboot.txt on the CAIRN partition: which boot partition the Raspberry Pi bootloader
// starts normally ([all]) and on a one-shot tryboot ([tryboot]). Parsing is strict: the
// file decides whether the device boots at all, so anything unexpected is an error.

export type Slot = 'A' | 'B'

/** Boot partition of each slot (partition 1 is the CAIRN config partition). */
export const SLOT_PARTITION: Readonly<Record<Slot, number>> = { A: 2, B: 3 }

export const otherSlot = (s: Slot): Slot => (s === 'A' ? 'B' : 'A')

export function slotOfPartition(n: number): Slot {
  if (n === SLOT_PARTITION.A) return 'A'
  if (n === SLOT_PARTITION.B) return 'B'
  throw new Error(`partition ${n} is not a Cairn boot slot`)
}

export interface Autoboot {
  /** the slot booted normally ([all] boot_partition) */
  readonly committed: Slot
  /** the slot booted once after `reboot '0 tryboot'` ([tryboot] boot_partition) */
  readonly trial: Slot
}

export function parseAutoboot(text: string): Autoboot {
  let section = ''
  const values: Record<string, Record<string, string>> = {}
  for (const raw of text.split(/\r?\n/)) {
    const line = raw.replace(/#.*/, '').trim()
    if (!line) continue
    const sec = /^\[(\w+)\]$/.exec(line)
    if (sec) {
      section = sec[1]!
      continue
    }
    const kv = /^(\w+)=(\S+)$/.exec(line)
    if (!kv || !section) throw new Error(`autoboot.txt: cannot read line ${JSON.stringify(raw)}`)
    ;(values[section] ??= {})[kv[1]!] = kv[2]!
  }
  if (values.all?.tryboot_a_b !== '1') throw new Error('autoboot.txt: [all] lacks tryboot_a_b=1')
  const part = (sec: string) => {
    const v = values[sec]?.boot_partition
    if (v === undefined || !/^\d+$/.test(v)) throw new Error(`autoboot.txt: [${sec}] lacks boot_partition`)
    return slotOfPartition(Number(v))
  }
  return { committed: part('all'), trial: part('tryboot') }
}

export function formatAutoboot(a: Autoboot): string {
  return `[all]\ntryboot_a_b=1\nboot_partition=${SLOT_PARTITION[a.committed]}\n[tryboot]\nboot_partition=${SLOT_PARTITION[a.trial]}\n`
}
