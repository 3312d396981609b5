// Entry point of the bundle (dist/cairn.mjs).

import { main } from './cli.js'

main(process.argv.slice(2)).then(
  code => {
    process.exitCode = code
  },
  err => {
    process.stderr.write(`cairn: unexpected error: ${(err as Error).stack ?? err}\n`)
    process.exitCode = 70
  },
)
