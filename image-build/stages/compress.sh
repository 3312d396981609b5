# Stage "compress": the image as .img.xz (what Raspberry Pi Imager, balenaEtcher and
# `xzcat | dd` take) with its sha256; --no-xz keeps the raw .img instead (tests).

stage_compress() {
  local img="$WORK/$IMAGE_NAME"
  rm -f "$OUT/$IMAGE_NAME" "$OUT/$IMAGE_NAME.xz" "$OUT/$IMAGE_NAME.xz.sha256" "$OUT/$IMAGE_NAME.sha256"
  if [ "$XZ" = 1 ]; then
    nice -n 10 xz -T0 "-$XZ_LEVEL" --keep --stdout "$img" >"$OUT/$IMAGE_NAME.xz.partial"
    mv "$OUT/$IMAGE_NAME.xz.partial" "$OUT/$IMAGE_NAME.xz"
    (cd "$OUT" && sha256sum "$IMAGE_NAME.xz" >"$IMAGE_NAME.xz.sha256")
    note "$(du -h "$OUT/$IMAGE_NAME.xz" | cut -f1) xz -$XZ_LEVEL"
  fi
  if [ "$XZ" = 0 ] || [ "$KEEP_RAW" = 1 ]; then
    cp --sparse=always "$img" "$OUT/$IMAGE_NAME"
    (cd "$OUT" && sha256sum "$IMAGE_NAME" >"$IMAGE_NAME.sha256")
  fi
}
