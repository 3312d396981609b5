// `cairn demo` end to end, as `npm start` runs it (the embedded broker, MQTT 3.1.1): the
// bundle in a process of its own prints its first score line, then stops on SIGTERM
// with nothing left running. Short slots (--slot) make the epoch short; the score is
// the validator's real attestation.

import t from 'tap'
import { spawn } from 'node:child_process'
import { readdirSync, readFileSync } from 'node:fs'
import { connect } from 'node:net'
import { tmp, until } from '../helpers/agent.js'
import { signCommand } from '../../fleet/command-client.js'
import { readKeyPairFile } from '../../protocol/keys.js'
import { alive } from '../helpers/processes.js'

const bundle = new URL('../../dist/cairn.mjs', import.meta.url).pathname

/** The process ids descending from `pid`, read from /proc. */
function descendants(pid: number): number[] {
  const parent = new Map<number, number>()
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue
    try {
      // pid (comm) state ppid …; comm may hold spaces and parentheses.
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8')
      parent.set(Number(name), Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]))
    } catch {
      // gone meanwhile
    }
  }
  const out: number[] = []
  const walk = (p: number) => {
    for (const [child, pp] of parent) {
      if (pp === p) {
        out.push(child)
        walk(child)
      }
    }
  }
  walk(pid)
  return out
}

const refused = (port: number) =>
  new Promise<boolean>(resolve => {
    const s = connect(port, '127.0.0.1')
    s.once('connect', () => {
      s.destroy()
      resolve(false)
    })
    s.once('error', () => resolve(true))
  })

t.test('cairn demo on its embedded MQTT 3.1.1 broker prints a score, and SIGTERM stops all of it', async t => {
  const env = { ...process.env }
  delete env.CAIRN_BROKER
  delete env.CAIRN_BROKER_URL
  const child = spawn(process.execPath, [bundle, 'demo', '--port', '0', '--state-dir', tmp('cairn-demo-'), '--no-node-red', '--slot', '1', '--sim', '5', '--console-port', '0'], {
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  t.teardown(() => child.kill('SIGKILL'))
  let out = ''
  let err = ''
  child.stderr.on('data', (d: Buffer) => (err += d.toString()))
  const exited = new Promise<number | null>(r => child.once('exit', code => r(code)))
  const score = await new Promise<string>((resolve, reject) => {
    // Generous: one epoch is 6 s, but a loaded machine starts the agent slowly.
    const timer = setTimeout(() => reject(new Error(`no score line within 120 s; output:\n${out.slice(-3000)}\n${err.slice(-2000)}`)), 120_000)
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString()
      const line = /^ {2}SCORE .*$/m.exec(out)
      if (line) {
        clearTimeout(timer)
        resolve(line[0])
      }
    })
    void exited.then(code => {
      clearTimeout(timer)
      reject(new Error(`the demo exited (${code}) before a score: ${err.slice(-2000)}`))
    })
  })
  t.match(score, /SCORE {5}epoch \d+: \d+\.\d % \(\d+\/\d+ slots, challenges \d+\/\d+\)/, 'a score line from the validator')
  t.match(out, /broker {4}mqtt:\/\/127\.0\.0\.1:\d+ \(embedded, MQTT 3\.1\.1\)/, 'on the embedded 3.1.1 broker')
  t.match(out, /heartbeat seq \d+, cites slot/, 'heartbeats citing beacons')
  const port = Number(/broker {4}mqtt:\/\/127\.0\.0\.1:(\d+)/.exec(out)![1])
  // the fleet console: the real device and five simulated ones, one of them dark
  const consoleUrl = /console {3}(http:\/\/127\.0\.0\.1:\d+\/)/.exec(out)?.[1]
  t.ok(consoleUrl, `the console's URL is printed (${consoleUrl})`)
  t.match(out, /open http:\/\/127\.0\.0\.1:\d+\/ in a browser: the fleet console/)
  t.equal((await fetch(consoleUrl!)).status, 200, 'the console page is served')
  let fleet: { counts?: { devices: number; online: number } } = {}
  await until(
    async () => {
      fleet = (await (await fetch(`${consoleUrl}api/v1/fleet`)).json()) as typeof fleet
      return fleet.counts?.devices === 6 && fleet.counts.online === 5
    },
    60_000,
    'six devices in the console, five online',
  ).catch(err => {
    throw new Error(`${(err as Error).message}: ${JSON.stringify(fleet)}`)
  })
  t.notMatch(out, /status {4}online \(rpi|status {4}online \(jetson/, 'the printed view follows the real device, not the simulated ones')
  // what it prints for commands from the console: the device page and the key to import there
  const hint = /open (http:\/\/127\.0\.0\.1:\d+\/)#\/devices\/([a-z2-7]{52}) and import (\S+) there: commands to this agent/.exec(out)
  t.ok(hint, 'it says which key file to import on which device page')
  const ping = signCommand({ fleet: 'demo', device: hint![2]!, name: 'ping', body: {}, key: readKeyPairFile(hint![3]!), ttlMs: 60_000 })
  const sent = await fetch(`${hint![1]}api/v1/devices/${hint![2]}/commands`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(ping) })
  t.equal(sent.status, 202, 'a command signed with that key goes through the console')
  await until(async () => ((await (await fetch(`${consoleUrl}api/v1/commands/${ping.id}`)).json()) as { state?: string }).state === 'ok', 60_000, 'the agent answers it')
  // the validator's attestation behind the score line, kept by the console (the demo pins its validator)
  await until(
    async () => (((await (await fetch(`${consoleUrl}api/v1/devices/${hint![2]}/attestations`)).json()) as { items?: unknown[] }).items?.length ?? 0) > 0,
    60_000,
    "the device's attestation in the console",
  )
  t.pass("the scored epoch's attestation is on the device's page")
  const consolePort = Number(new URL(consoleUrl!).port)

  const kids = descendants(child.pid!)
  child.kill('SIGTERM')
  t.equal(await exited, 0, 'SIGTERM: a clean exit')
  t.same(kids.filter(alive), [], 'no process of its left behind')
  t.ok(await refused(port), 'its broker port is closed')
  t.ok(await refused(consolePort), 'and its console port')
})
