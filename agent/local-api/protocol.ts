// The local API's wire format (docs/local-api.md): every frame both ways, and each op's
// arguments and result, as TypeBox schemas. The server validates what it receives
// against these; the tests validate what it sends against the JSON Schemas that
// `npm run docs:gen` writes from them (docs/schemas/local-api-*.json).

import { Type, type Static, type TSchema } from '@sinclair/typebox'
import { ErrorCodes } from '../../protocol/errors.js'
import { LED_STATES } from '../device-ui/led-patterns.js'

/** Bumped only for changes an existing client would misread (docs/local-api.md, "Versioning"). */
export const API_VERSION = 1
export const API_PATH = '/v1'

const TOPICS = ['telemetry', 'event', 'status', 'gpio'] as const
export type Topic = (typeof TOPICS)[number]

/** Patterns `led.set` takes; 'auto' hands the LED back to the agent's own state. */
const LED_SET_PATTERNS = ['off', 'on', 'online', 'offline', 'error', 'updating', 'blink', 'auto'] as const
export type LedSetPattern = (typeof LED_SET_PATTERNS)[number]

/** What the agent's state can be, most urgent first (the status LED's states). */
export const AGENT_STATES = LED_STATES

const lit = <T extends string>(values: readonly T[], description?: string) =>
  Type.Union(
    values.map(v => Type.Literal(v)),
    description ? { description } : {},
  )
const Ms = Type.Integer({ minimum: 0, description: 'ms since the Unix epoch' })
const ReqId = Type.String({ minLength: 1, maxLength: 64, description: 'chosen by the client; echoed in the reply' })
const Pin = Type.Integer({ minimum: 0, maximum: 63, description: 'BCM pin number (GPIO17 = 17)' })
const Level = Type.Union([Type.Literal(0), Type.Literal(1)])
const AgentState = lit(AGENT_STATES, 'what the agent is doing, as the status LED shows it')

const SubscribeArgs = Type.Object(
  {
    topics: Type.Array(lit(TOPICS), { minItems: 1, maxItems: 4, uniqueItems: true }),
    kinds: Type.Optional(
      Type.Array(Type.String({ minLength: 1, maxLength: 64 }), { maxItems: 32, description: "event kind prefixes for the 'event' topic, e.g. ['task.', 'proof.']; absent: every kind" }),
    ),
  },
  { additionalProperties: false },
)
const Subscribed = Type.Object({ topics: Type.Array(lit(TOPICS)), kinds: Type.Optional(Type.Array(Type.String())) }, { additionalProperties: false })
const Empty = Type.Object({}, { additionalProperties: false })

const LedInfoSchema = Type.Object(
  {
    pin: Type.Optional(Pin),
    shown: Type.String({ description: 'the pattern on the LED now: an agent state, or what led.set chose' }),
    source: lit(['agent', 'api'] as const, "'api' while a led.set override holds"),
    driver: Type.Optional(Type.String({ description: 'GPIO driver: sysfs, gpiod or fake' })),
  },
  { additionalProperties: false },
)

const StatusResult = Type.Object(
  {
    device: Type.String(),
    fleet: Type.String(),
    version: Type.String(),
    connected: Type.Boolean({ description: 'connected to the fleet broker' }),
    state: AgentState,
    board: Type.String(),
    model: Type.String(),
    outboxDepth: Type.Integer({ minimum: 0, description: 'messages waiting for the broker' }),
    tasks: Type.Optional(Type.Unknown({ description: 'task queue status, when the task queue runs' })),
    ota: Type.Optional(Type.Unknown({ description: 'updater status, when updates are on' })),
    led: Type.Optional(LedInfoSchema),
  },
  { additionalProperties: false },
)

