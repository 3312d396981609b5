// Task receipts and uptime attestations in the fleet service, in both MQTT versions,
// against a real Mosquitto: a receipt signed by the device and an attestation signed by
// a pinned validator are kept with their signed bytes; a forged receipt (another key),
// an altered one, an attestation from a validator that is not pinned and one naming
// another device are refused and counted on the device, never kept. Attestations are
// retained: one published before the service started (in a share group, which gets no
// retained messages) still arrives.

import t from 'tap'
import mqtt from 'mqtt'
import { newId } from '../../../protocol/ids.js'
import { generateKeyPair, publicKeyPem } from '../../../protocol/keys.js'
import { signedAttestation as attestation, signedReceipt as receipt } from '../../helpers/signed-fixtures.js'
import { startBroker, type TestBroker } from '../../helpers/broker.js'
import { until } from '../../helpers/agent.js'
import { startTestService } from '../../helpers/fleet-service.js'
import { MQTT_VERSIONS } from '../../helpers/mqtt-versions.js'

let broker: TestBroker
t.before(async () => {
  broker = await startBroker()
})
t.teardown(async () => broker.close())

for (const { mqttVersion, label } of MQTT_VERSIONS) {
  t.test(`${label}: receipts signed by the device and attestations by a pinned validator kept; forgeries refused and counted`, async t => {
    if (mqttVersion === 5 && !broker.mqtt5) return t.comment('SKIPPED: MQTT 5 needs mosquitto; the aedes fallback speaks 3.1.1 only')
    const fleet = `sig${mqttVersion}`
    const device = generateKeyPair()
    const dispatcher = generateKeyPair()
    const pinned = generateKeyPair()
    const stranger = generateKeyPair()
    const dev = device.keyId
    const pub = await mqtt.connectAsync(broker.url, { protocolVersion: mqttVersion })
    t.teardown(() => pub.endAsync(true))
    const now = Date.now()
    // the device, known to the registry before the service starts (a retained status), and
    // an attestation published before it too
    const status = {
      v: 1,
      id: newId(now),
      device: dev,
      fleet,
      state: 'online',
      ts: now,
      since: now,
      conn: now,
      version: '1.0.0',
      board: 'rpi5',
      model: 'Pi 5',
      mqtt: mqttVersion,
      publicKey: publicKeyPem(device.publicKey),
    }
    await pub.publishAsync(`cairn/v1/${fleet}/${dev}/status`, JSON.stringify(status), { qos: 1, retain: true })
    const early = attestation(pinned, fleet, dev, 41, 950_000)
    await pub.publishAsync(`cairn/v1/${fleet}/attestation/${pinned.keyId}/${dev}`, JSON.stringify(early), { qos: 1, retain: true })
    t.teardown(() => pub.publishAsync(`cairn/v1/${fleet}/attestation/${pinned.keyId}/${dev}`, '', { qos: 1, retain: true }).then(() => undefined))

    const { svc, base } = await startTestService(t, { broker, fleet, mqttVersion, shareGroup: `g${fleet}`, validators: [pinned.keyId] })
    const get = async (path: string) => (await (await fetch(`${base}${path}`)).json()) as Record<string, unknown>
    await until(async () => ((await get(`/api/v1/devices/${dev}/attestations`)).items as unknown[])?.length === 1, 30_000, 'the retained attestation, in a share group')
    t.pass('an attestation retained before the service started: kept (attestations are not taken through the share group)')

    const topic = `cairn/v1/${fleet}/${dev}/task/receipt`
    const good = receipt(device, fleet, dispatcher, 'task-0001')
    await pub.publishAsync(topic, JSON.stringify(good), { qos: 1 })
    await pub.publishAsync(topic, JSON.stringify(receipt(device, fleet, dispatcher, 'task-0002', stranger)), { qos: 1 })
    const altered = receipt(device, fleet, dispatcher, 'task-0003')
    await pub.publishAsync(topic, JSON.stringify({ ...altered, body: { ...(altered.body as Record<string, unknown>), attempts: 2 } }), { qos: 1 })
    await pub.publishAsync(topic, JSON.stringify(good), { qos: 1 })
    await pub.publishAsync(`cairn/v1/${fleet}/attestation/${pinned.keyId}/${dev}`, JSON.stringify(attestation(pinned, fleet, dev, 42, 990_000)), { qos: 1 })
    await pub.publishAsync(`cairn/v1/${fleet}/attestation/${stranger.keyId}/${dev}`, JSON.stringify(attestation(stranger, fleet, dev, 42, 1_000_000)), { qos: 1 })
    await pub.publishAsync(`cairn/v1/${fleet}/attestation/${pinned.keyId}/${dev}`, JSON.stringify(attestation(pinned, fleet, dev, 43, 1_000_000, dispatcher.keyId)), { qos: 1 })

    await until(
      async () => {
        const r = await get(`/api/v1/devices/${dev}/receipts`)
        const a = await get(`/api/v1/devices/${dev}/attestations`)
        return (r.refused as { count?: number } | null)?.count === 2 && (a.refused as { count?: number } | null)?.count === 2 && (a.items as unknown[]).length === 2
      },
      30_000,
      'two receipts and two attestations refused, two attestations kept',
    )
    const receipts = await get(`/api/v1/devices/${dev}/receipts`)
    t.match(receipts.items, [{ task: 'task-0001', type: 'cache', outcome: 'done', dispatcher: dispatcher.keyId, payload: good }], 'the genuine receipt, once (sent twice), with its signed bytes')
    t.equal((receipts.items as unknown[]).length, 1)
    t.match(receipts.refused, { count: 2, lastReason: /BAD_SIGNATURE/ }, 'a receipt signed by another key and an altered one: refused, counted')
    const atts = await get(`/api/v1/devices/${dev}/attestations`)
    t.match(
      atts.items,
      [
        { validator: pinned.keyId, epoch: 42, score: 990_000, fraud: false },
        { validator: pinned.keyId, epoch: 41, score: 950_000, payload: early },
      ],
      'the pinned validator’s score per epoch, newest first',
    )
    t.match(atts.refused, { count: 2, lastReason: /WRONG_TARGET/ }, 'an unpinned validator’s and one naming another device: refused, counted')
    t.match(svc.signed.stats, { receipts: 1, attestations: 2, refused: 4 })
    t.match(
      await get('/api/v1/validators'),
      { items: [{ validator: pinned.keyId, devices: 1, attestations: 2, lastEpoch: 42, meanScore: 970_000 }], refused: 2 },
      'the validators page: the pinned one, what it attested, and the refusals',
    )
  })
}
