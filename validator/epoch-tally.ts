// What one validator process did with the proof messages it received, counted per
// epoch, so a process that receives heartbeats but stores none says so once an epoch
// is over (a warning with the reasons) instead of leaving its devices unscored in
// silence, and refusals are counted rather than logged one line each.

export type IngestResult = 'stored' | 'duplicate' | 'response' | 'ignored' | 'store-error' | { refused: string }

export interface EpochSummary {
  epoch: number
  /** Proof messages received (heartbeats, challenge responses and anything refused). */
  received: number
  /** New heartbeats stored. */
  stored: number
  duplicates: number
  responses: number
  ignored: number
  /** Storage attempts that failed and were retried before acknowledging. */
  storeErrors: number
  /** Messages refused for good, by error code. */
  refused: Record<string, number>
}

export class EpochTally {
  private current: EpochSummary | undefined

  /** Counts one message received in `epoch`; returns the summary of the epoch it closes, if any. */
  add(epoch: number, result: IngestResult, first: boolean): EpochSummary | undefined {
    const closed = this.roll(epoch)
    const c = (this.current ??= blank(epoch))
    if (first) c.received++
    if (result === 'stored') c.stored++
    else if (result === 'duplicate') c.duplicates++
    else if (result === 'response') c.responses++
    else if (result === 'ignored') c.ignored++
    else if (result === 'store-error') c.storeErrors++
    else c.refused[result.refused] = (c.refused[result.refused] ?? 0) + 1
    return closed
  }

  /** Closes the epoch being counted once `epoch` is later, and returns its summary. */
  roll(epoch: number): EpochSummary | undefined {
    const c = this.current
    if (!c || c.epoch >= epoch) return undefined
    this.current = undefined
    return c
  }

  /** The summary so far (when the process stops mid-epoch). */
  flush(): EpochSummary | undefined {
    const c = this.current
    this.current = undefined
    return c
  }
}

function blank(epoch: number): EpochSummary {
  return { epoch, received: 0, stored: 0, duplicates: 0, responses: 0, ignored: 0, storeErrors: 0, refused: {} }
}