const TensorInput = Type.Object(
  {
    shape: Type.Array(Type.Integer({ minimum: 1 }), { minItems: 1, maxItems: 6 }),
    dtype: lit(['float32', 'int32'] as const),
    data: Type.Union([Type.Array(Type.Number()), Type.String({ description: 'base64 of the little-endian values' })]),
  },
  { additionalProperties: false },
)
const InferArgs = Type.Object(
  {
    model: Type.Optional(Type.String({ pattern: '^(demo|[0-9a-f]{64})$', description: "'demo' (default) or a model's SHA-256" })),
    input: Type.Union([
      Type.Object({ image: Type.Object({ data: Type.String({ minLength: 1, description: 'base64 of a PNG or JPEG file' }) }, { additionalProperties: false }) }, { additionalProperties: false }),
      Type.Object({ tensor: TensorInput }, { additionalProperties: false }),
    ]),
    topK: Type.Optional(Type.Integer({ minimum: 1, maximum: 100 })),
  },
  { additionalProperties: false },
)
const InferResult = Type.Object({ taskId: Type.String(), result: Type.Unknown(), receipt: Type.Unknown({ description: 'the signed task receipt (docs/tasks.md)' }) }, { additionalProperties: false })

const LedSetArgs = Type.Object({ pattern: lit(LED_SET_PATTERNS) }, { additionalProperties: false })
const SelfTestResult = Type.Object({ ok: Type.Boolean(), failures: Type.Array(Type.String()) }, { additionalProperties: false })

const GpioOpenArgs = Type.Object(
  {
    pin: Pin,
    mode: lit(['in', 'out'] as const),
    edge: Type.Optional(lit(['rising', 'falling', 'both'] as const, "inputs: which transitions become 'gpio' events; default both")),
    debounceMs: Type.Optional(Type.Integer({ minimum: 0, maximum: 10_000 })),
    activeLow: Type.Optional(Type.Boolean()),
    initial: Type.Optional(Level),
  },
  { additionalProperties: false },
)
const PinArgs = Type.Object({ pin: Pin }, { additionalProperties: false })
const GpioOpened = Type.Object({ pin: Pin, mode: lit(['in', 'out'] as const), value: Level, driver: Type.String() }, { additionalProperties: false })

/** Each op: what `args` must be, and what `data` of a successful reply is. */
export const OPS = {
  subscribe: { args: SubscribeArgs, result: Subscribed },
  unsubscribe: { args: SubscribeArgs, result: Subscribed },
  status: { args: Empty, result: StatusResult },
  infer: { args: InferArgs, result: InferResult },
  'led.set': { args: LedSetArgs, result: LedInfoSchema },
  'self-test': { args: Empty, result: SelfTestResult },
  'gpio.open': { args: GpioOpenArgs, result: GpioOpened },
  'gpio.read': { args: PinArgs, result: Type.Object({ pin: Pin, value: Level }, { additionalProperties: false }) },
  'gpio.write': { args: Type.Object({ pin: Pin, value: Level }, { additionalProperties: false }), result: Type.Object({ pin: Pin, value: Level }, { additionalProperties: false }) },
  'gpio.close': { args: PinArgs, result: Type.Object({ pin: Pin }, { additionalProperties: false }) },
} as const satisfies Record<string, { args: TSchema; result: TSchema }>
export type Op = keyof typeof OPS
export type OpArgs<O extends Op> = Static<(typeof OPS)[O]['args']>
export type OpResult<O extends Op> = Static<(typeof OPS)[O]['result']>
const OP_NAMES = Object.keys(OPS) as Op[]

// ---- frames -------------------------------------------------------------------------

const ErrorBody = Type.Object({ code: lit(ErrorCodes), message: Type.String() }, { additionalProperties: false })

const HelloSchema = Type.Object(
  {
    v: Type.Literal(1),
    type: Type.Literal('hello'),
    api: Type.Literal(API_VERSION),
    device: Type.String(),
    fleet: Type.String(),
    version: Type.String({ description: 'agent version' }),
  },
  { additionalProperties: false, $id: 'https://cairn.dev/schemas/local-api-hello.json', title: 'local API: hello (server → client, first frame)' },
)
export type Hello = Static<typeof HelloSchema>

