// An embedded Node-RED 4.1 with the Cairn nodes loaded, for `cairn demo` (npm start) and
// the end-to-end flow tests. On a device Node-RED runs as its own service instead
// (image-build/, docs/node-red.md); this is the "try it on your laptop" path. Editor and
// admin API listen on 127.0.0.1 only. Node-RED is imported at run time (it is not
// bundled) so a machine without it still runs the agent, and is told why there is no
// editor.

import { appendFileSync, existsSync, mkdirSync, writeFileSync } from 'node:fs'
import { createServer, type IncomingMessage, type Server } from 'node:http'
import type { Duplex } from 'node:stream'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'

/** The package directory: agent/ and dist/ both sit one level below the repository root. */
export function cairnPackageDir(): string {
  return fileURLToPath(new URL('./node-red-contrib-cairn', import.meta.url))
}

export interface NodeRedHostOptions {
  /** Node-RED's own state: flows, credentials, context, installed palettes. */
  userDir: string
  /** Preferred port; taken → any free one. Default 1880; 0 asks for any free port at once. */
  port?: number
  /** Written to <userDir>/flows.json when given (replacing what is there). */
  flows?: readonly unknown[]
  packageDir?: string
  /** Node-RED's log lines (level is Node-RED's name: info, warn, error…). */
  log?: (level: string, msg: string) => void
}

export interface NodeRedHost {
  url: string
  port: number
  /** Node-RED's runtime API (RED.nodes, RED.runtime…), for tests. */
  red: NodeRedModule
  stop(): Promise<void>
}

/** The slice of `require('node-red')` used here. */
interface NodeRedModule {
  init(server: Server, settings: Record<string, unknown>): void
  start(): Promise<void>
  stop(): Promise<void>
  httpAdmin: (req: unknown, res: unknown, next: () => void) => void
  httpNode: (req: unknown, res: unknown, next: () => void) => void
  nodes: { getNode(id: string): unknown }
  /** Messaging hooks (onReceive, preDeliver…): how tests watch messages reach nodes. */
  hooks: { add(name: string, fn: (event: { msg: Record<string, unknown>; destination: { id: string } }) => void): void; remove(name: string): void }
  runtime: { flows: { getFlows(opts: Record<string, unknown>): Promise<unknown> } }
}

// Numeric levels Node-RED hands to a custom log handler.
const LEVELS: Record<number, string> = { 10: 'fatal', 20: 'error', 30: 'warn', 40: 'info', 50: 'debug', 60: 'trace', 98: 'audit', 99: 'metric' }

let running = false

/** Loads Node-RED; throws an Error saying so when it is not installed. */
async function loadNodeRed(): Promise<NodeRedModule> {
  try {
    // A variable specifier: Node-RED ships no types, and the bundle must not inline it.
    const name = 'node-red'
    const mod = (await import(name)) as { default?: NodeRedModule } & NodeRedModule
    return mod.default ?? mod
  } catch (err) {
    throw new Error(`Node-RED is not installed (${(err as Error).message.split('\n')[0]}); npm install node-red@4.1 to get the editor`, { cause: err })
  }
}

/** Starts Node-RED once per process (its runtime is a singleton). */
export async function startNodeRed(o: NodeRedHostOptions): Promise<NodeRedHost> {
  // Claimed before the first await: two calls at once must not both get past this.
  if (running) throw new Error('Node-RED is already running in this process')
  running = true
  let server: Server | undefined
  try {
    const RED = await loadNodeRed()
    const packageDir = o.packageDir ?? cairnPackageDir()
    if (!existsSync(join(packageDir, 'package.json'))) throw new Error(`the Cairn Node-RED package is missing at ${packageDir}`)
    mkdirSync(o.userDir, { recursive: true, mode: 0o700 })
    if (o.flows) writeFileSync(join(o.userDir, 'flows.json'), JSON.stringify(o.flows, null, 2) + '\n')
    const log = o.log ?? (() => {})

    // Node-RED's admin app answers first; what it does not serve falls to http-in nodes.
    const srv = createServer((req, res) => {
      if (!fromThisMachine(req)) {
        res.statusCode = 403
        res.end('Cairn: the editor only answers pages on 127.0.0.1 or localhost\n')
        return
      }
      RED.httpAdmin(req, res, () =>
        RED.httpNode(req, res, () => {
          res.statusCode = 404
          res.end()
        }),
      )
    })
    server = srv
    guardUpgrades(srv)
    const port = await listen(srv, o.port ?? 1880)
    RED.init(srv, settings(o.userDir, packageDir, log))
    await RED.start()
    return {
      url: `http://127.0.0.1:${port}/`,
      port,
      red: RED,
      stop: async () => {
        try {
          await RED.stop()
        } finally {
          srv.closeAllConnections()
          await new Promise<void>(r => srv.close(() => r()))
          running = false
        }
      },
    }
  } catch (err) {
    running = false
    server?.close()
    throw err
  }
}

