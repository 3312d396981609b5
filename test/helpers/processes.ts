// Whether a process still exists (a zombie counts: it has not been reaped yet), for tests
// that check a child went away.

export function alive(pid: number | undefined): boolean {
  if (pid === undefined) return false
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}
