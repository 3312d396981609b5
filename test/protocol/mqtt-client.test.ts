// The MQTT client factory against a real Mosquitto: both protocol versions connect, an
// MQTT 5 client's Maximum Packet Size makes the broker hold back larger messages, and
// every (re)connected socket has TCP_NODELAY set, and beforeAck holds the PUBACK
// until the handler is done in both protocol versions, one message at a time or several
// in flight (PUBACKs then in order, each once its message and those before it are done).

import t, { type Test } from 'tap'
import { Socket } from 'node:net'
import type { MqttClient } from 'mqtt'
import { connectMqtt, connectMqttAsync, mqttClientOptions, toolClientOptions } from '../../protocol/mqtt-client.js'
import { startBroker, type TestBroker } from '../helpers/broker.js'
import { until } from '../helpers/agent.js'

let broker: TestBroker
t.before(async () => {
  broker = await startBroker()
})
t.teardown(async () => broker.close())

/** The largest packet size MQTT 5 can express (a Variable Byte Integer of 4 bytes). */
const MQTT_LARGEST_PACKET = 268_435_455

const ended = (c: MqttClient) => new Promise<void>(r => c.end(true, {}, () => r()))

t.test('MQTT 5 and 3.1.1 connect, with the tool options, and carry messages', async t => {
  for (const mqttVersion of [5, 4] as const) {
    const c = await connectMqttAsync({ url: broker.url, base: toolClientOptions({ url: broker.url, mqttVersion }), reconnectPeriodMs: 0, maximumPacketSize: 1 << 20 })
    t.teardown(() => ended(c))
    t.equal(c.options.protocolVersion, mqttVersion, `protocol version ${mqttVersion}`)
    t.equal(c.options.reconnectPeriod, 0, 'one-shot: no reconnect')
    const got = new Promise<string>(r => c.once('message', (_topic, payload) => r(payload.toString())))
    await c.subscribeAsync(`factory/${mqttVersion}`, { qos: 1 })
    await c.publishAsync(`factory/${mqttVersion}`, 'hello', { qos: 1 })
    t.equal(await got, 'hello')
  }
  t.notOk(mqttClientOptions({ url: broker.url, mqttVersion: 4, maximumPacketSize: 1000, sessionExpiryS: 60, reconnectPeriodMs: 0 }).properties, 'a 3.1.1 CONNECT has no properties')
})

t.test('MQTT 5 Maximum Packet Size: the broker does not send a larger message', async t => {
  const topic = 'factory/big'
  const pub = await connectMqttAsync({ url: broker.url, mqttVersion: 5, reconnectPeriodMs: 0, maximumPacketSize: 1 << 20 })
  t.teardown(() => ended(pub))
  const receive = async (maximumPacketSize: number) => {
    const c = await connectMqttAsync({ url: broker.url, mqttVersion: 5, reconnectPeriodMs: 0, maximumPacketSize })
    t.teardown(() => ended(c))
    const sizes: number[] = []
    c.on('message', (_topic, payload) => sizes.push(payload.length))
    await c.subscribeAsync(topic, { qos: 1 })
    return { c, sizes }
  }
  const limited = await receive(1024)
  const open = await receive(MQTT_LARGEST_PACKET)
  t.equal(limited.c.options.properties?.maximumPacketSize, 1024, 'the CONNECT carries it')
  // The broker keeps the order of one publisher's messages: once the small one that
  // followed the big one has arrived, the big one would have arrived before it.
  await pub.publishAsync(topic, Buffer.alloc(2000, 0x61), { qos: 1 })
  await pub.publishAsync(topic, Buffer.alloc(10, 0x62), { qos: 1 })
  await until(() => limited.sizes.includes(10) && open.sizes.includes(10), 5000, 'the small message at both')
  t.same(open.sizes, [2000, 10], 'with the largest limit MQTT allows both arrive')
  t.same(limited.sizes, [10], 'with a 1024-byte limit the 2000-byte message is held back')
})

