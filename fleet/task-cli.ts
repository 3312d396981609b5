// `cairn task submit` (the dispatcher side: sign one request, send it, follow its
// updates, print the receipt) and `cairn task verify` (check a receipt offline).

import { randomBytes } from 'node:crypto'
import { readFileSync, writeFileSync } from 'node:fs'
import { extname } from 'node:path'
import { Command } from 'commander'
import { brokerConnection, withBrokerFlags } from '../protocol/broker-flags.js'
import type { IClientOptions } from 'mqtt'
import type { Json } from '../protocol/canonical.js'
import { signEnvelope, type Envelope } from '../protocol/envelope.js'
import { CairnError, isCairnError } from '../protocol/errors.js'
import { newId } from '../protocol/ids.js'
import { isKeyId, keyIdOf, readKeyPairFile, readPublicKeyFile } from '../protocol/keys.js'
import { connectTool, TOOL_MAX_PACKET_BYTES } from '../protocol/mqtt-client.js'
import { taskTopics } from '../protocol/topics.js'
import { readTaskUpdate } from '../protocol/task-update.js'
import { asJson, checkReceipt, encodeTaskMessage, MAX_PRIORITY, TaskMsg, type TaskReceipt, type TaskRequestBody, type TaskUpdate } from '../protocol/task-format.js'

/** Exit codes of `cairn task submit`, one per way it can end. */
export const SUBMIT_EXIT = { done: 0, error: 1, usage: 2, rejected: 3, failed: 4, cancelled: 5, timeout: 6 } as const

type Out = { write(s: string): unknown }
type Io = { out: Out; err: Out }

const many = (v: string, prev: string[] | undefined): string[] => [...(prev ?? []), v]

/** The option values keyed by flag name (--top-k: 'top-k'), as paramsFromFlags takes them. */
const byFlag = (cmd: Command): Record<string, unknown> => Object.fromEntries(cmd.options.map(o => [o.name(), cmd.getOptionValue(o.attributeName())]))

export function taskCommand(io: Io & { setExitCode(code: number): void }): Command {
  const submit = withBrokerFlags(new Command('submit'))
    .description('sign one task request for a device, send it, follow its updates (on stderr) and print the verified receipt')
    .argument('<device>', 'the device id')
    .requiredOption('--fleet <name>', 'the fleet name')
    .requiredOption('--key <file>', "the dispatcher's private key file (one the device trusts: --dispatcher-key)")
    .requiredOption('--type <type>', 'inference or cache')
    .option('--model <model>', 'inference: demo, or the SHA-256 of a model package', 'demo')
    .option('--model-url <url>', 'inference: where the device may fetch the model package (repeatable)', many)
    .option('--input <file>', 'inference: a .png or .jpg image, or a .json tensor')
    .option('--top-k <n>', 'inference: how many classes to return')
    .option('--cid <id>', 'cache: a content id (sha256 hex or CIDv1) to fetch (repeatable)', many)
    .option('--origin <url>', 'cache: where to fetch from; {cid} or {sha256} in it names each object (repeatable)', many)
    .option('--pin', 'cache: pin the objects (never evicted)')
    .option('--params <json>', 'the params as JSON, instead of the flags above')
    .option('--deadline <s>', 'the task must finish within this many seconds', '60')
    .option('--priority <n>', `0 to ${MAX_PRIORITY}, higher first`, '0')
    .option('--task <id>', 'the task id (default: a new one)')
    .option('--timeout <s>', 'how long to wait for the receipt (default: the deadline + 10 s)')
    .option('--request-out <file>', 'also write the signed request (canonical bytes: its SHA-256 is what the receipt cites)')
    .option('--print', 'print the signed request instead of sending it')
    .addHelpText(
      'after',
      `
Exit codes: 0 done, 1 error, 2 usage, 3 rejected, 4 failed, 5 cancelled, 6 no receipt in time.

Examples:
  cairn task submit <device-id> --broker mqtt://broker:1883 --fleet demo --key dispatcher --type inference --input cat.png --top-k 3
  cairn task submit <device-id> --fleet demo --key dispatcher --type cache --cid <sha256> --origin 'https://mirror.example/{sha256}' --pin`,
    )
    .action(async (device: string, _o: unknown, cmd: Command) => io.setExitCode(await submitCmd(device, byFlag(cmd), io)))
  const verify = new Command('verify')
    .description('check a task receipt offline: its signature, and optionally its device and its request')
    .argument('<receipt-file>', 'the receipt, or what cairn task submit printed')
    .option('--device <id>', "the device's key id, or a file with its public key")
    .option('--request <file>', 'the signed request (cairn task submit --request-out)')
    .addHelpText(
      'after',
      `
Examples:
  cairn task verify receipt.json --device <device-id>
  cairn task verify out.json --device <device-id> --request req.json`,
    )
    .action((file: string, o: { device?: string; request?: string }) => io.setExitCode(verifyReceiptCmd(file, o, io)))
  return new Command('task')
    .description('send a task to a device (inference, cache) as a dispatcher, and check its receipt')
    .addCommand(submit)
    .addCommand(verify)
    .addHelpText(
      'after',
      `
Examples:
  cairn task submit <device-id> --broker mqtt://broker:1883 --fleet demo --key dispatcher --type inference --input cat.png
  cairn task verify receipt.json --device <device-id> --request req.json`,
    )
}

