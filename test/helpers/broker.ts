// Test fixture: a real Mosquitto broker on a free loopback port, with its own config
// and persistence dir, that tests can stop, kill and restart. Where the binary is
// missing it falls back to the embedded aedes broker with a printed notice; CI always
// has Mosquitto.

import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { createServer, connect } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { startEmbeddedBroker, type EmbeddedBroker } from '../../cli/embedded-broker.js'
import { guardMs } from './patience.js'

export interface TestBroker {
  kind: 'mosquitto' | 'aedes'
  port: number
  url: string
  /** true when MQTT 5 and shared subscriptions work */
  mqtt5: boolean
  stop(signal?: 'SIGTERM' | 'SIGKILL'): Promise<void>
  /** SIGSTOP / SIGCONT (mosquitto only): a broker that holds its connections open and answers nothing */
  freeze(): void
  thaw(): void
  start(): Promise<void>
  close(): Promise<void>
}

export function mosquittoPath(): string | undefined {
  for (const p of ['/usr/sbin/mosquitto', '/usr/local/sbin/mosquitto', '/usr/bin/mosquitto']) {
    if (spawnSync(p, ['-h'], { stdio: 'ignore' }).error === undefined) return p
  }
  return undefined
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer()
    s.once('error', reject)
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port
      s.close(() => resolve(port))
    })
  })
}

async function waitForPort(port: number, timeoutMs: number, child?: ChildProcess): Promise<void> {
  const until = Date.now() + guardMs(timeoutMs)
  for (;;) {
    // Mosquitto exits at once when it cannot bind (another socket took the port between
    // freePort() and its start): say so, so that the caller takes another port.
    if (child && child.exitCode !== null) throw Object.assign(new Error(`broker exited (${child.exitCode}) before listening on ${port}`), { exited: true })
    const ok = await new Promise<boolean>(resolve => {
      const sock = connect(port, '127.0.0.1')
      sock.once('connect', () => {
        sock.destroy()
        resolve(true)
      })
      sock.once('error', () => resolve(false))
    })
    if (ok) return
    if (Date.now() > until) throw new Error(`broker did not listen on ${port} within ${timeoutMs} ms`)
    await new Promise(r => setTimeout(r, 50))
  }
}

export async function startBroker(opts: { extraConfig?: string; anonymous?: boolean } = {}): Promise<TestBroker> {
  const bin = mosquittoPath()
  if (!bin) {
    process.stdout.write('# NOTICE: mosquitto not installed; using the embedded aedes broker (MQTT 3.1.1 only). CI installs mosquitto.\n')
    let broker: EmbeddedBroker | undefined = await startEmbeddedBroker()
    const port = broker.port
    return {
      kind: 'aedes',
      port,
      url: broker.url,
      mqtt5: false,
      stop: async () => {
        await broker?.close()
        broker = undefined
      },
      start: async () => {
        broker = await startEmbeddedBroker({ port })
      },
      freeze: () => {
        throw new Error('freeze needs mosquitto (the embedded broker runs in this process)')
      },
      thaw: () => undefined,
      close: async () => {
        await broker?.close()
      },
    }
  }
  const dir = mkdtempSync(join(tmpdir(), 'cairn-mosq-'))
  let port = 0
  const conf = join(dir, 'mosquitto.conf')
  const writeConf = () =>
    writeFileSync(
      conf,
      [
        `listener ${port} 127.0.0.1`,
        `allow_anonymous ${opts.anonymous === false ? 'false' : 'true'}`,
        // Started as root, mosquitto would drop to its own user and lose access to the
        // private temp dirs holding persistence and password files.
        ...(process.getuid?.() === 0 ? ['user root'] : []),
        'persistence true',
        `persistence_location ${dir}/`,
        'autosave_interval 1',
        // As docs/validator.md recommends: no Nagle delay on small messages.
        'set_tcp_nodelay true',
        'log_dest stderr',
        'log_type error',
        'log_type warning',
        opts.extraConfig ?? '',
      ].join('\n') + '\n',
    )
  let child: ChildProcess | undefined
  const start = async () => {
    const c = spawn(bin, ['-c', conf], { stdio: ['ignore', 'ignore', 'pipe'] })
    let stderr = ''
    c.stderr?.on('data', d => (stderr = (stderr + d.toString()).slice(-4000)))
    child = c
    try {
      await waitForPort(port, 10_000, c)
    } catch (err) {
      c.kill('SIGKILL')
      throw Object.assign(new Error(`${(err as Error).message}\n${stderr}`, { cause: err }), { exited: (err as { exited?: boolean }).exited === true })
    }
  }
  const stop = async (signal: 'SIGTERM' | 'SIGKILL' = 'SIGTERM') => {
    const c = child
    child = undefined
    if (!c || c.exitCode !== null) return
    await new Promise<void>(resolve => {
      c.once('exit', () => resolve())
      c.kill(signal)
    })
  }
  // The first start may lose its port to another socket: take another, a few times.
  for (let attempt = 1; ; attempt++) {
    port = await freePort()
    writeConf()
    try {
      await start()
      break
    } catch (err) {
      if (!(err as { exited?: boolean }).exited || attempt >= 5) throw err
    }
  }
  const signal = (sig: 'SIGSTOP' | 'SIGCONT') => void child?.kill(sig)
  // a frozen broker is thawed before it is stopped: SIGTERM does not reach a stopped process
  const close = () => (signal('SIGCONT'), stop('SIGTERM'))
  return { kind: 'mosquitto', port, url: `mqtt://127.0.0.1:${port}`, mqtt5: true, start, stop, freeze: () => signal('SIGSTOP'), thaw: () => signal('SIGCONT'), close }
}
