// The rollouts page's API against a real Mosquitto: devices by agent version, each
// release's devices by update phase from their newest ota.* event (with the reasons of
// rollbacks and failures), and the fleet-wide pause: signed by the operator, checked,
// logged, published retained on the release topic, and read back from it.

import t from 'tap'
import mqtt from 'mqtt'
import { signEnvelope } from '../../../protocol/envelope.js'
import { newId } from '../../../protocol/ids.js'
import { generateKeyPair, publicKeyPem, type KeyPair } from '../../../protocol/keys.js'
import { startBroker } from '../../helpers/broker.js'
import { until } from '../../helpers/agent.js'
import { startTestService } from '../../helpers/fleet-service.js'
import { makeRepo, payload, serveRepo, tmp } from '../../helpers/release.js'
import { join } from 'node:path'

t.test('rollouts: versions, releases by phase, the pause signed by the operator', async t => {
  const broker = await startBroker()
  t.teardown(() => broker.close())
  const mqttVersion = broker.mqtt5 ? 5 : 4
  const fleet = 'roll'
  const { svc, base } = await startTestService(t, { broker, fleet, mqttVersion })
  const pub = await mqtt.connectAsync(broker.url, { protocolVersion: mqttVersion })
  t.teardown(() => pub.endAsync(true))
  const get = async <T>(path: string) => (await (await fetch(`${base}${path}`)).json()) as T

  const now = Date.now()
  const devices = [generateKeyPair(), generateKeyPair(), generateKeyPair(), generateKeyPair()]
  const story: Array<[number, string, Array<[string, Record<string, unknown>]>]> = [
    [
      0,
      '2.0.0',
      [
        ['ota.available', { version: '2.0.0', from: '1.0.0' }],
        ['ota.committed', { version: '2.0.0', from: '1.0.0' }],
        ['ota.paused', { paused: true }],
      ],
    ],
    [1, '1.0.0', [['ota.download', { version: '2.0.0', state: 'downloading', percent: 40 }]]],
    [2, '1.0.0', [['ota.rolled-back', { version: '2.0.0', from: '1.0.0', reason: 'health-check-failed' }]]],
    [
      3,
      '1.0.0',
      [
        ['ota.available', { version: '3.0.0', from: '1.0.0' }],
        ['ota.failed', { version: '3.0.0', from: '1.0.0', step: 'staging', reason: 'stage-failed' }],
      ],
    ],
  ]
  for (const [i, version, events] of story) {
    const d = devices[i]!
    const status = onlineStatus(d, fleet, version, mqttVersion, now)
    await pub.publishAsync(`cairn/v1/${fleet}/${d.keyId}/status`, JSON.stringify(status), { qos: 1 })
    for (const [j, [kind, data]] of events.entries())
      await pub.publishAsync(`cairn/v1/${fleet}/${d.keyId}/event`, JSON.stringify({ v: 1, id: newId(now + j), device: d.keyId, ts: now + j, kind, data }), { qos: 1 })
  }
  type Rollouts = {
    versions: Array<{ version: string; devices: number; online: number }>
    releases: Array<{ version: string; devices: number; phases: Record<string, number>; reasons: Record<string, number> }>
    recent: Array<{ device: string; phase: string }>
    pause: { paused: boolean; by: string; expired: boolean } | null
  }
  await until(async () => (await get<Rollouts>('/api/v1/rollouts')).recent.length === 4, 30_000, "four devices' updater events")
  const r = await get<Rollouts>('/api/v1/rollouts')
  t.same(r.versions, [
    { version: '1.0.0', devices: 3, online: 3 },
    { version: '2.0.0', devices: 1, online: 1 },
  ])
  t.match(r.releases, [
    { version: '2.0.0', devices: 3, phases: { committed: 1, downloading: 1, 'rolled-back': 1, failed: 0 }, reasons: { 'health-check-failed': 1 } },
    { version: '3.0.0', devices: 1, phases: { failed: 1, available: 0 }, reasons: { 'stage-failed': 1 } },
  ])
  t.equal(r.recent.find(x => x.device === devices[0]!.keyId)?.phase, 'committed', 'ota.paused is no update phase: the newest that is counts')
  t.equal(r.pause, null, 'nothing paused')

  // the pause, signed by the operator (in the browser, or here), through the service
  const op = generateKeyPair()
  const pause = (body: unknown, o: { sub?: string; type?: string } = {}) =>
    signEnvelope(op, { type: o.type ?? 'cmd.pause-updates', id: newId(Date.now()), fleet, sub: o.sub ?? '*', iat: Date.now(), exp: Date.now() + 3_600_000, body: body as never })
  const post = async (env: unknown) => {
    const res = await fetch(`${base}/api/v1/rollouts/pause`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(env) })
    return { status: res.status, body: (await res.json()) as { error?: { code: string } } & Record<string, unknown> }
  }
  t.match(await post(pause({ paused: 'yes' })), { status: 400, body: { error: { code: 'BAD_REQUEST' } } }, 'a body that is not {paused: bool}')
  t.match(await post(pause({ paused: true }, { sub: devices[0]!.keyId })), { status: 400, body: { error: { code: 'WRONG_TARGET' } } }, 'not fleet-wide')
  t.match(await post(pause({}, { type: 'cmd.ping' })), { status: 400 }, 'not a pause')
  const watcher = await mqtt.connectAsync(broker.url, { protocolVersion: mqttVersion })
  t.teardown(() => watcher.endAsync(true))
  const halt = pause({ paused: true })
  t.match(await post(halt), { status: 202, body: { id: halt.id, device: '*', name: 'pause-updates', operator: op.keyId } })
  const retained = await new Promise<string>(resolve => {
    watcher.on('message', (_topic, payload, packet) => packet.retain && resolve(payload.toString()))
    void watcher.subscribeAsync(`cairn/v1/${fleet}/release`, { qos: 1 })
  })
  t.same(JSON.parse(retained), halt, 'published retained on the release topic, as signed')
  await until(async () => (await get<Rollouts>('/api/v1/rollouts')).pause !== null, 30_000, 'the pause read back')
  t.match((await get<Rollouts>('/api/v1/rollouts')).pause, { paused: true, by: op.keyId, expired: false }, 'the page shows updates paused, and by whom')
  t.match((await get<{ items: Array<{ id: string; device: string }> }>('/api/v1/commands')).items, [{ id: halt.id, device: '*' }], 'in the audit log')
  t.match(await post(halt), { status: 409 }, 'the same one again: a replay')
  const resume = pause({ paused: false })
  t.equal((await post(resume)).status, 202)
  await until(async () => (await get<Rollouts>('/api/v1/rollouts')).pause?.paused === false, 30_000, 'resumed')
  // what else comes on the release topic (a release hint, junk) leaves the pause as it was;
  // a pause the service cannot verify is not shown
  svc.pause.handle(Buffer.from('new release'))
  svc.pause.handle(Buffer.from(JSON.stringify({ ...halt, sig: resume.sig })))
  t.match(svc.pause.state(), { paused: false, id: resume.id }, 'a hint or a pause with a wrong signature changes nothing')
  await pub.publishAsync(`cairn/v1/${fleet}/release`, '', { qos: 1, retain: true })
})