/** The params of a request from the submit flags (or --params as given). */
export function paramsFromFlags(v: Record<string, unknown>): Json {
  if (typeof v.params === 'string') {
    try {
      return JSON.parse(v.params) as Json
    } catch {
      throw new CairnError('BAD_REQUEST', '--params is not JSON')
    }
  }
  if (v.type === 'inference') {
    const model = (v.model as string | undefined) ?? 'demo'
    const urls = (v['model-url'] as string[] | undefined) ?? []
    if (model !== 'demo' && !/^[0-9a-f]{64}$/.test(model)) throw new CairnError('BAD_REQUEST', '--model is demo or a lowercase hex SHA-256')
    const file = v.input as string | undefined
    if (!file) throw new CairnError('BAD_REQUEST', '--input FILE is required for inference (.png, .jpg or a .json tensor)')
    let bytes: Buffer
    try {
      bytes = readFileSync(file)
    } catch (err) {
      throw new CairnError('BAD_REQUEST', `--input ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`)
    }
    let input: Json
    if (extname(file).toLowerCase() === '.json') {
      try {
        const parsed = JSON.parse(bytes.toString('utf8')) as Record<string, Json>
        input = { tensor: (parsed.tensor ?? parsed) as Json }
      } catch {
        throw new CairnError('BAD_REQUEST', `--input ${file}: not JSON`)
      }
    } else input = { image: { data: bytes.toString('base64') } }
    const topK = v['top-k'] === undefined ? undefined : Number(v['top-k'])
    if (topK !== undefined && !(Number.isInteger(topK) && topK >= 1)) throw new CairnError('BAD_REQUEST', '--top-k must be a positive integer')
    return { model: model === 'demo' ? 'demo' : { sha256: model, ...(urls.length ? { urls } : {}) }, input, ...(topK !== undefined ? { topK } : {}) }
  }
  if (v.type === 'cache') {
    const cids = (v.cid as string[] | undefined) ?? []
    const origins = (v.origin as string[] | undefined) ?? []
    if (cids.length === 0 || origins.length === 0) throw new CairnError('BAD_REQUEST', 'a cache task needs --cid ID and --origin URL (each repeatable)')
    // An origin with {cid} or {sha256} names each object's URL; one without serves them all.
    return {
      objects: cids.map(id => {
        const key = /^[0-9a-f]{64}$/.test(id) ? { sha256: id } : { cid: id }
        return { ...key, origins: origins.map(o => o.replaceAll('{cid}', id).replaceAll('{sha256}', id)), ...(v.pin ? { pin: true } : {}) }
      }),
    }
  }
  throw new CairnError('BAD_REQUEST', '--type must be inference or cache')
}

