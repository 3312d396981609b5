#!/bin/sh
# `cairn release client` from this checkout's bundle, as the one-word command the TUF
# conformance suite wants for --entrypoint (test/ota/tuf-conformance.sh passes it).
exec node "$(dirname "$0")/../../dist/cairn.mjs" release client "$@"
