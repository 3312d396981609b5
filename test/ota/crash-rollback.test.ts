// kill -9 at each step of an update (crash-scenario.ts): MQTT 5, kills while a release that fails its health check is rolled back.

import { crashSuite } from './crash-scenario.js'

crashSuite('rollback')