async function submitCmd(device: string, v: Record<string, unknown>, io: Io): Promise<number> {
  if (v.type !== 'inference' && v.type !== 'cache') throw new CairnError('BAD_REQUEST', '--type must be inference or cache')
  const deadlineS = Number(v.deadline)
  const priority = Number(v.priority)
  if (!(deadlineS > 0)) throw new CairnError('BAD_REQUEST', '--deadline must be a positive number of seconds')
  if (!(Number.isInteger(priority) && priority >= 0 && priority <= MAX_PRIORITY)) throw new CairnError('BAD_REQUEST', `--priority must be an integer 0..${MAX_PRIORITY}`)
  const {
    url,
    mqttVersion: version,
    clientOptions,
  } = brokerConnection({
    broker: v.broker as string,
    mqttVersion: v['mqtt-version'] as string,
    username: v.username as string | undefined,
    password: v.password as string | undefined,
    ca: v.ca as string | undefined,
  })
  const params = paramsFromFlags(v)
  const key = readKeyPairFile(v.key as string)
  const now = Date.now()
  const body: TaskRequestBody = { task: (v.task as string | undefined) ?? newId(now), type: v.type as TaskRequestBody['type'], params, deadline: now + deadlineS * 1000, priority }
  // The request lives a little past the deadline, so a device that reconnects late
  // still reads it and answers EXPIRED rather than never.
  const env = signEnvelope(key, { type: TaskMsg.request, id: newId(now), fleet: v.fleet as string, sub: device, iat: now, exp: now + deadlineS * 1000 + 60_000, body: asJson(body) })
  // Canonical bytes (JCS), so SHA-256 of the file is the hash a receipt cites.
  if (v['request-out']) writeFileSync(v['request-out'] as string, encodeTaskMessage(env))
  if (v.print) {
    io.out.write(encodeTaskMessage(env).toString('utf8') + '\n')
    return 0
  }
  const timeoutMs = v.timeout !== undefined ? Number(v.timeout) * 1000 : deadlineS * 1000 + 10_000
  if (!(timeoutMs > 0 && timeoutMs <= 2_147_000_000)) throw new CairnError('BAD_REQUEST', '--timeout must be a positive number of seconds')
  const res = await submitTask(env, { url, mqttVersion: version, clientOptions, timeoutMs, onUpdate: u => io.err.write(describeUpdate(u) + '\n') })
  if (res.kind === 'timeout') {
    const forged = res.refused.length > 0 ? `; ${res.refused.length} message(s) about this task did not verify and were ignored (${res.refused[0]})` : ''
    io.err.write(`no receipt signed by device ${device.slice(0, 12)}… within ${timeoutMs} ms (task ${body.task}); the device may be offline or busy${forged}\n`)
    return SUBMIT_EXIT.timeout
  }
  if (res.kind === 'rejected') {
    io.out.write(JSON.stringify({ task: body.task, rejected: res.update }, null, 2) + '\n')
    return SUBMIT_EXIT.rejected
  }
  // submitTask took only a receipt that passes these checks; they are printed here.
  const { checked } = checkReceipt(res.receipt, { device, request: env })
  io.err.write(`receipt verified: ${checked.join('; ')}\n`)
  io.out.write(JSON.stringify({ task: body.task, outcome: res.receipt.body.outcome, result: res.receipt.body.result, receipt: res.receipt }, null, 2) + '\n')
  return SUBMIT_EXIT[res.receipt.body.outcome]
}

function describeUpdate(u: TaskUpdate): string {
  const parts = [`task ${u.task ?? '?'}: ${u.event}`]
  if (u.progress !== undefined) parts.push(`${Math.round(u.progress * 100)}%`)
  if (u.position !== undefined) parts.push(`(${u.position} ahead)`)
  if (u.error) parts.push(`${u.error.code}: ${u.error.message}`)
  if (u.note) parts.push(u.note)
  return parts.join(' ')
}

export interface SubmitOptions {
  url: string
  mqttVersion: 4 | 5
  clientOptions?: IClientOptions
  timeoutMs: number
  onUpdate?: (u: TaskUpdate) => void
  /** Stops waiting (as a timeout) when aborted. */
  signal?: AbortSignal
}

export type SubmitResult =
  | { kind: 'receipt'; receipt: TaskReceipt; updates: TaskUpdate[] }
  | { kind: 'rejected'; update: TaskUpdate }
  /** `refused`: updates or receipts for this task that did not verify, and why. */
  | { kind: 'timeout'; refused: string[] }

/** Clocks of a dispatcher's machine and a device may disagree this much. */
const UPDATE_SKEW_MS = 5 * 60_000

/** Sends one signed request and waits for its receipt (or a rejection, or the timeout).
 * Updates come on the MQTT 5 response topic, or by task id on the plain update topic.
 * Only what the device signed is taken: updates signed by it for this dispatcher, and a
 * receipt bound to this very request (anyone on the broker can publish on these topics,
 * and an earlier request for the same task id has a receipt of its own: then the
 * DUPLICATE update is the answer). What claims to be about this task and does not
 * verify is set aside and reported with a timeout, never taken as an answer. */