/**
 * The editor has no login on 127.0.0.1, so what a web page in the owner's browser can
 * make it do matters: a DNS-rebound name (Host not a loopback name) or another site's
 * script (a foreign Origin on a POST or a WebSocket) could deploy flows or watch the
 * debug sidebar. Only requests naming this machine, and no foreign origin, get through.
 */
function fromThisMachine(req: IncomingMessage): boolean {
  const host = /^(?:\[([^\]]+)\]|([^:]+))(?::\d+)?$/.exec(req.headers.host ?? '')
  if (!host || !isLoopbackName(host[1] ?? host[2] ?? '')) return false
  const origin = req.headers.origin
  if (origin === undefined || origin === '') return true
  try {
    return isLoopbackName(new URL(origin).hostname.replace(/^\[|\]$/g, ''))
  } catch {
    return false
  }
}

function isLoopbackName(h: string): boolean {
  const name = h.toLowerCase()
  return name === 'localhost' || name === '::1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(name)
}

/**
 * The same check for the editor's WebSocket. Node-RED adds its 'upgrade' listener some
 * time during start, so the event itself is filtered: a refused upgrade reaches no
 * listener at all.
 */
function guardUpgrades(server: Server): void {
  const emit = server.emit.bind(server) as (event: string | symbol, ...args: unknown[]) => boolean
  server.emit = ((event: string | symbol, ...args: unknown[]) => {
    if (event === 'upgrade' && !fromThisMachine(args[0] as IncomingMessage)) {
      ;(args[1] as Duplex).end('HTTP/1.1 403 Forbidden\r\nConnection: close\r\nContent-Length: 0\r\n\r\n')
      return true
    }
    return emit(event, ...args)
  }) as Server['emit']
}

function settings(userDir: string, packageDir: string, log: (level: string, msg: string) => void): Record<string, unknown> {
  return {
    userDir,
    flowFile: 'flows.json',
    // The token lives in a file the config node names; there are no other secrets.
    credentialSecret: false,
    uiHost: '127.0.0.1',
    httpAdminRoot: '/',
    httpNodeRoot: '/',
    nodesDir: [packageDir],
    // No calls off the machine: no usage telemetry, update checks or palette installs.
    telemetry: { enabled: false, updateNotification: false },
    diagnostics: { enabled: false, ui: false },
    externalModules: { autoInstall: false, palette: { allowInstall: false, allowUpload: false } },
    functionExternalModules: false,
    editorTheme: {
      tours: false,
      projects: { enabled: false },
      palette: { categories: ['cairn', 'common', 'function', 'network', 'sequence', 'parser', 'storage'] },
      page: { title: 'Cairn · Node-RED' },
      header: { title: 'Cairn · Node-RED' },
    },
    logging: {
      console: { level: 'off' },
      cairn: { level: 'info', metrics: false, audit: false, handler: () => (m: LogMsg) => log(LEVELS[m.level] ?? String(m.level), logLine(m)) },
    },
  }
}

interface LogMsg {
  level: number
  msg: unknown
  type?: string
  id?: string
  name?: string
}

/** Like Node-RED's console lines, with the node's id too so a flow's node can be found. */
function logLine(m: LogMsg): string {
  const text = m.msg instanceof Error ? m.msg.toString() : String(m.msg)
  return m.type ? `[${m.type}:${m.id ?? ''}${m.name ? ` ${m.name}` : ''}] ${text}` : text
}

async function listen(server: Server, port: number): Promise<number> {
  const tryPort = (p: number) =>
    new Promise<number>((resolve, reject) => {
      const onError = (err: Error) => reject(err)
      server.once('error', onError)
      server.listen(p, '127.0.0.1', () => {
        server.off('error', onError)
        resolve((server.address() as { port: number }).port)
      })
    })
  try {
    return await tryPort(port)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EADDRINUSE' || port === 0) throw err
    return tryPort(0)
  }
}

