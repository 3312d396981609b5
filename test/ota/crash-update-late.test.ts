// kill -9 at each step of an update (crash-scenario.ts): MQTT 5, kills from the switch to the commit.

import { crashSuite } from './crash-scenario.js'

crashSuite('update-late')
