#!/usr/bin/env bash
# Runs the upstream TUF conformance suite (github.com/theupdateframework/tuf-conformance)
# against `cairn release client`, as the suite's own GitHub action runs a client. For CI:
# where the suite or what it needs is missing it says why and exits 0 (skipped), unless
# TUF_CONFORMANCE_REQUIRED=1, when that is a failure. Arguments go to pytest (-x, -k …).
#
#   TUF_CONFORMANCE_DIR  a checkout of the suite; default: cloned at $PINNED into
#                        ${XDG_CACHE_HOME:-$HOME/.cache}/cairn/tuf-conformance
#   PYTHON               an interpreter with pytest, tuf 7.0.0 and securesystemslib[crypto]
#                        1.4.0 (the versions the pinned suite asks for); default python3
#
# Debian: apt install faketime python3-pytest, and python3-tuf (7.0.0) with
# python3-securesystemslib (1.4.0) from sid; or pip install -e "$TUF_CONFORMANCE_DIR".
# faketime must be on PATH (the suite runs the client at fixed times with it).
set -euo pipefail

PINNED=eec841c186f81f2d9d8d30460c7e7deefa615f9e
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
python=${PYTHON:-python3}

skip() {
  echo "tuf-conformance: skipped: $*"
  [ "${TUF_CONFORMANCE_REQUIRED:-0}" = 1 ] && exit 1
  exit 0
}

command -v "$python" >/dev/null || skip "no $python"
"$python" -c 'import pytest, tuf.api.metadata, securesystemslib.signer, cryptography' 2>/dev/null ||
  skip "$python lacks pytest, tuf, securesystemslib or cryptography (see the top of $0)"
command -v faketime >/dev/null || skip "faketime is not on PATH (Debian: apt install faketime)"
# The suite splits the client command on spaces.
client="$root/test/ota/tuf-conformance-client.sh"
case "$client" in *' '*) skip "the checkout path has a space in it, which the suite's --entrypoint cannot carry: $root" ;; esac

suite=${TUF_CONFORMANCE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/cairn/tuf-conformance}
if [ ! -d "$suite/tuf_conformance" ]; then
  [ -n "${TUF_CONFORMANCE_DIR:-}" ] && skip "$suite holds no tuf_conformance/"
  rm -rf "$suite"
  mkdir -p "$(dirname "$suite")"
  git clone --quiet https://github.com/theupdateframework/tuf-conformance "$suite" 2>/dev/null &&
    git -C "$suite" checkout --quiet "$PINNED" ||
    { rm -rf "$suite"; skip "cannot clone the suite from GitHub (set TUF_CONFORMANCE_DIR to a checkout)"; }
fi

[ -f "$root/dist/cairn.mjs" ] || (cd "$root" && npm run build --silent)
echo "tuf-conformance: $suite ($(git -C "$suite" rev-parse --short HEAD 2>/dev/null || echo 'not a git checkout')), $("$python" -c 'import tuf, securesystemslib; print("tuf", tuf.__version__, "securesystemslib", securesystemslib.__version__)')"
cd "$suite"
PYTHONPATH="$suite${PYTHONPATH:+:$PYTHONPATH}" exec "$python" -m pytest -p no:cacheprovider tuf_conformance --entrypoint "$client" "$@"