export async function submitTask(env: Envelope, o: SubmitOptions): Promise<SubmitResult> {
  const topics = taskTopics(env.fleet, env.sub)
  const task = (env.body as { task: string }).task
  const nonce = randomBytes(6).toString('hex')
  const responseTopic = `${topics.update}/${nonce}`
  const client = await connectTool({ url: o.url, clientOptions: o.clientOptions, mqttVersion: o.mqttVersion, clientId: `cairn-dispatch-${nonce}` })
  const updates: TaskUpdate[] = []
  const seen = new Set<string>()
  try {
    let settle!: (r: SubmitResult) => void
    let duplicate: TaskUpdate | undefined
    const done = new Promise<SubmitResult>(r => (settle = r))
    const refused: string[] = []
    client.on('message', (topic, payload) => {
      if (topic === topics.receipt) {
        let r: TaskReceipt | null
        try {
          r = JSON.parse(payload.toString('utf8')) as TaskReceipt | null
        } catch {
          return
        }
        if (r?.type !== TaskMsg.receipt || r.body?.task !== task) return
        try {
          settle({ kind: 'receipt', receipt: checkReceipt(r, { device: env.sub, request: env }).receipt, updates })
        } catch (err) {
          // The stored receipt of an earlier request for this id, sent with a DUPLICATE
          // answer, settles as that rejection; anything else (forged) is set aside.
          if (duplicate && signedBy(r, env.sub)) settle({ kind: 'rejected', update: duplicate })
          else refused.push(`receipt: ${isCairnError(err) ? `${err.code}: ${err.message}` : String(err)}`)
        }
        return
      }
      const read = readTaskUpdate(payload, { fleet: env.fleet, device: env.sub, dispatcher: env.iss, now: Date.now(), skewMs: UPDATE_SKEW_MS, maxBytes: TOOL_MAX_PACKET_BYTES })
      if (!read.ok) {
        if (claimsTask(payload, task, env.id)) refused.push(`update: ${read.error.code}: ${read.error.message}`)
        return
      }
      const u = read.update
      if (u.task !== task && u.request !== env.id) return
      if (seen.has(u.id)) return
      seen.add(u.id)
      updates.push(u)
      o.onUpdate?.(u)
      // A duplicate of a finished task is answered with its receipt too: wait for that.
      if (u.event === 'rejected' && u.error?.code === 'DUPLICATE' && u.state !== undefined && u.state !== 'rejected') duplicate = u
      else if (u.event === 'rejected') settle({ kind: 'rejected', update: u })
    })
    await client.subscribeAsync([...(o.mqttVersion === 5 ? [responseTopic] : []), topics.update, topics.receipt], { qos: 1 })
    await client.publishAsync(topics.request, encodeTaskMessage(env), {
      qos: 1,
      ...(o.mqttVersion === 5 ? { properties: { responseTopic, correlationData: Buffer.from(env.id), messageExpiryInterval: Math.max(1, Math.ceil((env.exp - Date.now()) / 1000)) } } : {}),
    })
    let timer: NodeJS.Timeout | undefined
    const timeout = new Promise<SubmitResult>(r => {
      timer = setTimeout(() => r({ kind: 'timeout', refused }), o.timeoutMs)
      o.signal?.addEventListener('abort', () => r({ kind: 'timeout', refused }), { once: true })
    })
    try {
      return await Promise.race([done, timeout])
    } finally {
      clearTimeout(timer)
    }
  } finally {
    await client.endAsync()
  }
}

function verifyReceiptCmd(file: string, v: { device?: string; request?: string }, io: Io): number {
  const read = (f: string, what: string): unknown => {
    let text: string
    try {
      text = readFileSync(f, 'utf8')
    } catch (err) {
      throw new CairnError('BAD_REQUEST', `${what} ${f}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`)
    }
    try {
      return JSON.parse(text)
    } catch {
      throw new CairnError('BAD_JSON', `${what} ${f}: not JSON`)
    }
  }
  // Accepts the receipt itself or what `cairn task submit` printed ({ ..., receipt }).
  const unwrap = (x: unknown) => (x !== null && typeof x === 'object' && 'receipt' in x && !('sig' in x) ? (x as { receipt: unknown }).receipt : x)
  const device = v.device === undefined ? undefined : isKeyId(v.device as string) ? (v.device as string) : keyIdOf(readPublicKeyFile(v.device as string))
  const request = v.request === undefined ? undefined : (unwrap(read(v.request as string, 'request')) as Envelope)
  try {
    const { receipt, checked } = checkReceipt(unwrap(read(file, 'receipt')), { ...(device ? { device } : {}), ...(request ? { request } : {}) })
    for (const c of checked) io.out.write(`ok  ${c}\n`)
    const b = receipt.body
    io.out.write(`valid receipt: task ${b.task} (${b.type}) ${b.outcome}${b.error ? ` ${b.error.code}` : ''}, by device ${receipt.iss}, for dispatcher ${b.dispatcher}${b.local ? ' (local)' : ''}\n`)
    if (!device) io.out.write('note: the signer was not compared with an expected device (use --device)\n')
    if (!request) io.out.write('note: not checked against its request (use --request)\n')
    return 0
  } catch (err) {
    if (!isCairnError(err)) throw err
    io.err.write(`INVALID receipt (${err.code}): ${err.message}\n`)
    return 1
  }
}

/** Whether an unverified payload says it is about this task or answers this request:
 * worth reporting when it does not verify. */
function claimsTask(payload: Buffer, task: string, request: string): boolean {
  try {
    const v = JSON.parse(payload.toString('utf8')) as { task?: unknown; request?: unknown; body?: { task?: unknown; request?: unknown } | null } | null
    return v?.body?.task === task || v?.body?.request === request || v?.task === task || v?.request === request
  } catch {
    return false
  }
}

/** Whether a receipt verifies as the device's (for another request than ours). */
function signedBy(r: unknown, device: string): boolean {
  try {
    checkReceipt(r, { device })
    return true
  } catch {
    return false
  }
}
