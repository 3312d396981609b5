// A real Validator for tests, on the test broker with short timeouts and a quiet log;
// stopped when the test ends.

import type { Test } from 'tap'
import { systemClock } from '../../protocol/clock.js'
import { createLogger } from '../../protocol/log.js'
import { toolClientOptions } from '../../protocol/mqtt-client.js'
import { Validator, type ValidatorOptions } from '../../validator/validator.js'

export function testValidator(t: Test, url: string, o: Pick<ValidatorOptions, 'stateDir' | 'key' | 'params'> & Partial<ValidatorOptions>): Validator {
  const v = new Validator({
    brokerUrl: url,
    mqtt: toolClientOptions({ url, mqttVersion: 5, connectTimeoutMs: 5000 }),
    fleet: 'test',
    instance: 'a',
    shareGroup: 'val',
    challengesPerEpoch: 0,
    challengeTimeoutMs: 1500,
    clock: systemClock,
    log: createLogger({ level: 'warn', out: { write: () => true } }),
    ...o,
  })
  t.teardown(() => v.stop())
  return v
}
