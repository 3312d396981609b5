// Readers of a whole process tree in /proc, for the idle benchmark (bench/run.ts): a
// process and all its descendants (the agent and its inference worker), summed. RSS from
// /proc/<pid>/status counts shared pages (the node binary, libraries) once per process;
// PSS from /proc/<pid>/smaps_rollup shares them out, so the PSS of a tree is what it
// really costs the device. CPU time and bytes written are summed too; a process that
// ends within a window takes its share with it (its parent reaps it), which is why the
// idle figures are taken over windows in which no worker starts or stops.

import { readdirSync, readFileSync } from 'node:fs'

/** `root` and every descendant alive now (children of every thread, recursively). */
function treePids(root: number): number[] {
  const out: number[] = []
  const visit = (pid: number) => {
    out.push(pid)
    let tasks: string[]
    try {
      tasks = readdirSync(`/proc/${pid}/task`)
    } catch {
      return // gone
    }
    for (const tid of tasks) {
      let children = ''
      try {
        children = readFileSync(`/proc/${pid}/task/${tid}/children`, 'utf8')
      } catch {
        continue
      }
      for (const c of children.split(' ').filter(Boolean)) visit(Number(c))
    }
  }
  visit(root)
  return out
}

export interface TreeSample {
  /** processes counted */
  procs: number
  rssKb: number
  /** undefined when smaps_rollup cannot be read (kernel < 4.14) */
  pssKb: number | undefined
  cpuTicks: number
  writeBytes: number | undefined
  wchar: number | undefined
}

function one(pid: number): Omit<TreeSample, 'procs'> | undefined {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8')
    // a zombie (exited, not yet reaped) has no VmRSS: it holds no memory
    const rssKb = Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0)
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    // Fields after the ")" that closes comm: state is field 3, utime 14, stime 15.
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    const cpuTicks = Number(rest[11]) + Number(rest[12])
    let pssKb: number | undefined
    try {
      pssKb = Number(/^Pss:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8'))?.[1] ?? NaN)
      if (!Number.isFinite(pssKb)) pssKb = undefined
    } catch {
      // no smaps_rollup
    }
    let writeBytes: number | undefined
    let wchar: number | undefined
    try {
      const io = readFileSync(`/proc/${pid}/io`, 'utf8')
      writeBytes = Number(/write_bytes:\s+(\d+)/.exec(io)?.[1] ?? NaN)
      wchar = Number(/wchar:\s+(\d+)/.exec(io)?.[1] ?? NaN)
    } catch {
      // not readable here
    }
    return { rssKb, pssKb, cpuTicks, writeBytes, wchar }
  } catch {
    return undefined // ended between the listing and the read
  }
}

const add = (a: number | undefined, b: number | undefined) => (a === undefined || b === undefined ? undefined : a + b)

/** The tree under `root` summed. */
export function treeSample(root: number): TreeSample {
  let sum: TreeSample = { procs: 0, rssKb: 0, pssKb: 0, cpuTicks: 0, writeBytes: 0, wchar: 0 }
  for (const pid of treePids(root)) {
    const s = one(pid)
    if (s === undefined) continue
    sum = {
      procs: sum.procs + 1,
      rssKb: sum.rssKb + s.rssKb,
      pssKb: add(sum.pssKb, s.pssKb),
      cpuTicks: sum.cpuTicks + s.cpuTicks,
      writeBytes: add(sum.writeBytes, s.writeBytes),
      wchar: add(sum.wchar, s.wchar),
    }
  }
  return sum
}
