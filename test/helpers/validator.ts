// A real Validator for tests, on the test broker with short timeouts and a quiet log;
// stopped when the test ends. Validator tests run once per MQTT protocol version
// (test/helpers/mqtt-versions.ts), since clustered brokers speak only 3.1.1.

import type { Test } from 'tap'
import { systemClock } from '../../protocol/clock.js'
import { createLogger } from '../../protocol/log.js'
import { toolClientOptions } from '../../protocol/mqtt-client.js'
import { Validator, type ValidatorOptions } from '../../validator/validator.js'

import type { MqttVersion } from './mqtt-versions.js'

export function testValidator(t: Test, url: string, o: Pick<ValidatorOptions, 'stateDir' | 'key' | 'params'> & Partial<ValidatorOptions> & { mqttVersion?: MqttVersion }): Validator {
  const { mqttVersion = 5, ...rest } = o
  const v = new Validator({
    brokerUrl: url,
    mqtt: toolClientOptions({ url, mqttVersion, connectTimeoutMs: 5000 }),
    fleet: 'test',
    instance: 'a',
    shareGroup: 'val',
    challengesPerEpoch: 0,
    challengeTimeoutMs: 1500,
    clock: systemClock,
    log: createLogger({ level: 'warn', out: { write: () => true } }),
    ...rest,
  })
  t.teardown(() => v.stop())
  return v
}
