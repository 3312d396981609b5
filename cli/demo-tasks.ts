// `npm start` (cairn demo): once the agent is up, act as a dispatcher and run one cache
// task (from a small HTTP origin on 127.0.0.1 started here) and one inference task (the
// shipped demo model on one of its sample images), over MQTT like any dispatcher, and
// print their receipts with the command that re-checks each one offline.

import { createHash, randomBytes } from 'node:crypto'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import type { RunningAgent } from '../agent/agent.js'
import { signEnvelope } from '../protocol/envelope.js'
import { newId } from '../protocol/ids.js'
import type { KeyPair } from '../protocol/keys.js'
import { demoModelPath, demoSamplePath } from '../agent/infer/infer-executor.js'
import { asJson, checkReceipt, encodeTaskMessage, TaskMsg, type TaskRequestBody } from '../protocol/task-format.js'
import { submitTask } from '../fleet/task-cli.js'

export interface DemoTasksOptions {
  agent: RunningAgent
  url: string
  mqttVersion: 4 | 5
  fleet: string
  dispatcher: KeyPair
  /** Where receipts are written. */
  dir: string
  say: (s: string) => void
}

export async function runDemoTasks(o: DemoTasksOptions): Promise<void> {
  const { agent, say } = o
  const tasks = agent.tasks
  if (!tasks) return
  // Ctrl-C during the demo tasks must not wait for them.
  const stop = new AbortController()
  void agent.done.then(() => stop.abort())
  // A loopback origin holding one object, as a CDN or a peer would.
  const object = Buffer.concat([Buffer.from('Cairn demo object, served by a loopback origin.\n'), randomBytes(64 * 1024)])
  const sha = createHash('sha256').update(object).digest('hex')
  const origin = createServer((req, res) => (req.url === `/${sha}` ? res.writeHead(200, { 'content-length': object.length }).end(object) : res.writeHead(404).end()))
  await new Promise<void>(r => origin.listen(0, '127.0.0.1', () => r()))
  const originUrl = `http://127.0.0.1:${(origin.address() as AddressInfo).port}`
  try {
    const until = Date.now() + 60_000
    while ((!agent.link.connected || !tasks.status().types.includes('inference')) && Date.now() < until && !stop.signal.aborted) await new Promise(r => setTimeout(r, 250))
    if (stop.signal.aborted) return
    await one(o, stop.signal, 'cache', { objects: [{ sha256: sha, origins: [`${originUrl}/${sha}`] }] }, 'cache')
    if (agent.cache?.server) say(`  cache     GET ${agent.cache.server.url}/c/${sha}  (Range, ETag; only verified bytes)`)
    const sample = demoSamplePath('circle.png')
    if (!tasks.status().types.includes('inference')) say('  task      inference: no executor (its worker did not start; see the agent log)')
    else if (demoModelPath() === undefined || !existsSync(sample)) say('  task      inference: the demo model is not in this build (npm run build)')
    else if (!stop.signal.aborted)
      await one(o, stop.signal, 'inference', { model: 'demo', input: { image: { data: readFileSync(sample).toString('base64') } }, topK: 2 }, 'inference (demo model, circle.png)')
  } catch (err) {
    say(`  task      demo task failed: ${(err as Error).message}`)
  } finally {
    await new Promise<void>(r => origin.close(() => r()))
  }
}

async function one(o: DemoTasksOptions, signal: AbortSignal, type: TaskRequestBody['type'], params: unknown, what: string): Promise<void> {
  const now = Date.now()
  const body: TaskRequestBody = { task: newId(now), type, params, deadline: now + 60_000, priority: 0 }
  const env = signEnvelope(o.dispatcher, { type: TaskMsg.request, id: newId(now), fleet: o.fleet, sub: o.agent.deviceId, iat: now, exp: now + 120_000, body: asJson(body) })
  o.say(`  task      ${what}: sent ${body.task}`)
  const res = await submitTask(env, { url: o.url, mqttVersion: o.mqttVersion, timeoutMs: 70_000, signal })
  if (signal.aborted) return
  if (res.kind !== 'receipt') {
    o.say(`  task      ${what}: ${res.kind === 'rejected' ? `rejected ${res.update.error?.code}: ${res.update.error?.message}` : 'no receipt in time'}`)
    return
  }
  const r = res.receipt
  checkReceipt(r, { device: o.agent.deviceId, request: env })
  const file = join(o.dir, `receipt-${type}.json`)
  const reqFile = join(o.dir, `request-${type}.json`)
  writeFileSync(file, encodeTaskMessage(r))
  writeFileSync(reqFile, encodeTaskMessage(env))
  const result = r.body.result as { labels?: Array<{ label: string; score: number }> } | null
  const summary = type === 'inference' && result?.labels ? `top label ${result.labels[0]?.label} (${((result.labels[0]?.score ?? 0) * 100).toFixed(1)} %)` : `${r.body.outputs.length} object(s) stored`
  o.say(`  RECEIPT   ${what}: ${r.body.outcome}${r.body.error ? ` ${r.body.error.code}` : ''}, ${summary}, backend ${r.body.backend}, timings ${JSON.stringify(r.body.timings)}`)
  o.say(`            ${encodeTaskMessage(r).toString('utf8')}`)
  o.say(`            → npx cairn task verify ${file} --device ${o.agent.deviceId} --request ${reqFile}`)
}
