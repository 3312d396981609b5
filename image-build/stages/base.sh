# Stage "base": the Debian trixie arm64 tree (packages.list), cached under
# $CACHE/base-<key>, where the key hashes the package list, the mirrors, the files copied
# in before the packages install, and BASE_FORMAT. A warm build skips this stage.
# The Node headers for cross-compiling native addons are saved beside it, from the same
# archive state as the tree's nodejs, so the addon matches the image's Node ABI.

# Bump BASE_FORMAT when a change to this stage changes the tree in a way the key below
# does not see (the hooks); comments and clean-up do not need a bump.
BASE_FORMAT=1
SUITE=trixie
MIRRORS=(
  "deb http://deb.debian.org/debian $SUITE main non-free-firmware"
  "deb http://deb.debian.org/debian $SUITE-updates main non-free-firmware"
  "deb http://deb.debian.org/debian-security $SUITE-security main non-free-firmware"
)
# --kernel backports (the default) takes linux-image-arm64 from trixie-backports: trixie's
# own 6.12 lacks the Pi 5's SD controller (SDHCI_BRCMSTB) and RP1 (Ethernet, USB, GPIO).
# --kernel stable keeps trixie's security-supported 6.12: a Pi 4-only image. Only the
# kernel comes from backports (apt pins nothing else there: backports are NotAutomatic).
# docs/image.md, "Which kernel serves which board".
base_mirrors() {
  printf '%s\n' "${MIRRORS[@]}"
  [ "$KERNEL" = backports ] && printf '%s\n' "deb http://deb.debian.org/debian $SUITE-backports main non-free-firmware"
  return 0
}

base_packages() {
  local kpkg=linux-image-arm64
  [ "$KERNEL" = backports ] && kpkg="linux-image-arm64/$SUITE-backports"
  sed -e 's/#.*//' -e 's/[[:space:]]//g' "$HERE/packages.list" | grep -v '^$' | sed "s|^linux-image-arm64\$|$kpkg|" | paste -sd, -
}

# Recommends off: everything the image needs is listed. Documentation and translations
# are left out (copyright files stay).
MMDEBSTRAP_OPTS=(--arch=arm64 --variant=minbase --mode=root
  --aptopt='APT::Install-Recommends "false"'
  --dpkgopt='path-exclude=/usr/share/man/*'
  --dpkgopt='path-exclude=/usr/share/doc/*'
  --dpkgopt='path-include=/usr/share/doc/*/copyright'
  --dpkgopt='path-exclude=/usr/share/info/*'
  --dpkgopt='path-exclude=/usr/share/locale/*'
  --dpkgopt='path-include=/usr/share/locale/locale.alias')

# (the stable kernel's key is the one from before --kernel existed, so its cache stays valid)
base_key() {
  local extra=()
  [ "$KERNEL" = backports ] && extra=("kernel=backports")
  hash_inputs "format=$BASE_FORMAT" "${MIRRORS[*]}" "${MMDEBSTRAP_OPTS[*]}" "$HERE/packages.list" "$HERE/base-overlay" "${extra[@]}"
}

stage_base() {
  local key dir tmp
  key=$(base_key)
  dir=$BASE_DIR
  # A cached tree is refreshed after BASE_MAX_AGE_DAYS so security updates get in.
  if [ -f "$dir/.complete" ] && [ -n "$(find "$dir/.complete" -mtime "+${BASE_MAX_AGE_DAYS:-14}")" ]; then
    echo "cached base tree is older than ${BASE_MAX_AGE_DAYS:-14} days: rebuilding"
    REBUILD_BASE=1
  fi
  if [ -f "$dir/.complete" ] && [ "$REBUILD_BASE" != 1 ]; then
    echo "using cached base tree $dir"
    note "cached ($key)"
    return 0
  fi
  tmp="$dir.partial"
  rm -rf "$tmp" "$dir"
  mkdir -p "$tmp/tree" "$tmp/debs"
  local mirrors=()
  mapfile -t mirrors < <(base_mirrors)
  echo "building base tree $dir (kernel: $KERNEL) from: $(base_packages)"
  # The overlay goes in before the packages so the kernel's postinst already builds the
  # initramfs with MODULES=list. The Node headers come from the same archive state.
  nice -n 10 mmdebstrap "${MMDEBSTRAP_OPTS[@]}" \
    --include="$(base_packages)" \
    --essential-hook="cp -a '$HERE/base-overlay/.' \"\$1/\"" \
    --customize-hook="chroot \"\$1\" sh -c 'cd /tmp && apt-get download libnode-dev libuv1-dev' && mv \"\$1\"/tmp/*.deb '$tmp/debs/'" \
    "$SUITE" "$tmp/tree" "${mirrors[@]}"
  # mmdebstrap empties /etc/machine-id; "uninitialized" makes systemd treat the first
  # real boot as the first boot (see docs/image.md, "machine id").
  echo uninitialized >"$tmp/tree/etc/machine-id"
  mkdir -p "$tmp/headers"
  for d in "$tmp"/debs/*.deb; do dpkg-deb -x "$d" "$tmp/headers"; done
  chroot "$tmp/tree" dpkg-query -W -f '${Package} ${Version}\n' >"$tmp/manifest.txt"
  echo "$KERNEL" >"$tmp/kernel"
  touch "$tmp/.complete"
  mv "$tmp" "$dir"
  # one base tree per kernel flavour: drop those of older package lists (about 600 MB
  # each); a tree without a flavour file predates --kernel and had the stable kernel
  local old
  for old in "$CACHE"/base-*; do
    [ "$old" = "$dir" ] && continue
    [ "$(cat "$old/kernel" 2>/dev/null || echo stable)" = "$KERNEL" ] && rm -rf "$old"
  done
  note "built ($key, $(du -sh "$dir/tree" | cut -f1))"
}