/** What the server first checks of every request; `args` is then checked per op. */
export const RequestEnvelopeSchema = Type.Object(
  { v: Type.Literal(1), type: Type.Literal('req'), id: ReqId, op: Type.String({ maxLength: 64 }), args: Type.Optional(Type.Unknown()) },
  { additionalProperties: false },
)

/** Every valid request, op by op (for the docs; the server checks in two steps). */
const RequestSchema = Type.Union(
  OP_NAMES.map(op =>
    Type.Object(
      { v: Type.Literal(1), type: Type.Literal('req'), id: ReqId, op: Type.Literal(op), args: OPS[op].args === Empty ? Type.Optional(Empty) : OPS[op].args },
      { additionalProperties: false },
    ),
  ),
  { $id: 'https://cairn.dev/schemas/local-api-request.json', title: 'local API: request (client → server)' },
)

const ResponseSchema = Type.Union(
  [
    Type.Object(
      { v: Type.Literal(1), type: Type.Literal('res'), id: ReqId, ok: Type.Literal(true), data: Type.Unknown({ description: "the op's result (local-api-ops.json)" }) },
      { additionalProperties: false },
    ),
    Type.Object({ v: Type.Literal(1), type: Type.Literal('res'), id: ReqId, ok: Type.Literal(false), error: ErrorBody }, { additionalProperties: false }),
  ],
  { $id: 'https://cairn.dev/schemas/local-api-response.json', title: 'local API: reply to a request (server → client)' },
)

/** For a frame that could not be read as a request at all (no id to answer to). */
const ErrorFrameSchema = Type.Object(
  { v: Type.Literal(1), type: Type.Literal('error'), error: ErrorBody },
  { additionalProperties: false, $id: 'https://cairn.dev/schemas/local-api-error.json', title: 'local API: error without a request id (server → client)' },
)

const ev = <T extends Topic>(topic: T, data: TSchema) => Type.Object({ v: Type.Literal(1), type: Type.Literal('event'), topic: Type.Literal(topic), ts: Ms, data }, { additionalProperties: false })
const StatusEventDataSchema = Type.Object({ connected: Type.Boolean(), state: AgentState }, { additionalProperties: false })
const GpioEventDataSchema = Type.Object({ pin: Pin, value: Level, edge: Type.Optional(lit(['rising', 'falling'] as const)) }, { additionalProperties: false })
const EventFrameSchema = Type.Union(
  [
    ev('telemetry', Type.Record(Type.String(), Type.Unknown(), { description: 'a telemetry sample (docs/schemas/telemetry.json, `sample`)' })),
    ev(
      'event',
      Type.Object({ kind: Type.String(), data: Type.Record(Type.String(), Type.Unknown()) }, { additionalProperties: false, description: 'an event the agent published (docs/schemas/event.json)' }),
    ),
    ev('status', StatusEventDataSchema),
    ev('gpio', GpioEventDataSchema),
  ],
  { $id: 'https://cairn.dev/schemas/local-api-event.json', title: 'local API: event (server → client, after subscribe)' },
)

/** Schemas published under docs/schemas/ (cli/docs-gen.ts). */
export function localApiSchemas(): Record<string, unknown> {
  const defs: Record<string, unknown> = {}
  for (const op of OP_NAMES) {
    defs[`${op}.args`] = OPS[op].args
    defs[`${op}.result`] = OPS[op].result
  }
  return {
    'local-api-hello': HelloSchema,
    'local-api-request': RequestSchema,
    'local-api-response': ResponseSchema,
    'local-api-error': ErrorFrameSchema,
    'local-api-event': EventFrameSchema,
    'local-api-ops': { $id: 'https://cairn.dev/schemas/local-api-ops.json', title: "local API: each op's args and result (data of an ok reply)", $defs: defs },
  }
}
