// kill -9 at each step of an update (crash-scenario.ts): MQTT 5, kills during the update before the switch (check, download, verify, stage).

import { crashSuite } from './crash-scenario.js'

crashSuite('update-early')
