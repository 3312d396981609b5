// Baseline for the benchmarks: a bare Node process holding one mqtt.js connection.
//   node bench/baseline-idle.mjs URL                 hold the connection (idle RSS/CPU)
//   node bench/baseline-idle.mjs URL --once TOPIC    also publish one QoS 1 message on connect (start-up time)
import mqtt from 'mqtt'

const [url, flag, topic] = process.argv.slice(2)
if (!url) {
  process.stderr.write('usage: baseline-idle.mjs URL [--once TOPIC]\n')
  process.exit(2)
}
const client = mqtt.connect(url, { protocolVersion: 5, keepalive: 30, reconnectPeriod: 1000 })
client.on('connect', () => {
  process.stdout.write('connected\n')
  if (flag === '--once' && topic) client.publish(topic, JSON.stringify({ id: 'baseline', ts: Date.now() }), { qos: 1 })
})
client.on('error', err => process.stderr.write(`baseline: ${err.message}\n`))
const stop = () => client.end(false, {}, () => process.exit(0))
process.on('SIGTERM', stop)
process.on('SIGINT', stop)
