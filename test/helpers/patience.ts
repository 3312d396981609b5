// How long a test waits for an event before it calls the wait a hang. These are guards,
// not deadlines: CI runs the suite beside two busy processes on a 2-core machine, where
// a Node start, a broker round trip or an SQLite commit can take many times its quiet
// figure. No guard fires sooner than MIN_GUARD_MS, so a passing test is never slowed
// and a slow machine never fails one; a hung test still fails, with the guard's message,
// well inside tap's per-file limit. A test whose point is a deadline measures a baseline
// in the same run instead (test/agent/faults.test.ts: the exit against the drain rate).

const MIN_GUARD_MS = 60_000

/** The guard for a wait that a caller sized for a quiet machine. */
export const guardMs = (ms: number): number => Math.max(ms, MIN_GUARD_MS)
