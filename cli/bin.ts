// Entry point of the bundle (dist/cairn.mjs).

import { main } from './cli.js'

// `cairn … | head`: a reader that stops reading is not an error of ours.
process.stdout.on('error', (err: NodeJS.ErrnoException) => {
  if (err.code === 'EPIPE') process.exit(0)
  throw err
})

main(process.argv.slice(2)).then(
  code => {
    process.exitCode = code
  },
  err => {
    process.stderr.write(`cairn: unexpected error: ${(err as Error).stack ?? err}\n`)
    process.exitCode = 70
  },
)
