// Honest devices that only lost their broker, crashed or restarted: a real validator on
// Mosquitto, a real agent (in this process, or the bundle in a process of its own that
// is killed with SIGKILL and stopped with SIGTERM), in MQTT 5 and 3.1.1. None of it may
// yield a single evidence row or evidence message.

import t, { type Test } from 'tap'
import { spawn, type ChildProcess } from 'node:child_process'
import { join } from 'node:path'
import { loadOrCreateIdentity } from '../../protocol/identity.js'
import type { ScoreParams } from '../../protocol/proof-format.js'
import { DEFAULT_WEIGHTS } from '../../validator/score.js'
import { validatorKey } from '../../validator/validator-cli.js'
import type { Validator } from '../../validator/validator.js'
import { startBroker, type TestBroker } from '../helpers/broker.js'
import { testValidator } from '../helpers/validator.js'
import { MQTT_VERSION_NUMBERS, versionName, type MqttVersion } from '../helpers/mqtt-versions.js'
import { Consumer, startTestAgent, tmp, until } from '../helpers/agent.js'

const bundle = new URL('../../dist/cairn.mjs', import.meta.url).pathname
const FLEET = 'test'
const params: ScoreParams = { slotMs: 1000, epochSlots: 4, maxAgeMs: 1000, skewMs: 30_000, ...DEFAULT_WEIGHTS }

/** A validator with a persistent session (nothing is lost while the broker restarts),
 * and a persistent watcher of its evidence topic. */
async function validatorAndWatcher(t: Test, broker: TestBroker, mqttVersion: MqttVersion, name: string) {
  const vdir = tmp('cairn-val-')
  const key = validatorKey(vdir)
  const validator = testValidator(t, broker.url, { stateDir: vdir, key, params, fleet: FLEET, shareGroup: null, instance: name, mqttVersion })
  await validator.start()
  const evidence = await Consumer.connect(broker.url, `cairn/v1/${FLEET}/evidence/${key.keyId}`, {
    protocolVersion: mqttVersion,
    clientId: `honest-evidence-${name}`,
    clean: false,
    ...(mqttVersion === 5 ? { properties: { sessionExpiryInterval: 600 } } : {}),
  })
  t.teardown(() => evidence.close())
  return { validator, evidence, pub: join(vdir, 'validator.key.pub') }
}

const stored = (v: Validator, device: string) => (v.db.prepare('SELECT COUNT(*) AS n FROM heartbeats WHERE device = ?').get(device) as { n: number }).n
const evidenceRows = (v: Validator) => v.db.prepare('SELECT kind, device FROM evidence').all() as Array<{ kind: string; device: string }>

