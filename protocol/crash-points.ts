// Test-only crash points. A test that starts a Cairn process with
// CAIRN_TEST_CRASH_AT=<point> makes it kill itself with SIGKILL (as a power cut or the
// OOM killer would: no handler runs, nothing is flushed) when it reaches that point, so a
// crash between two steps is tested exactly there, not only at random. Unset, a crash
// point costs one comparison. The points are named where they are placed; the tests
// that use them are in test/agent/crash-windows.test.ts.

export function crashPoint(name: string): void {
  if (process.env.CAIRN_TEST_CRASH_AT === name) process.kill(process.pid, 'SIGKILL')
}
