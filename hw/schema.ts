// The JSON Schema of one telemetry sample, from which its TypeScript type is derived.
// Every measurement is optional: a field is absent when the board does not expose
// it, never zero or null. Units are in the field names.
import { Type, type Static, type TObject, type TProperties } from '@sinclair/typebox'

const strict = <T extends TProperties>(props: T, description?: string): TObject<T> =>
  Type.Object(props, description === undefined ? { additionalProperties: false } : { additionalProperties: false, description })

const Percent = () => Type.Number({ minimum: 0, maximum: 100 })
const NonNegative = () => Type.Number({ minimum: 0 })

export const BoardSchema = strict({
  kind: Type.Union([Type.Literal('rpi4'), Type.Literal('rpi5'), Type.Literal('jetson-nano'), Type.Literal('jetson-orin'), Type.Literal('generic')]),
  model: Type.String(),
  arch: Type.String(),
})

const ThrottleFlagsSchema = strict({
  underVoltage: Type.Optional(Type.Boolean()),
  armFreqCapped: Type.Optional(Type.Boolean()),
  throttled: Type.Optional(Type.Boolean()),
  softTempLimit: Type.Optional(Type.Boolean()),
})

export const ThrottleSchema = strict(
  {
    source: Type.Union([Type.Literal('vcgencmd'), Type.Literal('hwmon')]),
    raw: Type.Optional(Type.String({ pattern: '^0x[0-9a-f]+$' })),
    now: ThrottleFlagsSchema,
    sinceBoot: Type.Optional(ThrottleFlagsSchema),
    sinceStart: Type.Optional(ThrottleFlagsSchema),
  },
  'Raspberry Pi throttling. vcgencmd: firmware bits incl. since-boot; hwmon: upstream-kernel fallback, under-voltage now plus a capping heuristic, since-start tracked in process.',
)

export const AcceleratorSchema = strict({
  kind: Type.Union([Type.Literal('nvidia-gpu'), Type.Literal('hailo'), Type.Literal('coral-tpu'), Type.Literal('accel')]),
  name: Type.String(),
  source: Type.String(),
  memoryBytes: Type.Optional(Type.Integer({ minimum: 0 })),
})

export const TelemetrySampleSchema = strict(
  {
    board: BoardSchema,
    uptimeS: Type.Optional(NonNegative()),
    load: Type.Optional(Type.Tuple([NonNegative(), NonNegative(), NonNegative()], { description: '1, 5, 15 minute load averages' })),
    cpu: Type.Optional(
      strict(
        {
          percent: Type.Optional(Percent()),
          cores: Type.Optional(Type.Array(strict({ cpu: Type.Integer({ minimum: 0 }), percent: Type.Optional(Percent()), mhz: Type.Optional(NonNegative()) }))),
        },
        'percent is absent on the first sample: it needs two /proc/stat snapshots',
      ),
    ),
    memory: Type.Optional(
      strict({
        totalBytes: Type.Integer({ minimum: 0 }),
        availableBytes: Type.Integer({ minimum: 0 }),
        usedPercent: Percent(),
        swapTotalBytes: Type.Optional(Type.Integer({ minimum: 0 })),
        swapFreeBytes: Type.Optional(Type.Integer({ minimum: 0 })),
        swapUsedPercent: Type.Optional(Percent()),
      }),
    ),
    disk: Type.Optional(
      Type.Array(
        strict({
          path: Type.String(),
          totalBytes: Type.Integer({ minimum: 0 }),
          freeBytes: Type.Integer({ minimum: 0 }),
          availableBytes: Type.Integer({ minimum: 0 }),
          usedPercent: Percent(),
        }),
      ),
    ),
    net: Type.Optional(
      Type.Array(
        strict({
          iface: Type.String(),
          rxBytes: Type.Integer({ minimum: 0 }),
          txBytes: Type.Integer({ minimum: 0 }),
          rxBytesPerS: Type.Optional(NonNegative()),
          txBytesPerS: Type.Optional(NonNegative()),
        }),
      ),
    ),
    thermal: Type.Optional(Type.Array(strict({ zone: Type.String(), type: Type.String(), celsius: Type.Number() }))),
    throttle: Type.Optional(ThrottleSchema),
    fan: Type.Optional(
      strict({
        rpm: Type.Optional(Type.Integer({ minimum: 0 })),
        pwm: Type.Optional(Type.Integer({ minimum: 0, maximum: 255 })),
        percent: Type.Optional(Percent()),
      }),
    ),
    power: Type.Optional(
      strict(
        {
          source: Type.Literal('pmic'),
          rails: Type.Array(
            strict({
              name: Type.String(),
              volts: Type.Optional(NonNegative()),
              amps: Type.Optional(NonNegative()),
              watts: Type.Optional(NonNegative()),
            }),
          ),
          totalWatts: Type.Optional(NonNegative()),
          inputVolts: Type.Optional(NonNegative()),
        },
        'Raspberry Pi 5 PMIC rails; totalWatts sums V*A over rails with both and excludes conversion losses',
      ),
    ),
    gpu: Type.Optional(
      strict({
        name: Type.String(),
        source: Type.Literal('devfreq'),
        loadPercent: Type.Optional(Percent()),
        freqMhz: Type.Optional(NonNegative()),
        celsius: Type.Optional(Type.Number()),
      }),
    ),
    accelerators: Type.Optional(Type.Array(AcceleratorSchema)),
  },
  'One Cairn hardware telemetry sample',
)

export type TelemetrySample = Static<typeof TelemetrySampleSchema>
