// Schemas of every payload the agent publishes. docs/schemas/*.json are generated
// from these (npm run docs:schemas) and the tests validate what is really sent
// against the files in docs/.

import { Type, type Static, type TSchema } from '@sinclair/typebox'
import { ID_PATTERN, NAME_PATTERN } from './envelope.js'
import { ReplyBodySchema } from './reply.js'
import { TelemetrySampleSchema } from '../hw/schema.js'

const DeviceId = Type.String({ pattern: '^[a-z2-7]{52}$', description: 'device id: lowercase base32 of the device public key' })
const MsgId = Type.String({ pattern: ID_PATTERN, description: 'unique message id; consumers de-duplicate on it' })
const Ms = Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER, description: 'ms since the Unix epoch' })

const StatusSchema = Type.Object(
  {
    v: Type.Literal(1),
    id: MsgId,
    device: DeviceId,
    fleet: Type.String({ pattern: NAME_PATTERN }),
    state: Type.Union([Type.Literal('online'), Type.Literal('offline')]),
    reason: Type.Optional(Type.Union([Type.Literal('shutdown'), Type.Literal('connection-lost'), Type.Literal('restart')], { description: 'why offline' })),
    ts: Ms,
    since: Type.Optional(Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER, description: 'when the agent started, ms since the Unix epoch' })),
    conn: Type.Optional(
      Type.Integer({
        minimum: 0,
        maximum: Number.MAX_SAFE_INTEGER,
        description:
          "when the broker connection this message belongs to was opened, ms since the Unix epoch: the Will and the connection's online status carry the same value, so a consumer orders presence by (since, conn, offline after online) whatever order the messages reach it in",
      }),
    ),
    version: Type.String(),
    slot: Type.Optional(
      Type.Union([Type.Literal('a'), Type.Literal('b'), Type.Literal('fallback')], {
        description: 'OTA slot the agent runs from; fallback: the bundle installed with the launcher. Absent when not started by the launcher',
      }),
    ),
    os: Type.Optional(
      Type.Object(
        {
          version: Type.String({ description: 'the Cairn OS release running (/etc/cairn-release)' }),
          slot: Type.Union([Type.Literal('a'), Type.Literal('b')], { description: 'the A/B partition pair it booted from' }),
          updates: Type.Boolean({ description: 'whether this device installs OS releases' }),
          detail: Type.Optional(Type.String({ description: 'why not, or how it tries a new slot (tryboot: module, kernel)' })),
        },
        { additionalProperties: false, description: 'Cairn OS only: the OS release and its updates' },
      ),
    ),
    board: Type.String(),
    model: Type.String(),
    uptimeS: Type.Optional(Type.Number({ minimum: 0, description: 'system uptime in seconds' })),
    mqtt: Type.Union([Type.Literal(5), Type.Literal(4)]),
    publicKey: Type.String({ description: 'device public key, SPKI PEM' }),
    problems: Type.Optional(
      Type.Array(
        Type.Object(
          {
            code: Type.String({ pattern: '^[A-Z][A-Z0-9_]{0,63}$', description: 'what is wrong, e.g. REMOTE_CONFIG_REJECTED' }),
            message: Type.String({ maxLength: 1000 }),
            since: Ms,
          },
          { additionalProperties: false },
        ),
        { maxItems: 16, description: 'what the device reports as wrong with itself while it keeps running; absent when nothing is' },
      ),
    ),
    tasks: Type.Optional(
      Type.Object(
        {
          types: Type.Array(Type.String(), { description: 'task types this device runs (docs/tasks.md)' }),
          backends: Type.Record(Type.String(), Type.String(), { description: 'backend of each task type, e.g. inference: wasm' }),
          expected: Type.Optional(
            Type.Array(Type.String(), {
              description:
                'task types whose backend above is only the one expected from what is installed: their worker has not started since the agent started (the inference worker starts with the first inference task, docs/inference.md); absent when every backend has been seen running',
            }),
          ),
          queued: Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER }),
          running: Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER }),
        },
        { additionalProperties: false, description: 'task queue at the time of the message; absent when tasks are disabled' },
      ),
    ),
  },
  { additionalProperties: false, $id: 'https://cairn.dev/schemas/status.json', title: 'status (retained)' },
)
export type StatusMessage = Static<typeof StatusSchema>

