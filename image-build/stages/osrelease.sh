# Stage "osrelease": the same OS as an OS release, for devices already in the field:
# cairn-os-<version>-rpi-arm64.tar.zst (+ .sha256) beside the image, made with
# `cairn release pack-os` from boot slot A's files and the root tree as an ext4 image
# sized to its content (the device grows it to fill its partition) and labelled
# cairn-root (the device names it after the slot it lands in). Publish it with
# `cairn release add --kind os --arch arm64` (docs/image.md, "OS updates").

OS_RELEASE_LEVEL=${OS_RELEASE_LEVEL:-6}

stage_osrelease() {
  if [ "$OS_RELEASE" != 1 ]; then
    note "skipped (--no-os-release)"
    return 0
  fi
  local img="$WORK/fs/release-root.img" kib mib out="$OUT/$OS_RELEASE_NAME"
  kib=$(du -sk --exclude=./proc "$ROOTFS" | cut -f1)
  # room for the ext4 metadata and a little slack; the device resizes it anyway
  mib=$((kib * 112 / 100 / 1024 + 96))
  make_ext4 "$img" "$mib" cairn-root "$ROOTFS"
  rm -f "$out" "$out.sha256" "$out.partial"
  nice -n 10 node "$REPO/dist/cairn.mjs" release pack-os --boot "$WORK/stage/boota" --root "$img" --version "$VERSION" --out "$out.partial" --level "$OS_RELEASE_LEVEL"
  mv "$out.partial" "$out"
  (cd "$OUT" && sha256sum "$OS_RELEASE_NAME" >"$OS_RELEASE_NAME.sha256")
  rm -f "$img"
  note "$(du -h "$out" | cut -f1) (root ${mib} MiB)"
}