for (const mqttVersion of MQTT_VERSION_NUMBERS) {
  t.test(`a device that lost its broker for a while: no evidence (${versionName(mqttVersion)})`, async t => {
    const broker = await startBroker()
    t.teardown(() => broker.close())
    const { validator, evidence, pub } = await validatorAndWatcher(t, broker, mqttVersion, `outage${mqttVersion}`)
    // The device comes back seconds after the validator (its first retry is 5-10 s after
    // the drop), which has a new beacon out by then: what it signed meanwhile cites the
    // last beacon it saw and reaches the validator seconds late (the reported case).
    const a = await startTestAgent({
      url: broker.url,
      mqttVersion,
      values: {
        broker: { url: broker.url, mqttVersion, reconnectMinMs: 10_000, reconnectMaxMs: 10_000 },
        proof: { validatorKeys: [pub], jitterMs: 0, periodS: 1 },
        log: { level: 'warn' },
      },
    })
    t.teardown(() => a.stop())
    const device = a.agent.deviceId
    await until(() => stored(validator, device) >= 3, 10_000, 'three heartbeats stored')

    await broker.stop('SIGTERM')
    const offlineFrom = a.agent.proofs!.head()!.seq
    const down = Date.now()
    await until(() => a.agent.proofs!.head()!.seq >= offlineFrom + 2, 10_000, 'two heartbeats signed while the broker is down')
    await broker.start()
    const beaconAfter = () => validator.db.prepare('SELECT 1 FROM beacons WHERE published > ?').get(down) !== undefined
    await until(() => beaconAfter(), 10_000, 'the validator back, with a new beacon')
    t.notOk(a.agent.link.connected, 'the device is still away')
    await until(() => a.agent.link.connected, 15_000, 'the agent back on the broker')
    const back = a.agent.proofs!.head()!.seq
    await until(() => (validator.db.prepare('SELECT MAX(seq) AS s FROM heartbeats WHERE device = ?').get(device) as { s: number }).s >= back + 3, 15_000, 'heartbeats after the outage stored')

    t.same(evidenceRows(validator), [], 'no evidence rows')
    t.equal(validator.snapshot().evidence, 0, 'no evidence published')
    t.equal(evidence.messages.length, 0, 'nothing on the evidence topic')
    await until(() => stored(validator, device) >= a.agent.proofs!.head()!.seq + 1, 10_000, 'every heartbeat it signed stored, the outage included')
  })

  t.test(`a device killed with SIGKILL and restarted, then restarted cleanly: no evidence (${versionName(mqttVersion)})`, async t => {
    const broker = await startBroker()
    t.teardown(() => broker.close())
    const { validator, evidence, pub } = await validatorAndWatcher(t, broker, mqttVersion, `crash${mqttVersion}`)
    const stateDir = tmp('cairn-state-')
    const device = loadOrCreateIdentity(stateDir).identity.deviceId
    const args = [
      ...['agent', '--broker', broker.url, '--fleet', FLEET, '--state-dir', stateDir, '--mqtt-version', String(mqttVersion)],
      ...['--validator-key', pub, '--proof-period', '1', '--set', 'proof.jitterMs=0', '--health-port', '0', '--telemetry-period', '3600', '--log-level', 'warn'],
    ]
    let child: ChildProcess | undefined
    const run = () => {
      const c = spawn(process.execPath, [bundle, ...args], { stdio: 'ignore' })
      child = c
      return new Promise<number | null>(r => c.once('exit', code => r(code)))
    }
    t.teardown(() => child?.kill('SIGKILL'))
    const more = async (n: number, what: string) => {
      const from = stored(validator, device)
      await until(() => stored(validator, device) >= from + n, 20_000, what)
    }

    // Killed just after a heartbeat is stored, its PUBACK not yet recorded in the agent's
    // outbox (acknowledgements are written once a second): the restarted agent sends it
    // again. Up to three tries, since a kill can land just after that write.
    let exited = run()
    await more(3, 'three heartbeats from the agent')
    for (let i = 0; i < 3 && validator.snapshot().duplicates === 0; i++) {
      await more(1, 'a new heartbeat')
      child!.kill('SIGKILL')
      await exited
      exited = run()
      await more(3, 'heartbeats from the restarted agent')
    }
    t.ok(validator.snapshot().duplicates >= 1, `the restarted agent resent what it had not recorded as acknowledged (${validator.snapshot().duplicates} copies)`)

    child!.kill('SIGTERM')
    t.equal(await exited, 0, 'SIGTERM stops the agent cleanly')
    exited = run()
    await more(3, 'heartbeats after a clean restart')

    t.same(evidenceRows(validator), [], 'no evidence rows')
    t.equal(validator.snapshot().evidence, 0, 'no evidence published')
    t.equal(evidence.messages.length, 0, 'nothing on the evidence topic')
    const seqs = validator.db.prepare('SELECT seq, COUNT(*) AS n FROM heartbeats WHERE device = ? GROUP BY seq HAVING n > 1').all(device)
    t.same(seqs, [], 'one heartbeat per seq: no restart signed a seq twice')
  })
}
