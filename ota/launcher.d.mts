// Types for ota/launcher.mjs (plain JavaScript so that it imports nothing but node:*).
import type { SlotsState, Trial } from './slots.js'

export declare const EXIT_SWITCH: 75
export declare const SLOTS_FILE: string
export declare const GOOD_FILE: string
export declare const DEFAULT_GRACE_S: number
export declare const KILL_AFTER_S: number
export declare function validSlots(v: unknown): boolean
export declare function parseSlots(text: string): SlotsState | null
export declare function readSlots(dir: string): { state: SlotsState; source: 'slots' | 'good' | 'default'; damaged: boolean }
export declare function writeSlots(dir: string, state: SlotsState): void
export declare function rolledBack(state: SlotsState, version: string, reason: string, now: number): SlotsState
export declare function compareVersions(a: string, b: string): -1 | 0 | 1 | null
export declare function preferNewerFallback(state: SlotsState, slotVersion: string | undefined, fallbackVersion: string | undefined, osOnTrial?: boolean): SlotsState | null
export declare function beforeStart(state: SlotsState, now: number, graceMs: number): { state: SlotsState; changed: boolean; rollback?: 'crash-loop' | 'health-timeout' }
export declare function trialRemainingMs(trial: Trial, now: number, graceMs: number): number
export declare function main(argv: readonly string[]): Promise<number>
