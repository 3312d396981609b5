// The two MQTT versions every Cairn program must work with, for suites that run their
// network path once per version (a loop of subtests, not copies): MQTT 5 (response
// topics, correlation data, message expiry) and 3.1.1 (the same ids and expiry in the
// payload; replies on the device's reply topic).

export const MQTT_VERSIONS = [
  { mqttVersion: 5, label: 'MQTT 5' },
  { mqttVersion: 4, label: 'MQTT 3.1.1' },
] as const satisfies ReadonlyArray<{ mqttVersion: 4 | 5; label: string }>

export type MqttVersion = (typeof MQTT_VERSIONS)[number]['mqttVersion']

/** The versions alone, for loops that need only the number. */
export const MQTT_VERSION_NUMBERS: readonly MqttVersion[] = MQTT_VERSIONS.map(v => v.mqttVersion)

export const versionName = (v: MqttVersion): string => MQTT_VERSIONS.find(x => x.mqttVersion === v)!.label