/** A first flow for a fresh editor: the agent's telemetry, events and LED, wired to this device. */
function starterFlow(agent: { socketPath: string; tokenFile: string }): unknown[] {
  const tab = 'cairn-demo-tab'
  const cfg = 'cairn-demo-agent'
  return [
    { id: tab, type: 'tab', label: 'Cairn demo', disabled: false, info: 'Made by `cairn demo`. The examples (menu → Import → Examples → node-red-contrib-cairn) show more.' },
    { id: cfg, type: 'cairn-agent', name: 'this device (demo)', transport: 'socket', socket: agent.socketPath, url: '', tokenFile: agent.tokenFile },
    { id: 'cairn-demo-telemetry', type: 'cairn-telemetry', z: tab, name: 'telemetry every 30 s', agent: cfg, fields: '', interval: 30, x: 170, y: 80, wires: [['cairn-demo-debug-t']] },
    {
      id: 'cairn-demo-debug-t',
      type: 'debug',
      z: tab,
      name: 'sample',
      active: true,
      tosidebar: true,
      console: false,
      complete: 'payload',
      targetType: 'msg',
      statusVal: 'hottest',
      statusType: 'msg',
      x: 420,
      y: 80,
      wires: [],
    },
    { id: 'cairn-demo-events', type: 'cairn-events', z: tab, name: 'every event', agent: cfg, kinds: '', status: true, x: 150, y: 140, wires: [['cairn-demo-debug-e']] },
    {
      id: 'cairn-demo-debug-e',
      type: 'debug',
      z: tab,
      name: 'event',
      active: true,
      tosidebar: true,
      console: false,
      complete: 'true',
      targetType: 'full',
      statusVal: 'topic',
      statusType: 'msg',
      x: 410,
      y: 140,
      wires: [],
    },
    {
      id: 'cairn-demo-inject-blink',
      type: 'inject',
      z: tab,
      name: 'blink',
      props: [{ p: 'payload' }],
      repeat: '',
      once: false,
      payload: 'blink',
      payloadType: 'str',
      x: 130,
      y: 220,
      wires: [['cairn-demo-led']],
    },
    {
      id: 'cairn-demo-inject-auto',
      type: 'inject',
      z: tab,
      name: 'auto',
      props: [{ p: 'payload' }],
      repeat: '',
      once: false,
      payload: 'auto',
      payloadType: 'str',
      x: 130,
      y: 260,
      wires: [['cairn-demo-led']],
    },
    { id: 'cairn-demo-led', type: 'cairn-led', z: tab, name: 'status LED', agent: cfg, pattern: '', x: 330, y: 240, wires: [[]] },
  ]
}

/**
 * For `cairn demo`: Node-RED in <stateDir>/node-red with a starter flow on the demo
 * agent's socket and token. Never throws: prints why there is no editor instead.
 */
export async function startDemoNodeRed(o: { stateDir: string; port?: number; say: (s: string) => void }): Promise<NodeRedHost | undefined> {
  const userDir = join(o.stateDir, 'node-red')
  const flowFile = join(userDir, 'flows.json')
  try {
    const host = await startNodeRed({
      userDir,
      port: o.port ?? 1880,
      // Keep the owner's edits across restarts; a fresh state dir gets the starter flow.
      ...(existsSync(flowFile) ? {} : { flows: starterFlow({ socketPath: join(o.stateDir, 'api.sock'), tokenFile: join(o.stateDir, 'api.token') }) }),
      log: logTo(join(o.stateDir, 'node-red.log')),
    })
    o.say(`  node-red  ${host.url}  (editor on 127.0.0.1 only, Cairn nodes in the palette; log: ${join(o.stateDir, 'node-red.log')})`)
    return host
  } catch (err) {
    o.say(`  node-red  not started: ${(err as Error).message}`)
    return undefined
  }
}

function logTo(file: string): (level: string, msg: string) => void {
  return (level, msg) => {
    try {
      appendFileSync(file, `${new Date().toISOString()} ${level} ${msg}\n`)
    } catch {
      // A log we cannot write must not stop the editor.
    }
  }
}
