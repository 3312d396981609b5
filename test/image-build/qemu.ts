// Boots a Cairn OS image in qemu-system-aarch64 -M virt (TCG: KVM does not work on the
// build host) with the image's own kernel and initramfs, its serial console captured.
// qemu emulates no Pi 4/5, so the test plays the Pi firmware (firmware.ts picks the slot
// from autoboot.txt and the tryboot flag and hands over that slot's kernel, initramfs
// and root); `cairn.firmware=stand-in` tells the OS update helper so.

import { spawn, type ChildProcess } from 'node:child_process'
import { createWriteStream } from 'node:fs'
import { connect } from 'node:net'

export interface QemuOptions {
  readonly image: string
  readonly kernel: string
  readonly initrd: string
  /** root=LABEL=… from the slot's cmdline.txt */
  readonly root: string
  /** panic=… from the slot's cmdline.txt (default -1: reboot at once) */
  readonly panic?: number
  readonly consoleLog: string
  readonly monitorSocket: string
  /** host port forwarded to the guest's ssh (127.0.0.1 only) */
  readonly sshPort?: number
  /** more forwards, host 127.0.0.1:host -> guest's LAN address:guest (e.g. Node-RED) */
  readonly forwards?: ReadonlyArray<{ readonly host: number; readonly guest: number }>
  /** the disk's cache mode. 'none' (O_DIRECT): the guest's writes bypass this host's page
   * cache; with the guest's own page cache gone when qemu is killed, what survives a
   * power cut is what the guest wrote out (the power cut test). Default: qemu's. */
  readonly cache?: 'none'
}

export interface Guest {
  readonly child: ChildProcess
  readonly startedAt: number
  console(): string
  waitForConsole(re: RegExp, timeoutMs: number): Promise<RegExpExecArray>
  exited(timeoutMs: number): Promise<number | null>
  /** Aborted when qemu exits, for waits that must not outlive the guest. */
  readonly gone: AbortSignal
  /** ACPI-less power button (virt's gpio-keys): systemd-logind powers off. */
  powerdown(): Promise<void>
  kill(): void
}

export function bootGuest(o: QemuOptions): Guest {
  const fwd = [...(o.sshPort ? [{ host: o.sshPort, guest: 22 }] : []), ...(o.forwards ?? [])]
  const nic = `user,model=virtio-net-pci${fwd.map(f => `,hostfwd=tcp:127.0.0.1:${f.host}-:${f.guest}`).join('')}`
  const args = [
    '-M',
    'virt',
    '-cpu',
    'cortex-a72',
    '-smp',
    '2',
    '-m',
    '1024',
    '-display',
    'none',
    '-serial',
    'stdio',
    '-monitor',
    `unix:${o.monitorSocket},server,nowait`,
    '-no-reboot',
    '-kernel',
    o.kernel,
    '-initrd',
    o.initrd,
    // the journal on the console too: the agent's own log lines land in the console log
    '-append',
    `console=ttyAMA0 root=LABEL=${o.root} rootfstype=ext4 rootwait rw net.ifnames=0 panic=${o.panic ?? -1} systemd.journald.forward_to_console=1 audit=0 cairn.firmware=stand-in`,
    '-drive',
    `file=${o.image},format=raw,if=virtio${o.cache ? `,cache=${o.cache}` : ''}`,
    '-nic',
    nic,
    '-device',
    'virtio-rng-pci',
  ]
  // The console is a pipe read on this process's event loop: a test that blocks the loop
  // (spawnSync, a long execFileSync) while a guest runs lets the pipe fill, and the
  // guest's console writes, journald and every service logging through it stall.
  const child = spawn('qemu-system-aarch64', args, { stdio: ['ignore', 'pipe', 'pipe'] })
  // the log file's lines carry the seconds since qemu started (what the boot spent where,
  // under TCG); console() gives the text as the guest wrote it
  const log = createWriteStream(o.consoleLog)
  const t0 = Date.now()
  let lineStart = true
  let text = ''
  const waiters = new Set<() => void>()
  const onData = (d: Buffer) => {
    const chunk = d.toString('utf8')
    const stamp = () => `[+${((Date.now() - t0) / 1000).toFixed(1).padStart(6)}] `
    log.write((lineStart ? stamp() : '') + chunk.replace(/\n(?=.)/gs, () => `\n${stamp()}`))
    lineStart = chunk.endsWith('\n')
    text += chunk
    for (const w of waiters) w()
  }
  child.stdout!.on('data', onData)
  child.stderr!.on('data', onData)
  let exitCode: number | null | undefined
  const exitWaiters = new Set<() => void>()
  const gone = new AbortController()
  child.on('exit', code => {
    exitCode = code
    gone.abort(new Error(`qemu exited (${code})`))
    log.end()
    for (const w of [...waiters, ...exitWaiters]) w()
  })
  return {
    child,
    startedAt: Date.now(),
    gone: gone.signal,
    console: () => text,
    waitForConsole: (re, timeoutMs) =>
      new Promise((resolve, reject) => {
        const check = () => {
          const m = re.exec(text)
          if (m) return done(() => resolve(m))
          if (exitCode !== undefined) return done(() => reject(new Error(`qemu exited (${exitCode}) before the console showed ${re}`)))
        }
        const timer = setTimeout(() => done(() => reject(new Error(`console did not show ${re} within ${timeoutMs / 1000} s; see ${o.consoleLog}`))), timeoutMs)
        const done = (f: () => void) => {
          clearTimeout(timer)
          waiters.delete(check)
          f()
        }
        waiters.add(check)
        check()
      }),
    exited: timeoutMs =>
      new Promise((resolve, reject) => {
        if (exitCode !== undefined) return resolve(exitCode)
        const timer = setTimeout(() => reject(new Error(`qemu still running after ${timeoutMs / 1000} s`)), timeoutMs)
        exitWaiters.add(() => {
          clearTimeout(timer)
          resolve(exitCode ?? null)
        })
      }),
    powerdown: () =>
      new Promise((resolve, reject) => {
        const sock = connect(o.monitorSocket)
        sock.once('error', reject)
        sock.once('connect', () => {
          sock.write('system_powerdown\n')
          setTimeout(() => {
            sock.destroy()
            resolve()
          }, 200)
        })
      }),
    kill: () => {
      if (exitCode === undefined) child.kill('SIGKILL')
    },
  }
}
