// Generates the machine-readable parts of the docs from the code: JSON Schemas of every
// payload and the signing test vectors. `npm run docs:gen` writes them; a test fails
// when docs/ and the code disagree.

import { readFileSync } from 'node:fs'
import { spliceSettings } from '../agent/config/settings-table.js'
import { ServeConfigSchema, spliceServeSettings } from '../fleet/service/serve-config.js'
import { ConfigSchema } from '../agent/config/config-schema.js'
import { EnvelopeSchema, signEnvelope, signedBytes, type Envelope, type SignInput } from '../protocol/envelope.js'
import { signReply } from '../protocol/reply.js'
import { keyPairFromSeed, publicKeyPem } from '../protocol/keys.js'
import { PAYLOAD_SCHEMAS } from '../protocol/messages.js'
import { BODY_SCHEMAS } from '../protocol/proof-format.js'
import { proofVectors } from './vectors/proof-vectors.js'
import { localApiSchemas } from '../agent/local-api/protocol.js'
import { TASK_BODY_SCHEMAS } from '../protocol/task-format.js'
import { ServedBodySchema } from '../agent/cache/serve-receipts.js'
import { CacheParamsSchema } from '../agent/cache/cache-executor.js'
import { taskVectors } from './vectors/task-vectors.js'

export function generatedSchemas(): Record<string, unknown> {
  return {
    envelope: EnvelopeSchema,
    config: ConfigSchema,
    'fleet-serve-config': ServeConfigSchema,
    ...PAYLOAD_SCHEMAS,
    ...proofBodySchemas(),
    ...taskSchemas(),
    ...localApiSchemas(),
    'cache-served': ServedBodySchema,
    'cache-task-params': CacheParamsSchema,
  }
}

/** The body of each proof.* envelope, as docs/schemas/proof-<name>.json. */
function proofBodySchemas(): Record<string, unknown> {
  const out: Record<string, unknown> = {}
  for (const [type, schema] of Object.entries(BODY_SCHEMAS)) {
    const name = type.replace(/^proof\./, 'proof-')
    out[name] = { $id: `https://cairn.dev/schemas/${name}.json`, title: `body of a ${type} envelope (docs/proofs.md)`, ...schema }
  }
  return out
}

/** The body of each task.* envelope as docs/schemas/task-<name>.json. */
function taskSchemas(): Record<string, unknown> {
  const out: Record<string, unknown> = {}
  for (const [type, schema] of Object.entries(TASK_BODY_SCHEMAS)) {
    const name = type.replace(/^task\./, 'task-')
    out[name] = { $id: `https://cairn.dev/schemas/${name}.json`, title: `body of a ${type} envelope (docs/tasks.md)`, ...schema }
  }
  return out
}

/** Every generated file under docs/, by path relative to docs/, with its exact text. */
export function generatedDocFiles(): Record<string, string> {
  const files: Record<string, string> = {}
  for (const [name, schema] of Object.entries(generatedSchemas())) files[`schemas/${name}.json`] = JSON.stringify(schema, null, 2) + '\n'
  files['vectors/envelope-v1.json'] = JSON.stringify(envelopeVectors(), null, 2) + '\n'
  files['vectors/proofs-v1.json'] = JSON.stringify(proofVectors(), null, 2) + '\n'
  files['vectors/tasks-v1.json'] = JSON.stringify(taskVectors(), null, 2) + '\n'
  files['configuration.md'] = spliceSettings(readFileSync(new URL('../docs/configuration.md', import.meta.url), 'utf8'))
  files['console.md'] = spliceServeSettings(readFileSync(new URL('../docs/console.md', import.meta.url), 'utf8'))
  return files
}

