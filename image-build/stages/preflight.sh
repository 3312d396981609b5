# Stage "preflight": host tools, arm64 emulation, and fresh bundles of the agent and the
# first-boot program (dist/cairn.mjs, dist/image/provision.mjs).

REQUIRED_TOOLS=(file mmdebstrap qemu-aarch64-static sfdisk mkfs.vfat mcopy mmd mdir mke2fs e2fsck xz zstd cpio aarch64-linux-gnu-g++ dpkg-deb unshare)

ensure_binfmt() {
  # The aarch64 handler must be registered with the F flag so chroot works without
  # copying qemu into the tree.
  [ -e /proc/sys/fs/binfmt_misc/register ] || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
  [ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] || update-binfmts --enable qemu-aarch64
  grep -q '^enabled' /proc/sys/fs/binfmt_misc/qemu-aarch64 || update-binfmts --enable qemu-aarch64
  grep -q '^flags:.*F' /proc/sys/fs/binfmt_misc/qemu-aarch64 || { echo "qemu-aarch64 binfmt lacks the F flag"; return 1; }
}

stage_preflight() {
  local missing=() t
  for t in "${REQUIRED_TOOLS[@]}"; do command -v "$t" >/dev/null || missing+=("$t"); done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "missing host tools: ${missing[*]}"
    echo "install: apt-get install mmdebstrap qemu-user-static binfmt-support dosfstools mtools fdisk e2fsprogs xz-utils zstd cpio file g++-aarch64-linux-gnu"
    echo "(or run image-build/ci-step.sh, which installs them)"
    return 1
  fi
  ensure_binfmt
  (cd "$REPO" && node cli/bundle.mjs && node image-build/bundle-image.mjs)
  test -s "$REPO/dist/cairn.mjs"
  test -s "$REPO/dist/infer-worker.mjs"
  test -s "$REPO/dist/image/provision.mjs"
  note "agent $(du -h "$REPO/dist/cairn.mjs" | cut -f1)"
}
