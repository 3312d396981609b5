// kill -9 at each step of an update (crash-scenario.ts): MQTT 3.1.1, the kills whose recovery goes through the broker.

import { crashSuite } from './crash-scenario.js'

crashSuite('mqtt311')