const TelemetryMessageSchema = Type.Object(
  {
    v: Type.Literal(1),
    id: MsgId,
    device: DeviceId,
    ts: Ms,
    sample: TelemetrySampleSchema,
    outbox: Type.Optional(
      Type.Object(
        {
          queued: Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER, description: 'messages in the outbox the broker has not acknowledged yet, this one not counted' }),
          bytes: Type.Integer({
            minimum: 0,
            maximum: Number.MAX_SAFE_INTEGER,
            description: "what they hold against the outbox's size cap (outbox.maxBytes): payload, topic and a per-row overhead",
          }),
          oldestTs: Type.Optional(Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER, description: 'when the oldest of them was queued, ms since the Unix epoch; absent when none waits' })),
        },
        { additionalProperties: false, description: 'the outbox backlog just before this message was queued (a backlog alert); absent from older agents' },
      ),
    ),
    io: Type.Optional(
      Type.Object(
        {
          led: Type.Optional(
            Type.Object(
              {
                pin: Type.Integer({ minimum: 0, maximum: 1023, description: 'BCM line number of the status LED' }),
                shown: Type.String({
                  maxLength: 32,
                  pattern: '^[a-z][a-z0-9-]{0,31}$',
                  description: 'what it shows: an agent state (online, broker-unreachable, updating, …) or a pattern a local client set (on, off, blink, …)',
                }),
                source: Type.Union([Type.Literal('agent'), Type.Literal('api')], { description: "agent: the agent's own state; api: a local API client's led.set" }),
              },
              { additionalProperties: false, description: 'the status LED; absent when none is configured or it could not be opened' },
            ),
          ),
          lines: Type.Array(
            Type.Object(
              {
                pin: Type.Integer({ minimum: 0, maximum: 1023, description: 'BCM line number' }),
                holder: Type.Union([Type.Literal('led'), Type.Literal('button'), Type.Literal('local-api')], {
                  description: 'who holds it: the status LED, the button, or a local API client (Node-RED)',
                }),
                direction: Type.Union([Type.Literal('in'), Type.Literal('out')]),
                value: Type.Optional(Type.Union([Type.Literal(0), Type.Literal(1)], { description: 'the level last written (out) or seen (in); absent when not known yet' })),
              },
              { additionalProperties: false },
            ),
            { maxItems: 64, description: 'the GPIO lines the agent holds open, by pin' },
          ),
        },
        { additionalProperties: false, description: 'GPIO and the status LED at the time of the message; absent when the agent holds no line' },
      ),
    ),
  },
  { additionalProperties: false, $id: 'https://cairn.dev/schemas/telemetry.json', title: 'telemetry' },
)
export type TelemetryMessage = Static<typeof TelemetryMessageSchema>

const EventSchema = Type.Object(
  {
    v: Type.Literal(1),
    id: MsgId,
    device: DeviceId,
    ts: Ms,
    kind: Type.String({ pattern: '^[a-z][a-z0-9.-]{0,63}$', description: 'event kind, e.g. agent.started, command.rejected, config.changed' }),
    data: Type.Record(Type.String(), Type.Unknown()),
  },
  { additionalProperties: false, $id: 'https://cairn.dev/schemas/event.json', title: 'event' },
)
export type EventMessage = Static<typeof EventSchema>

export const PAYLOAD_SCHEMAS: Record<string, TSchema> = {
  status: StatusSchema,
  telemetry: TelemetryMessageSchema,
  event: EventSchema,
  reply: ReplyBodySchema,
}
