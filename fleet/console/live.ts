// The live stream (/api/v1/stream, Server-Sent Events): one EventSource for the page;
// each `change` notice bumps a counter that views watch to reload what they show. The
// browser reconnects by itself when the stream drops (the service restarted). When the
// session ends while the stream is open (signed out elsewhere, expired, a new password),
// the service says `signed-out` and the page goes back to its sign-in form.

import { useEffect, useState } from 'preact/hooks'
import { sessionEnded } from './api.js'

export interface Notice {
  devices: string[]
  more: number
  presence: boolean
  /** the release repository changed (the rollouts page) */
  releases: boolean
}

type Listener = (n: Notice) => void
const listeners = new Set<Listener>()
const stateListeners = new Set<(up: boolean) => void>()
let source: EventSource | undefined
let up = false

function setUp(v: boolean): void {
  up = v
  for (const l of stateListeners) l(v)
}

function ensure(): void {
  if (source) return
  source = new EventSource('/api/v1/stream')
  source.addEventListener('open', () => setUp(true))
  source.addEventListener('error', () => setUp(false))
  source.addEventListener('signed-out', () => {
    closeLive()
    sessionEnded()
  })
  source.addEventListener('change', e => {
    let n: Notice
    try {
      n = JSON.parse((e as MessageEvent<string>).data) as Notice
    } catch {
      return
    }
    for (const l of listeners) l(n)
  })
}

/** A counter that moves when a notice matches `wants` (every notice when omitted). */
export function useLive(wants?: (n: Notice) => boolean): number {
  const [tick, setTick] = useState(0)
  useEffect(() => {
    ensure()
    const l: Listener = n => {
      if (!wants || wants(n)) setTick(t => t + 1)
    }
    listeners.add(l)
    return () => void listeners.delete(l)
  }, [])
  return tick
}

/** Whether the live stream is connected. */
export function useLiveState(): boolean {
  const [state, setState] = useState(up)
  useEffect(() => {
    ensure()
    stateListeners.add(setState)
    return () => void stateListeners.delete(setState)
  }, [])
  return state
}

/** Closes the stream (signed out): the next view that wants it opens it again. */
export function closeLive(): void {
  source?.close()
  source = undefined
  setUp(false)
}
