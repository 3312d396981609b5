// The A/B OS update as a state machine: a pure planner looks at what the device observes
// (the update record on the data partition, autoboot.txt, the slot that booted, whether
// this boot is a trial) and returns the one next step. The executor performs it and
// records that it did, so a power cut at any point resumes or falls back.
//
//   idle ─offer→ write-slot ─→ arm ─→ reboot-tryboot ─→ (trial boot of the new slot)
//        ─→ health-check ─ok→ commit ─→ idle
//                        └failed→ reboot (the firmware boots the old slot) ─→ mark-failed
//   A trial boot that crashes or hangs never commits: any reset boots the old slot, and
//   the planner then records the failure.
//
// This is the OS backend the OTA slot interface will drive; it lives with the image
// until that interface lands.

import { otherSlot, type Autoboot, type Slot } from './autoboot.js'

export interface UpdateRecord {
  readonly phase: 'writing' | 'written' | 'trial' | 'committed' | 'failed'
  readonly target: Slot
  readonly version: string
  /** kernel boot id when the trial was armed: tells "not rebooted yet" from "came back" */
  readonly armedBootId?: string
  readonly reason?: string
}

export interface Observed {
  readonly record: UpdateRecord | undefined
  readonly autoboot: Autoboot
  /** the slot whose root is running (root=LABEL=cairn-root<slot>) */
  readonly booted: Slot
  readonly bootId: string
  /** the health check's verdict in this boot, once run */
  readonly health?: 'ok' | 'failed' | undefined
  /** an OS release offered for installation */
  readonly offer?: { readonly version: string } | undefined
  readonly runningVersion: string
}

export type Step =
  | { readonly kind: 'idle' }
  | { readonly kind: 'write-slot'; readonly target: Slot; readonly version: string }
  | { readonly kind: 'arm'; readonly target: Slot }
  | { readonly kind: 'reboot-tryboot' }
  | { readonly kind: 'health-check' }
  | { readonly kind: 'commit'; readonly target: Slot }
  | { readonly kind: 'reboot' }
  | { readonly kind: 'mark-failed'; readonly reason: string }

export function planUpdate(o: Observed): Step {
  const r = o.record
  if (!r || r.phase === 'committed' || r.phase === 'failed') {
    if (o.offer && o.offer.version !== o.runningVersion && !(r?.phase === 'failed' && r.version === o.offer.version))
      return { kind: 'write-slot', target: otherSlot(o.booted), version: o.offer.version }
    return { kind: 'idle' }
  }
  // A slot written (or half written) but never armed is nobody's yet: a request for
  // another version replaces it, so one release that failed to write cannot block the
  // next.
  if ((r.phase === 'writing' || r.phase === 'written') && o.offer && o.offer.version !== r.version && o.offer.version !== o.runningVersion)
    return { kind: 'write-slot', target: otherSlot(o.booted), version: o.offer.version }
  switch (r.phase) {
    case 'writing':
      // interrupted while writing: write again from the start
      return { kind: 'write-slot', target: r.target, version: r.version }
    case 'written':
      return { kind: 'arm', target: r.target }
    case 'trial':
      if (o.booted === r.target) {
        // committed already, record not yet updated (a cut right after the commit)
        if (o.autoboot.committed === r.target) return { kind: 'commit', target: r.target }
        if (o.health === undefined) return { kind: 'health-check' }
        if (o.health === 'ok') return { kind: 'commit', target: r.target }
        return { kind: 'reboot' }
      }
      if (o.bootId === r.armedBootId) return { kind: 'reboot-tryboot' }
      return { kind: 'mark-failed', reason: r.reason ?? `the trial boot of slot ${r.target} did not commit; slot ${o.booted} booted again` }
  }
}