t.test('TCP_NODELAY on the socket of every connection, reconnects included', async t => {
  const b = await startBroker()
  t.teardown(() => b.close())
  const calls: Array<{ socket: Socket; on: boolean }> = []
  const original = Socket.prototype.setNoDelay
  Socket.prototype.setNoDelay = function (this: Socket, on?: boolean) {
    calls.push({ socket: this, on: on !== false })
    return original.call(this, on)
  }
  t.teardown(() => {
    Socket.prototype.setNoDelay = original
  })
  const c = connectMqtt({ url: b.url, mqttVersion: 5, reconnectPeriodMs: 100, maximumPacketSize: 1 << 20 })
  t.teardown(() => ended(c))
  let connects = 0
  c.on('connect', () => connects++)
  await until(() => connects === 1, 5000, 'connected')
  const first = c.stream as unknown as Socket
  t.ok(
    calls.some(x => x.socket === first && x.on),
    'set on the first socket',
  )
  await b.stop()
  await b.start()
  await until(() => connects === 2, 10_000, 'reconnected')
  const second = c.stream as unknown as Socket
  t.not(second, first, 'a new socket')
  t.ok(
    calls.some(x => x.socket === second && x.on),
    'set on the new socket too',
  )
})

// The guarantee the validator's store-then-ack rests on. mqtt.js's customHandleAcks
// gives it on MQTT 5 only; this must hold on 3.1.1 too.
type OnMessage = (payload: string, ack: (err?: Error) => void) => void

/** A persistent session (what is left unacknowledged waits at the broker) handing each
 * message to `onMessage` through beforeAck; it records the PUBACKs it sends, by payload,
 * in the order they went out. The subscription stays with the session: made once. */
async function persistentSession(t: Test, o: { mqttVersion: 4 | 5; clientId: string; topic: string; subscribe: boolean; inFlight?: number }, onMessage: OnMessage) {
  const carried = new Map<number, string>()
  const pubacks: string[] = []
  const c = connectMqtt({
    url: broker.url,
    mqttVersion: o.mqttVersion,
    clientId: o.clientId,
    clean: false,
    sessionExpiryS: 300,
    maximumPacketSize: 1 << 20,
    reconnectPeriodMs: 0,
    ...(o.inFlight !== undefined ? { inFlight: o.inFlight } : {}),
    beforeAck: (packet, ack) => {
      carried.set(packet.messageId!, packet.payload.toString())
      onMessage(packet.payload.toString(), ack)
    },
  })
  c.on('packetsend', p => {
    if (p.cmd === 'puback') pubacks.push(carried.get(p.messageId!) ?? `?${p.messageId}`)
  })
  let closing: Promise<void> | undefined
  const close = () => (closing ??= ended(c))
  t.teardown(close)
  await new Promise(r => c.once('connect', r))
  if (o.subscribe) await c.subscribeAsync(o.topic, { qos: 1 })
  return { c, close, pubacks }
}

t.test('beforeAck: a message is acknowledged only once handled, in MQTT 5 and 3.1.1', async t => {
  for (const mqttVersion of [5, 4] as const) {
    const topic = `factory/ack/${mqttVersion}`
    const clientId = `ack-test-${mqttVersion}`
    const session = async (onMessage: OnMessage) => (await persistentSession(t, { mqttVersion, clientId, topic, subscribe: true }, onMessage)).close
    const pub = await connectMqttAsync({ url: broker.url, mqttVersion, reconnectPeriodMs: 0, maximumPacketSize: 1 << 20 })
    t.teardown(() => ended(pub))

    const held: string[] = []
    const first = await session(payload => held.push(payload)) // never acknowledges
    await pub.publishAsync(topic, 'one', { qos: 1 })
    await until(() => held.length === 1, 5000, 'the message at the handler')
    await first()

    const again: string[] = []
    const second = await session((payload, ack) => {
      again.push(payload)
      if (payload === 'two')
        ack(new Error('not kept')) // refused: stays unacknowledged
      else ack()
    })
    await until(() => again.includes('one'), 5000, 'the unacknowledged message delivered again')
    await pub.publishAsync(topic, 'two', { qos: 1 })
    await until(() => again.includes('two'), 5000, 'the second message')
    await second()

    const third: string[] = []
    const last = await session((payload, ack) => {
      third.push(payload)
      ack()
    })
    await pub.publishAsync(topic, 'three', { qos: 1 })
    await until(() => third.includes('three'), 5000, 'the marker message')
    t.same(third, ['two', 'three'], `MQTT ${mqttVersion === 5 ? '5' : '3.1.1'}: only what was not acknowledged came back`)
    await last()
  }
})

