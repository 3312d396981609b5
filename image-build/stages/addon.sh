# Stage "addon": better-sqlite3's native addon cross-compiled for arm64 against the
# image's own Node headers (Debian's libnode-dev and libuv1-dev, saved by the base
# stage), so its ABI matches the image's nodejs. Cached under $CACHE/addon-<key>.
# The rootfs stage proves it loads inside the arm64 tree.

ADDON_PKG=better-sqlite3

addon_key() {
  hash_inputs "$(base_key)" "$REPO/node_modules/$ADDON_PKG/package.json" "$HERE/stages/addon.sh"
}

stage_addon() {
  if [ -f "$ADDON_DIR/.complete" ]; then
    note "cached ($(basename "$ADDON_DIR"))"
    return 0
  fi
  local tmp="$ADDON_DIR.partial" nodedir src inc
  rm -rf "$tmp"
  mkdir -p "$tmp"
  nodedir="$WORK/nodedir"
  src="$WORK/addon-src"
  inc="$BASE_DIR/headers/usr/include"
  test -f "$inc/node/node.h" || { echo "no Node headers in $inc (base stage)"; return 1; }
  mkdir -p "$nodedir/include"
  cp -a "$inc/node" "$nodedir/include/node"
  # Debian builds nodejs against the system libuv; node-gyp looks for uv.h beside node.h.
  cp -a "$inc/uv.h" "$inc/uv" "$nodedir/include/node/"
  rm -rf "$src"
  mkdir -p "$src"
  (cd "$REPO/node_modules/$ADDON_PKG" && tar --exclude=./build -cf - .) | tar -C "$src" -xf -
  local gyp
  gyp="$(npm root -g)/npm/node_modules/node-gyp/bin/node-gyp.js"
  (
    cd "$src"
    export CC=aarch64-linux-gnu-gcc CXX=aarch64-linux-gnu-g++ LINK=aarch64-linux-gnu-g++ AR=aarch64-linux-gnu-ar
    nice -n 10 node "$gyp" rebuild --release --arch=arm64 --nodedir="$nodedir" -j 2
  )
  local so="$src/build/Release/better_sqlite3.node"
  file "$so" | tee /dev/stderr | grep -q 'ARM aarch64'
  # What the runtime needs: the JS, the addon, and `bindings` (which finds the addon).
  mkdir -p "$tmp/node_modules/$ADDON_PKG/build/Release"
  cp -a "$src/package.json" "$src/lib" "$src/LICENSE" "$tmp/node_modules/$ADDON_PKG/"
  cp -a "$so" "$tmp/node_modules/$ADDON_PKG/build/Release/"
  aarch64-linux-gnu-strip --strip-unneeded "$tmp/node_modules/$ADDON_PKG/build/Release/better_sqlite3.node"
  for dep in bindings file-uri-to-path; do cp -a "$REPO/node_modules/$dep" "$tmp/node_modules/"; done
  echo "$KERNEL" >"$tmp/kernel"
  touch "$tmp/.complete"
  rm -rf "$ADDON_DIR"
  mv "$tmp" "$ADDON_DIR"
  # one addon per kernel flavour, as for the base trees (switching --kernel then costs no
  # rebuild); one without a flavour file predates this and goes
  local old
  for old in "$CACHE"/addon-*; do
    [ "$old" = "$ADDON_DIR" ] && continue
    [ "$(cat "$old/kernel" 2>/dev/null || echo "$KERNEL")" = "$KERNEL" ] && rm -rf "$old"
  done
  note "built ($(du -h "$ADDON_DIR/node_modules/$ADDON_PKG/build/Release/better_sqlite3.node" | cut -f1))"
}