t.test('rollouts: the releases a TUF repository publishes (--release-url), their rollout over time and outcomes', async t => {
  const broker = await startBroker()
  t.teardown(() => broker.close())
  const mqttVersion = broker.mqtt5 ? 5 : 4
  const fleet = 'rel'
  const { repo } = makeRepo()
  const files = tmp('cairn-rel-files-')
  repo.addRelease([payload(files, 'cairn-agent-arm64.tar', 3000)], { version: '2.0.0', channel: 'stable', rollout: 10, kind: 'agent', arch: ['arm64'] })
  const server = await serveRepo(repo)
  t.teardown(() => server.close())
  const { svc, base } = await startTestService(t, {
    broker,
    fleet,
    mqttVersion,
    releases: { url: server.url, root: join(repo.paths.metadata, '1.root.json'), metadataDir: join(tmp('cairn-rel-tuf-'), 'tuf'), everyMs: 3_600_000 },
  })
  const get = async <T>(path: string) => {
    const res = await fetch(`${base}${path}`)
    return { status: res.status, body: (await res.json()) as T }
  }
  type Published = {
    kind: string
    version: string
    channel: string
    rollout: number
    targets: number
    withdrawn: boolean
    running: number | null
    committed: number
    rolledBack: number
    failed: number
    history: Array<{ rollout: number }>
  }
  type Rollouts = { repository: { ok: boolean; url: string; targetsVersion: number | null } | null; published: Published[] }
  await until(async () => (await get<Rollouts>('/api/v1/rollouts')).body.repository?.ok === true, 30_000, 'the repository read at start')
  t.match((await get<Rollouts>('/api/v1/rollouts')).body.published, [{ kind: 'agent', version: '2.0.0', channel: 'stable', rollout: 10, targets: 1, withdrawn: false, running: 0 }])

  // the operator raises the rollout; devices update, one rolls back
  repo.setRollout('2.0.0', 50)
  await svc.releases!.poll()
  const pub = await mqtt.connectAsync(broker.url, { protocolVersion: mqttVersion })
  t.teardown(() => pub.endAsync(true))
  const now = Date.now()
  const devices = [generateKeyPair(), generateKeyPair()]
  for (const [i, d] of devices.entries()) {
    const status = onlineStatus(d, fleet, i === 0 ? '2.0.0' : '1.0.0', mqttVersion, now)
    await pub.publishAsync(`cairn/v1/${fleet}/${d.keyId}/status`, JSON.stringify(status), { qos: 1 })
    const kind = i === 0 ? 'ota.committed' : 'ota.rolled-back'
    await pub.publishAsync(
      `cairn/v1/${fleet}/${d.keyId}/event`,
      JSON.stringify({ v: 1, id: newId(now + 1), device: d.keyId, ts: now + 1, kind, data: { version: '2.0.0', from: '1.0.0', reason: 'crash-loop' } }),
      { qos: 1 },
    )
  }
  await until(async () => (await get<Rollouts>('/api/v1/rollouts')).body.published[0]?.rolledBack === 1, 30_000, 'the outcomes counted')
  const [p] = (await get<Rollouts>('/api/v1/rollouts')).body.published
  t.match(p, { rollout: 50, running: 1, committed: 1, rolledBack: 1, failed: 0 })
  t.same(
    p!.history.map(h => h.rollout),
    [10, 50],
    'its rollout over time',
  )
  const o = await get<{ bucketMs: number; items: Array<{ ts: number; committed: number; rolledBack: number }>; rollout: Array<{ channel: string; history: unknown[] }> }>(
    `/api/v1/rollouts/outcomes?kind=agent&version=2.0.0&from=${now - 3_600_000}&to=${now + 3_600_000}`,
  )
  t.equal(o.status, 200)
  t.equal(o.body.bucketMs, 60_000, 'two hours: by the minute')
  t.same(o.body.items, [{ ts: Math.floor((now + 1) / 60_000) * 60_000, committed: 1, rolledBack: 1, failed: 0 }])
  t.match(o.body.rollout, [{ channel: 'stable', history: [{ rollout: 10 }, { rollout: 50 }] }])
  // bad input: a 400 with a clear error
  for (const q of [
    'version=2.0.0',
    'kind=firmware&version=2.0.0',
    'kind=agent&version=2.0.0&limit=5',
    `kind=agent&version=${'9'.repeat(65)}`,
    'kind=agent&version=2.0.0&from=0&to=99999999999999',
    'kind=agent&version=2.0.0&from=2&to=1',
  ]) {
    const bad = await get<{ error: { code: string; message: string } }>(`/api/v1/rollouts/outcomes?${q}`)
    t.equal(bad.status, 400, q)
    t.match(bad.body.error.message, /\w/, `${q}: ${bad.body.error.message}`)
  }
})

/** A device's retained online status, as an agent of `version` sends it. */
function onlineStatus(d: KeyPair, fleet: string, version: string, mqtt: 4 | 5, now: number) {
  return { v: 1, id: newId(now), device: d.keyId, fleet, state: 'online', ts: now, since: now, conn: now, version, board: 'rpi4', model: 'Pi 4', mqtt, publicKey: publicKeyPem(d.publicKey) }
}
