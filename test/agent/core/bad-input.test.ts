// Hostile input on the command topics: thousands of random, malformed, oversized and
// forged messages. The agent answers or drops each, keeps working, and its memory
// stays bounded; junk never reaches the durable outbox.

import t from 'tap'
import { randomBytes } from 'node:crypto'
import { startBroker, type TestBroker } from '../../helpers/broker.js'
import { Consumer, operatorKey, sleep, startTestAgent, tmp, until } from '../../helpers/agent.js'
import { sendCommand, signCommand } from '../../../fleet/command-client.js'

let broker: TestBroker
t.before(async () => {
  broker = await startBroker({ extraConfig: 'max_queued_messages 100000' })
})
t.teardown(async () => broker.close())

t.test('a flood of bad input: the agent survives, memory stays bounded, the outbox stays empty', async t => {
  const dir = tmp()
  const op = operatorKey(dir)
  const stranger = operatorKey(dir, 'stranger')
  const a = await startTestAgent({ url: broker.url, operatorKeys: [op.pub], mqttVersion: 4, values: { log: { level: 'error' } } })
  t.teardown(() => a.stop())
  await until(() => a.agent.link.connected, 5000, 'connected')
  const id = a.agent.deviceId
  const c = await Consumer.connect(broker.url, [], { protocolVersion: 4 })
  t.teardown(() => c.close())
  const valid = signCommand({ fleet: 'test', device: id, name: 'ping', body: {}, key: op, ttlMs: 60_000 })
  const generators: Array<() => string | Buffer> = [
    () => randomBytes(1 + Math.floor(Math.random() * 512)),
    () => '{"v":1,"type":"cmd.ping"',
    () => JSON.stringify({ ...valid, body: { x: 1 } }),
    () => JSON.stringify({ ...valid, iat: 'yesterday' }),
    () => JSON.stringify(signCommand({ fleet: 'test', device: id, name: 'ping', body: {}, key: stranger, ttlMs: 60_000 })),
    () => JSON.stringify(valid), // replays after the first
    () => Buffer.alloc(100_000, 0x20),
    () => JSON.stringify({ a: { b: { c: [1, 2, 3, { d: 'x'.repeat(1000) }] } } }),
    () => 'null',
  ]
  const names = ['ping', 'reboot', 'set-config', 'unknown-thing', 'x'.repeat(60)]
  const rssBefore = process.memoryUsage().rss
  const rounds = 3000
  for (let i = 0; i < rounds; i++) {
    const payload = generators[i % generators.length]!()
    await c.client.publishAsync(`cairn/v1/test/${id}/cmd/${names[i % names.length]}`, payload, { qos: i % 2 === 0 ? 1 : 0 })
    if (i % 500 === 0) await sleep(10)
  }
  await sleep(1000)
  const rssGrowthMb = (process.memoryUsage().rss - rssBefore) / 1048576
  t.comment(`rss growth of the test process (agent, broker client, consumer) over ${rounds} bad messages: ${rssGrowthMb.toFixed(1)} MB`)
  t.ok(rssGrowthMb < 100, 'memory stays bounded')
  t.equal(a.agent.outbox.depth(), 0, 'refusals of unauthenticated input never queue in the outbox')
  t.ok((a.agent.metrics.get('cairn_replies_suppressed_total') ?? 0) > 0, 'refusal replies are rate limited')
  t.equal(a.reboots, 0, 'nothing bad was executed')
  const reply = await sendCommand(signCommand({ fleet: 'test', device: id, name: 'ping', body: {}, key: op, ttlMs: 60_000 }), { url: broker.url, mqttVersion: 4, timeoutMs: 8000 })
  t.equal(reply?.status, 'ok', 'and it still answers a genuine command')
})
