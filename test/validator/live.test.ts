// A real agent and a real validator on Mosquitto with short slots: beacons, heartbeats,
// a challenge, an attestation, and `cairn validator export` + `cairn verify`
// reproducing the attested score exactly; in MQTT 5 and in 3.1.1.

import t from 'tap'
import { execFileSync } from 'node:child_process'
import { createHash } from 'node:crypto'
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { validatorKey } from '../../validator/validator-cli.js'
import { DEFAULT_WEIGHTS } from '../../validator/score.js'
import type { Attestation } from '../../protocol/proof-format.js'
import { startBroker } from '../helpers/broker.js'
import { testValidator } from '../helpers/validator.js'
import { MQTT_VERSION_NUMBERS } from '../helpers/mqtt-versions.js'
import { Consumer, startTestAgent, tmp, until } from '../helpers/agent.js'

const CLI = join(import.meta.dirname, '../../dist/cairn.mjs')

for (const mqttVersion of MQTT_VERSION_NUMBERS) {
  t.test(`device and validator: beacons, heartbeats, challenge, attestation, export, verify (MQTT ${mqttVersion === 5 ? '5' : '3.1.1'})`, async t => {
    const broker = await startBroker()
    t.teardown(() => broker.close())
    const vdir = tmp('cairn-val-')
    const key = validatorKey(vdir)
    const params = { slotMs: 2000, epochSlots: 4, maxAgeMs: 2000, skewMs: 30_000, ...DEFAULT_WEIGHTS }
    const validator = testValidator(t, broker.url, { stateDir: vdir, key, params, mqttVersion })
    await validator.start()
    const a = await startTestAgent({ url: broker.url, mqttVersion, values: { proof: { validatorKeys: [join(vdir, 'validator.key.pub')], jitterMs: 0, owner: 'payout:alice' } } })
    t.teardown(() => a.stop())
    const device = a.agent.deviceId

    // The first epoch that starts after the device is up is fully covered.
    const firstFull = Math.floor(Math.floor(Date.now() / params.slotMs) / params.epochSlots) + 1
    const watcher = await Consumer.connect(broker.url, `cairn/v1/test/${device}/proof`, { protocolVersion: mqttVersion })
    t.teardown(() => watcher.close())
    await until(() => a.agent.proofs!.head() !== undefined, 5000, 'first heartbeat')
    // A challenge inside the attested epoch, so the export carries it.
    await until(() => Date.now() >= firstFull * params.epochSlots * params.slotMs + 500, 20_000, 'the epoch to begin')
    const ch = validator.challenge(device)
    await until(() => validator.snapshot().responses === 1, 5000, 'challenge response')
    t.equal(validator.snapshot().responses, 1, 'the device answered the challenge')

    const row = () => validator.db.prepare('SELECT payload FROM attestations WHERE device = ? AND epoch = ?').get(device, firstFull) as { payload: Buffer } | undefined
    await until(() => row() !== undefined, 30_000, `attestation for epoch ${firstFull}`)
    const att = JSON.parse(row()!.payload.toString()) as Attestation
    t.equal(att.body.counts.slotsLive, 4, 'the validator beaconed every slot')
    t.equal(att.body.counts.slotsCovered, 4, 'every slot covered by a fresh heartbeat')
    t.equal(att.body.fraud, false)
    t.equal(att.body.owner, 'payout:alice', 'the owner named by the device')
    t.equal(att.body.score, 1_000_000, 'full score')
    t.equal(validator.snapshot().evidence, 0, 'no evidence against an honest device')

    const out = join(vdir, 'export.json')
    const exp = execFileSync(process.execPath, [CLI, 'validator', 'export', '--state-dir', vdir, '--device', device, '--epoch', String(firstFull), '--out', out], { encoding: 'utf8' })
    t.match(exp, /score 1000000 ppm/)
    const ver = execFileSync(process.execPath, [CLI, 'verify', out], { encoding: 'utf8' })
    t.match(ver, /score: 1000000 ppm/)
    t.match(ver, /OK\n$/)
    t.match(ver, /challenges 1\/1 passed/, 'the challenge is in the export and passed')
    const x = JSON.parse(readFileSync(out, 'utf8')) as { heartbeats: unknown[]; challenges: Array<{ challenge: { id: string } }> }
    t.ok(x.heartbeats.length >= 4, 'the export carries the heartbeats')
    t.same(
      x.challenges.map(c => c.challenge.id),
      [ch.id],
    )
    const pinned = execFileSync(process.execPath, [CLI, 'verify', out, '--validator', join(vdir, 'validator.key.pub')], { encoding: 'utf8' })
    t.notMatch(pinned, /WARNING/, 'pinned to the validator key file')
    t.match(ver, /WARNING: validator key not pinned/)

    // The OpenSSL-only recipe of docs/proofs.md verifies a heartbeat exactly as it came
    // off the broker.
    const live = watcher.messages.find(m => m.json?.type === 'proof.heartbeat')!
    const dir = tmp('cairn-ossl-live-')
    writeFileSync(join(dir, 'hb.json'), live.payload)
    const doc = readFileSync(new URL('../../docs/proofs.md', import.meta.url), 'utf8')
    const recipe = /```sh\n(# recipe: verify hb\.json[\s\S]*?)```/.exec(doc)![1]!
    const res = execFileSync('bash', ['-c', recipe], { cwd: dir, encoding: 'utf8' })
    t.match(res, /Signature Verified Successfully/)
    t.match(res, createHash('sha256').update(live.payload).digest('hex'), 'the recipe prints the message hash')
  })
}
