#!/usr/bin/env bash
# Installs the cairn-node .debs into clean Debian trees and checks them:
#   image-build/deb/test-deb.sh [--out DIR] [--cache DIR]
# amd64: a minbase Debian bookworm tree (mmdebstrap, cached), where the agent also runs
# against a Mosquitto on the host's loopback. arm64: a copy of the Cairn OS base tree
# (trixie), under qemu-user. Ubuntu's archive is not reachable here, so JetPack itself
# is not tested; glibc 2.28+ is what the carried Node needs (Ubuntu 20.04 and later).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
IMG=$(cd "$HERE/.." && pwd)
REPO=$(cd "$IMG/.." && pwd)
. "$IMG/lib.sh"

OUT="$REPO/image-out"
CACHE=/var/cache/cairn-image
while [ $# -gt 0 ]; do
  case "$1" in
    --out) OUT=$2; shift 2 ;;
    --cache) CACHE=$2; shift 2 ;;
    *) die "unknown option $1" ;;
  esac
done
VERSION=$(node -p "require('$REPO/package.json').version")
LOG_DIR="$OUT/logs-deb-test"
rm -rf "$LOG_DIR"; mkdir -p "$LOG_DIR"
WORK=$(mktemp -d /var/tmp/cairn-deb-test.XXXXXX)
IMG_STAGE_TOTAL=3
AMD64_TREE="$CACHE/deb/test-tree-amd64-bookworm"

stage_tree_amd64() {
  if [ ! -f "$AMD64_TREE/.complete" ]; then
    rm -rf "$AMD64_TREE"
    nice -n 10 mmdebstrap --variant=minbase --include=systemd,systemd-sysv bookworm "$AMD64_TREE" "deb http://deb.debian.org/debian bookworm main"
    touch "$AMD64_TREE/.complete"
    note "built"
  else
    note "cached"
  fi
}

# check_install TREE ARCH: dpkg -i, then what a user would try first.
check_install() {
  local T=$1 a=$2 deb="cairn-node_${VERSION}_$2.deb"
  cp "$OUT/$deb" "$T/tmp/"
  in_tree "$T" dpkg -i "/tmp/$deb"
  in_tree "$T" getent passwd cairn
  # numeric: the host's passwd has other names for these ids
  [ "$(stat -c '%u %a' "$T/var/lib/cairn")" = "$(in_tree "$T" id -u cairn) 700" ] || { echo "/var/lib/cairn: $(stat -c '%u %a' "$T/var/lib/cairn")"; return 1; }
  [ "$(in_tree "$T" cairn --version)" = "$VERSION" ]
  in_tree "$T" /opt/cairn/node/bin/node -e "
    const Db = require('/opt/cairn/node_modules/better-sqlite3');
    console.log('better-sqlite3 loads on', process.arch, process.version, new Db(':memory:').prepare('select sqlite_version() v').get().v)"
  [ "$(in_tree "$T" systemctl is-enabled cairn-agent.service)" = enabled ]
  in_tree "$T" cairn id --init --state-dir /tmp/id-test | head -n 1
}

stage_install_amd64() {
  local T="$WORK/amd64"
  cp -a "$AMD64_TREE" "$T"
  check_install "$T" amd64
  # the agent itself, as the cairn user, against a broker on the host's loopback
  local port=$((20000 + RANDOM % 20000))
  mosquitto -p "$port" >"$WORK/mosq.log" 2>&1 &
  local mpid=$!
  sleep 0.5
  timeout 30 mosquitto_sub -p "$port" -t 'cairn/v1/debtest/+/telemetry' -C 1 >"$WORK/telemetry.json" &
  local spid=$!
  printf 'fleet: debtest\nbroker:\n  url: mqtt://127.0.0.1:%s\ntelemetry:\n  periodS: 1\nhealth:\n  enabled: false\n' "$port" >"$T/etc/cairn/cairn.yaml"
  local ids
  ids="$(in_tree "$T" id -u cairn):$(in_tree "$T" id -g cairn)"
  timeout 25 unshare --mount --fork -- sh -c 'mount -t proc proc "$1/proc"; exec chroot --userspec="$2" "$1" /opt/cairn/node/bin/node /opt/cairn/cairn.mjs agent --config /etc/cairn/cairn.yaml' sh "$T" "$ids" >"$WORK/agent.log" 2>&1 &
  local apid=$!
  local rc=0
  wait "$spid" || rc=$?
  kill "$apid" "$mpid" 2>/dev/null || true
  wait "$apid" "$mpid" 2>/dev/null || true
  [ "$rc" -eq 0 ] && [ -s "$WORK/telemetry.json" ] || { echo "no telemetry from the packaged agent"; tail -n 20 "$WORK/agent.log"; return 1; }
  echo "telemetry: $(head -c 200 "$WORK/telemetry.json")"
  in_tree "$T" dpkg --purge cairn-node
  [ ! -e "$T/opt/cairn" ] || { echo "/opt/cairn left after purge"; return 1; }
  note "installs, runs, purges"
}

stage_install_arm64() {
  local base T="$WORK/arm64"
  # a finished base tree (either kernel flavour; not one a running build is making)
  base=$(for d in "$CACHE"/base-*/; do [ -f "$d.complete" ] && echo "${d}tree"; done | head -n 1)
  [ -n "$base" ] || { echo "no Cairn OS base tree in $CACHE: run npm run image first"; return 1; }
  cp -a "$base" "$T"
  check_install "$T" arm64
  in_tree "$T" dpkg -r cairn-node
  note "installs in the Cairn OS base tree (qemu-user)"
}

run_stage tree-amd64 stage_tree_amd64
run_stage amd64 stage_install_amd64
run_stage arm64 stage_install_arm64
rm -rf "$WORK"
say "deb test: PASS ($(elapsed_total))"
