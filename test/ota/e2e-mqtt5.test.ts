// The OTA end-to-end suite (e2e-scenario.ts) on MQTT 5.

import { otaE2e } from './e2e-scenario.js'

otaE2e(5)
