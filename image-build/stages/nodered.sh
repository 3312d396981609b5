# Stage "nodered": Node-RED for the device (issue 7), installed from the npm registry
# into $CACHE/node-red-<key> (the key hashes the version and this file), so a warm build
# does not fetch it again. Pure JavaScript: optional native addons (bcrypt) are left out,
# Node-RED then uses bcryptjs; no install scripts run (they would build for the host).
# The Cairn nodes (flows/node-red-contrib-cairn) change with the repo, so the rootfs stage
# adds them to a copy of this tree on every build.

NODE_RED_VERSION=4.1.15

nodered_key() { hash_inputs "node-red@$NODE_RED_VERSION" "$HERE/stages/nodered.sh"; }

stage_nodered() {
  if [ -f "$NODE_RED_DIR/.complete" ]; then
    note "cached (node-red $NODE_RED_VERSION)"
    return 0
  fi
  local tmp="$NODE_RED_DIR.partial"
  rm -rf "$tmp"
  mkdir -p "$tmp"
  printf '{ "name": "cairn-node-red", "private": true, "description": "Node-RED on Cairn OS" }\n' >"$tmp/package.json"
  nice -n 10 npm install --prefix "$tmp" --omit=optional --omit=dev --ignore-scripts --no-audit --no-fund --no-update-notifier "node-red@$NODE_RED_VERSION"
  node -e "const v = require('$tmp/node_modules/node-red/package.json').version; if (v !== '$NODE_RED_VERSION') throw new Error('got node-red ' + v)"
  touch "$tmp/.complete"
  rm -rf "$NODE_RED_DIR"
  mv "$tmp" "$NODE_RED_DIR"
  local old
  for old in "$CACHE"/node-red-*; do [ "$old" = "$NODE_RED_DIR" ] || rm -rf "$old"; done
  note "fetched node-red $NODE_RED_VERSION ($(du -sh "$NODE_RED_DIR" | cut -f1))"
}
