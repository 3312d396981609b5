// Baseline for the outbox drain: a raw mqtt.js QoS 1 publish loop of N ~300-byte
// payloads with at most WINDOW unacknowledged (Mosquitto's receive-maximum is 20).
//   node bench/baseline-publish.mjs URL TOPIC N [WINDOW] [PAYLOAD_BYTES]
// Prints "connected" on CONNACK and "done <ms>" when every PUBACK is in, then waits for SIGTERM.
import mqtt from 'mqtt'

const [url, topic, nArg, wArg, sizeArg] = process.argv.slice(2)
const n = Number(nArg)
const window = Number(wArg ?? 20)
if (!url || !topic || !(n > 0)) {
  process.stderr.write('usage: baseline-publish.mjs URL TOPIC N [WINDOW]\n')
  process.exit(2)
}
const size = Number(sizeArg ?? 300)
// Padded so each payload is about PAYLOAD_BYTES long, like the agent's.
const payload = i => {
  const msg = { v: 1, id: `base-${i}`, device: 'baseline', ts: Date.now(), kind: 'bench', data: { i, pad: '' } }
  msg.data.pad = 'x'.repeat(Math.max(0, size - JSON.stringify(msg).length))
  return Buffer.from(JSON.stringify(msg))
}
const client = mqtt.connect(url, { protocolVersion: 5, keepalive: 30, reconnectPeriod: 1000 })
client.once('connect', () => {
  process.stdout.write('connected\n')
  const t0 = Date.now()
  let next = 0
  let acked = 0
  let inflight = 0
  const pump = () => {
    while (inflight < window && next < n) {
      const i = next++
      inflight++
      client.publish(topic, payload(i), { qos: 1 }, err => {
        inflight--
        if (err) process.stderr.write(`publish ${i}: ${err.message}\n`)
        if (++acked === n) process.stdout.write(`done ${Date.now() - t0}\n`)
        pump()
      })
    }
  }
  pump()
})
client.on('error', err => process.stderr.write(`baseline-publish: ${err.message}\n`))
const stop = () => client.end(false, {}, () => process.exit(0))
process.on('SIGTERM', stop)
process.on('SIGINT', stop)
