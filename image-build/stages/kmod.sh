# Stage "kmod": cairn_tryboot.ko (image-build/kmod/), which sets the Raspberry Pi
# firmware's tryboot flag on restart: Debian's kernels lack the downstream patch that
# does it, and A/B OS updates need it. Built inside a scratch copy of the base tree, with
# the tree's own gcc and the headers of its kernel, so the module matches that kernel.
# Cached under $CACHE/kmod-<key> (KMOD_DIR); the rootfs stage installs it (install_kmod).

KMOD_NAME=cairn_tryboot
# the firmware interface the module uses (exported GPL by drivers/firmware/raspberrypi.c)
KMOD_SYMS=(rpi_firmware_get rpi_firmware_put rpi_firmware_property_list)

kmod_key() {
  hash_inputs "$(base_key)" "$HERE/kmod" "$HERE/stages/kmod.sh"
}

# The kernel of the base tree: its release (the /lib/modules dir) and package version.
kmod_kver() { ls "$BASE_DIR/tree/lib/modules" | sort -V | tail -n 1; }
kmod_kpkg_version() { awk -v p="linux-image-$1" '$1 == p { print $2 }' "$BASE_DIR/manifest.txt"; }

stage_kmod() {
  local kver kpkgver
  kver=$(kmod_kver)
  [ -n "$kver" ] || { echo "no kernel in $BASE_DIR/tree/lib/modules"; return 1; }
  kpkgver=$(kmod_kpkg_version "$kver")
  [ -n "$kpkgver" ] || { echo "linux-image-$kver is not in $BASE_DIR/manifest.txt"; return 1; }
  # The key does not change when the base tree is refreshed (BASE_MAX_AGE_DAYS), the
  # kernel may: a module built for another kernel is rebuilt.
  if [ -f "$KMOD_DIR/.complete" ] && [ "$(cat "$KMOD_DIR/kver")" = "$kver" ] &&
    [ "$(cat "$KMOD_DIR/kernel-version")" = "$kpkgver" ]; then
    note "cached ($(basename "$KMOD_DIR"), kernel $kver)"
    return 0
  fi
  local T="$WORK/kmod-tree" tmp="$KMOD_DIR.partial" src=/usr/src/$KMOD_NAME
  local hdr="/usr/src/linux-headers-$kver" ko="$src/$KMOD_NAME.ko"
  rm -rf "$T" "$tmp"
  cp -a "$BASE_DIR/tree" "$T"
  rm -f "$T/etc/resolv.conf"
  cp -L /etc/resolv.conf "$T/etc/resolv.conf"

  # The headers of exactly the image's kernel package (no -t: for --kernel backports they
  # exist only in trixie-backports, like the kernel, and apt takes them from there; gcc
  # and make come from trixie). They pull in the gcc-NN and pahole the kernel was built with.
  in_tree "$T" apt-get -o Acquire::Languages=none update
  in_tree "$T" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
    "linux-headers-$kver=$kpkgver" gcc make
  local sym missing=()
  for sym in "${KMOD_SYMS[@]}"; do
    grep -Eq "^[^[:space:]]+[[:space:]]$sym[[:space:]]" "$T$hdr/Module.symvers" || missing+=("$sym")
  done
  [ ${#missing[@]} -eq 0 ] || {
    echo "kernel $kver does not export ${missing[*]} (Module.symvers of linux-headers-$kver): cairn_tryboot cannot be built for it"
    return 1
  }
  grep -E "[[:space:]]($(IFS='|'; echo "${KMOD_SYMS[*]}"))[[:space:]]" "$T$hdr/Module.symvers"

  # The compiler the kernel was built with (CONFIG_CC_VERSION_TEXT) must be the tree's.
  local cctext cc have
  cctext=$(sed -n 's/^CONFIG_CC_VERSION_TEXT="\(.*\)"$/\1/p' "$T$hdr/.config")
  cc=${cctext%% *}
  have=$(in_tree "$T" "$cc" --version | head -n 1) || { echo "the kernel was built with $cc ($cctext), which the tree lacks"; return 1; }
  echo "kernel built with: $cctext; tree's $cc: $have"
  [ "$have" = "$cctext" ] || echo "warning: the tree's $cc is not the exact build of the kernel's (kbuild will say so too)"

  rm -rf "$T$src"
  cp -a "$HERE/kmod" "$T$src"
  in_tree "$T" make -C "/lib/modules/$kver/build" M="$src" modules
  in_tree "$T" strip --strip-debug "$ko"
  in_tree "$T" modinfo "$ko" | tee "$WORK/kmod-modinfo.txt"
  local vermagic
  vermagic=$(in_tree "$T" modinfo -F vermagic "$ko")
  case "$vermagic" in "$kver "*) ;; *) echo "vermagic '$vermagic' is not kernel $kver's"; return 1 ;; esac

  mkdir -p "$tmp"
  install -m 0644 "$T$ko" "$tmp/$KMOD_NAME.ko"
  cp "$WORK/kmod-modinfo.txt" "$tmp/modinfo.txt"
  echo "$kver" >"$tmp/kver"
  echo "$kpkgver" >"$tmp/kernel-version"
  echo "$KERNEL" >"$tmp/kernel"
  touch "$tmp/.complete"
  rm -rf "$KMOD_DIR"
  mv "$tmp" "$KMOD_DIR"
  # one module per kernel flavour, as for the base trees
  local old
  for old in "$CACHE"/kmod-*; do
    [ "$old" = "$KMOD_DIR" ] && continue
    [ "$(cat "$old/kernel" 2>/dev/null)" = "$KERNEL" ] && rm -rf "$old"
  done
  rm -rf "$T"
  note "built ($(du -h "$KMOD_DIR/$KMOD_NAME.ko" | cut -f1), kernel $kver)"
}

# install_kmod ROOTFS KVER: the cached module into ROOTFS's kernel KVER (updates/, which
# depmod prefers over the kernel's own modules), and modules.dep refreshed by the tree's
# own depmod.
install_kmod() {
  local R=$1 kver=$2 built
  built=$(cat "$KMOD_DIR/kver" 2>/dev/null) || { echo "install_kmod: no $KMOD_NAME.ko in $KMOD_DIR (kmod stage)"; return 1; }
  [ "$built" = "$kver" ] || { echo "install_kmod: $KMOD_NAME.ko was built for kernel $built, the tree has $kver"; return 1; }
  install -D -m 0644 "$KMOD_DIR/$KMOD_NAME.ko" "$R/lib/modules/$kver/updates/$KMOD_NAME.ko"
  chroot "$R" depmod -a "$kver"
  grep -q "^updates/$KMOD_NAME.ko:" "$R/lib/modules/$kver/modules.dep" || { echo "install_kmod: depmod did not list $KMOD_NAME"; return 1; }
  echo "$KMOD_NAME.ko installed for kernel $kver"
}