t.test('beforeAck with several in flight: read on while storing, each PUBACK once handled and in order, in MQTT 5 and 3.1.1', async t => {
  for (const mqttVersion of [5, 4] as const) {
    const label = mqttVersion === 5 ? 'MQTT 5' : 'MQTT 3.1.1'
    const topic = `factory/pipeline/${mqttVersion}`
    const clientId = `pipeline-test-${mqttVersion}`
    const session = (onMessage: OnMessage, subscribe = false) => persistentSession(t, { mqttVersion, clientId, topic, subscribe, inFlight: 8 }, onMessage)
    const pub = await connectMqttAsync({ url: broker.url, mqttVersion, reconnectPeriodMs: 0, maximumPacketSize: 1 << 20 })
    t.teardown(() => ended(pub))
    const names = Array.from({ length: 20 }, (_, i) => `m${String(i).padStart(2, '0')}`)

    // eight at the handler at once; m01…m07 handled, m00 (the first) not: no PUBACK may go
    const held = new Map<string, (err?: Error) => void>()
    const first = await session((payload, ack) => held.set(payload, ack), true)
    for (const n of names) await pub.publishAsync(topic, n, { qos: 1 })
    await until(() => held.size === 8, 10_000, 'eight messages at the handler at once')
    t.same([...held.keys()], names.slice(0, 8), `${label}: the first eight, in order, while none is handled`)
    for (const n of names.slice(1, 8)) held.get(n)!()
    await first.close()

    // everything comes again: m00 unhandled, and m01…m07, handled but behind it
    const again: string[] = []
    const second = await session((payload, ack) => {
      again.push(payload)
      setTimeout(() => ack(), payload === 'm03' ? 50 : 0) // out of order: m03 last of its batch
    })
    await until(() => names.every(n => again.includes(n)), 10_000, 'all twenty')
    await until(() => second.pubacks.length === names.length, 10_000, 'twenty PUBACKs')
    t.same(second.pubacks, names, `${label}: the PUBACKs went out in the order the messages came, m03's (handled last of its batch) holding those after it`)
    t.same(
      again.filter(n => n.startsWith('m')),
      names,
      `${label}: the eight held came again (their PUBACKs had not gone), then the rest, each once`,
    )
    // one given up: the connection drops and it comes again
    let gaveUp = false
    await pub.publishAsync(topic, 'bad', { qos: 1 })
    await until(() => again.includes('bad'), 10_000, 'the message to give up on')
    await second.close()

    const third: string[] = []
    const last = await session((payload, ack) => {
      third.push(payload)
      if (payload === 'bad' && !gaveUp && third.length === 1) {
        gaveUp = true
        return ack(new Error('not kept'))
      }
      ack()
    })
    await until(() => gaveUp, 10_000, 'given up once')
    await until(() => last.c.disconnected || !last.c.connected, 10_000, 'the connection dropped')
    await last.close()
    const fourth: string[] = []
    const marker = await session((payload, ack) => {
      fourth.push(payload)
      ack()
    })
    await pub.publishAsync(topic, 'marker', { qos: 1 })
    await until(() => fourth.includes('marker'), 10_000, 'the marker')
    t.same(fourth, ['bad', 'marker'], `${label}: what was given up came again; nothing handled came again`)
    await marker.close()
  }
})