export function envelopeVectors() {
  // RFC 8032 section 7.1, TEST 1 secret key: anyone can recreate the key pair.
  const seed = '9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60'
  const operator = keyPairFromSeed(seed)
  const device = keyPairFromSeed('4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb')
  const inputs: Array<{ name: string; input: SignInput }> = [
    {
      name: 'ping command',
      input: { type: 'cmd.ping', id: 'vector-0001', fleet: 'demo', sub: device.keyId, iat: 1767225600000, exp: 1767225900000, body: {} },
    },
    {
      name: 'set-config command with nested body and non-ASCII text',
      input: {
        type: 'cmd.set-config',
        id: 'vector-0002',
        fleet: 'demo',
        sub: device.keyId,
        iat: 1767225600000,
        exp: 1767229200000,
        body: { telemetry: { periodS: 30 }, log: { level: 'debug' }, note: 'Grüße ✓' },
      },
    },
  ]
  return {
    description: 'Cairn signing envelope v1 test vectors. signedBytes = "CAIRN-SIG-1\\n" || type || "\\n" || JCS(envelope without sig). See docs/protocol.md.',
    signer: { seedHex: seed, publicKeyPem: publicKeyPem(operator.publicKey), keyId: operator.keyId },
    device: { keyId: device.keyId },
    vectors: inputs.map(({ name, input }) => vectorOf(name, signEnvelope(operator, input))),
    // The device's signed reply to the first command (docs/protocol.md, "Replies").
    reply: {
      signer: { publicKeyPem: publicKeyPem(device.publicKey), keyId: device.keyId },
      ...vectorOf(
        'reply to the ping command',
        signReply(
          device,
          { id: 'vector-0001', status: 'ok', data: { pong: true, ts: 1767225601000, agentUptimeS: 3 } },
          { fleet: 'demo', to: operator.keyId, now: 1767225601000, exp: 1767225900000, id: 'vector-reply-0001' },
        ),
      ),
    },
  }
}

function vectorOf(name: string, envelope: Envelope) {
  const bytes = signedBytes(envelope)
  return {
    name,
    envelope,
    signedBytesUtf8: bytes.toString('utf8'),
    signedBytesHex: bytes.toString('hex'),
    signatureHex: Buffer.from(envelope.sig, 'base64url').toString('hex'),
  }
}

async function main(): Promise<void> {
  const { writeFileSync, mkdirSync } = await import('node:fs')
  const root = new URL('../docs/', import.meta.url)
  mkdirSync(new URL('schemas/', root), { recursive: true })
  mkdirSync(new URL('vectors/', root), { recursive: true })
  for (const [path, text] of Object.entries(generatedDocFiles())) writeFileSync(new URL(path, root), text)
  mkdirSync(new URL('api/', root), { recursive: true })
  writeFileSync(new URL('api/fleet-openapi.json', root), await fleetOpenApi())
}

/** The fleet service's OpenAPI document, as its API serves it (an empty store in a
 * scratch dir: the document depends on the routes only). */
async function fleetOpenApi(): Promise<string> {
  const { mkdtempSync, rmSync } = await import('node:fs')
  const { tmpdir } = await import('node:os')
  const { join } = await import('node:path')
  const { buildApi } = await import('../fleet/service/http-api.js')
  const { SqliteFleetStore } = await import('../fleet/service/sqlite-store.js')
  const { DEFAULT_ALERT_RULES } = await import('../fleet/service/alerts.js')
  const { ChangeFeed } = await import('../fleet/service/change-feed.js')
  const { CommandDesk } = await import('../fleet/service/commands.js')
  const { createLogger } = await import('../protocol/log.js')
  const dir = mkdtempSync(join(tmpdir(), 'cairn-openapi-'))
  const store = new SqliteFleetStore(dir)
  try {
    const app = await buildApi({
      store,
      fleet: 'demo',
      clock: { now: () => 0 },
      stats: () => ({ stored: { status: 0, telemetry: 0, event: 0 }, refused: 0, transitions: 0 }),
      alertRules: DEFAULT_ALERT_RULES,
      changes: new ChangeFeed(),
      commands: new CommandDesk({ store, fleet: 'demo', clock: { now: () => 0 }, log: createLogger({ level: 'fatal' }), operators: null, publish: () => undefined, ready: () => true }),
    })
    const doc = JSON.stringify(app.swagger(), null, 2) + '\n'
    await app.close()
    return doc
  } finally {
    await store.close()
    rmSync(dir, { recursive: true, force: true })
  }
}

if (process.argv[1] && import.meta.url === new URL(`file://${process.argv[1]}`).href) await main()
