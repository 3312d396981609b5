// The default health deadline, measured: a release that starts but never reaches the
// broker, and one that hangs (ignoring SIGTERM), each installed on a device running v1
// under the launcher with the DEFAULT ota.healthDeadlineS and the launcher's DEFAULT
// grace. The first is rolled back by itself at the deadline, the second by the launcher
// after deadline + grace (and SIGKILL); either way v1 must be back online within 60 s of
// the trial's start (the switch, ota.switching). Both run at once, each in its own fleet.

import t, { type Test } from 'tap'
import { join } from 'node:path'
import { Consumer, tmp } from '../helpers/agent.js'
import { startBroker, type TestBroker } from '../helpers/broker.js'
import { buildBundle, packTarget, REPO_ROOT, startDevice, startRepo, unpackedTree, type TestRepo } from '../helpers/ota.js'

const ENTRY = join(REPO_ROOT, 'test', 'ota', 'fixtures', 'agent-entry.ts')
/** The bound: from the trial's start to the old version online. */
const BOUND_S = 60

t.setTimeout(300_000)

let broker: TestBroker
let repo: TestRepo
let v1tree: string
t.before(async () => {
  broker = await startBroker()
  repo = await startRepo()
  const rel = tmp('cairn-rel-')
  const [b1, b2] = await Promise.all([buildBundle('1.0.0', { entry: ENTRY }), buildBundle('2.0.0', { entry: ENTRY })])
  v1tree = await unpackedTree(packTarget(rel, b1, '1.0.0'), '1.0.0')
  await repo.add('2.0.0', packTarget(rel, b2, '2.0.0', { TEST_BREAK: 'offline' }), 'offline')
  await repo.add('2.0.0', packTarget(rel, b2, '2.0.0', { TEST_BREAK: 'hang' }), 'hang')
})
t.teardown(async () => {
  await repo?.close()
  await broker?.close()
})

type Ev = { id: string; kind: string; ts: number; data: Record<string, unknown> }

/** Installs the release of `channel` on a fresh v1 device; seconds from the switch to
 * v1 online again. Asserts the rollback's reason and the slots on the way. */
async function rollbackTime(t: Test, channel: 'offline' | 'hang'): Promise<number> {
  const fleet = `deadline-${channel}`
  const sub = await Consumer.connect(broker.url, [`cairn/v1/${fleet}/+/event`, `cairn/v1/${fleet}/+/status`])
  t.teardown(() => sub.close())
  // The defaults under test: no ota.healthDeadlineS, no --grace-s.
  const dev = startDevice({ tree: v1tree, brokerUrl: broker.url, fleet, repo, channel, set: ['ota.pollS=1'] })
  t.teardown(() => dev.kill())
  const events = (): Ev[] => [...new Map(sub.on('/event').map(m => [m.json!.id as string, m.json as unknown as Ev])).values()]
  const online = (after: number) => sub.on('/status').find(m => m.json?.state === 'online' && m.json.version === '1.0.0' && Number(m.json.ts) > after)
  try {
    await sub.waitFor(() => online(0), 30_000, 'v1 online')
    // Generous waits: before the default was lowered this took 120 s (135 s for a hang).
    const rolled = await sub.waitFor(() => events().find(e => e.kind === 'ota.rolled-back'), 180_000, 'ota.rolled-back')
    const switching = events().find(e => e.kind === 'ota.switching' && e.data.version === '2.0.0')
    t.ok(switching, 'the switch was reported')
    const since = switching!.ts
    await sub.waitFor(() => online(since), 30_000, 'v1 online again')
    const seconds = (Date.now() - since) / 1000
    t.match(rolled.data, { version: '2.0.0', from: '1.0.0', reason: 'health-timeout' }, 'rolled back for want of health')
    t.match(dev.slots(), { active: 'a', trial: null, bad: ['2.0.0'] }, 'back on slot a, 2.0.0 never again')
    t.comment(
      `${channel}: trial start → v1 online ${seconds.toFixed(1)} s (healthDeadlineS ${String(switching!.data.healthDeadlineS)}${channel === 'hang' ? ' + the launcher grace and its SIGKILL' : ''})`,
    )
    return seconds
  } catch (err) {
    t.comment(dev.sup.lines.slice(-40).join('\n'))
    throw err
  }
}

t.test(`with the defaults, a release that never connects or hangs is rolled back, v1 online within ${BOUND_S} s of the switch`, async t => {
  const [offline, hang] = await Promise.all([rollbackTime(t, 'offline'), rollbackTime(t, 'hang')])
  t.ok(offline <= BOUND_S, `never connects: ${offline.toFixed(1)} s ≤ ${BOUND_S} s`)
  t.ok(hang <= BOUND_S, `hangs: ${hang.toFixed(1)} s ≤ ${BOUND_S} s`)
})
