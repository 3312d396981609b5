// The commands a device answers, as one table for the tools that send them (`cairn fleet
// cmd` checks a name and body here before it waits for a reply that cannot come). The
// agent builds the same table from its core and the extensions it runs.

import { BUILTIN_COMMANDS, CommandTable } from '../agent/core/commands.js'
import { otaCommands } from '../ota/ota-commands.js'

export function deviceCommandTable(): CommandTable {
  return new CommandTable([...BUILTIN_COMMANDS, ...otaCommands(() => undefined)])
}
