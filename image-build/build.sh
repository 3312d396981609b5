#!/usr/bin/env bash
# Builds the Cairn OS image for Raspberry Pi 4/5 (arm64):
#   image-build/build.sh [--out DIR] [--cache DIR] [--version V] [--rebuild-base]
#                        [--slot-b empty|copy] [--no-xz] [--xz-level N] [--keep-raw] [--keep-work]
#                        [--until STAGE] [--kernel backports|stable]
#                        [--release-root FILE --release-url URL [--release-channel NAME]]
#                        [--no-cairn-nodes] [--no-os-release]
# --kernel: backports (default; Pi 4 and Pi 5) or stable (trixie's 6.12; Pi 4 only).
# --release-root/--release-url: the TUF root.json and URL of the agent's release channel
# shipped in the image; without them the image has no OTA channel (and says so).
# Output: DIR/cairn-<version>-rpi-arm64.img.xz and .sha256 (default DIR: ./image-out);
# --xz-level: 0-9 (default 6, what a release ships; CI takes 1, a few times faster and
# about a fifth larger). --keep-raw also leaves the raw .img (sparse) there, for the boot test. Also the same
# OS as an OS release for devices in the field, DIR/cairn-os-<version>-rpi-arm64.tar.zst
# and .sha256 (`cairn release add --kind os`); --no-os-release leaves it out.
# Stages print their elapsed time; a failure names the stage and keeps its log.
# Needs root, mmdebstrap, qemu-user-static with binfmt, dosfstools, mtools, fdisk,
# e2fsprogs, xz-utils and g++-aarch64-linux-gnu (image-build/ci-step.sh installs them).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
. "$HERE/lib.sh"
for f in "$HERE"/stages/*.sh; do . "$f"; done

OUT="$REPO/image-out"
CACHE=/var/cache/cairn-image
VERSION=''
REBUILD_BASE=0
SLOT_B=empty
XZ=1
XZ_LEVEL=6
KEEP_RAW=0
KEEP_WORK=0
UNTIL=''
KERNEL=backports
RELEASE_ROOT=''
RELEASE_URL=''
RELEASE_CHANNEL=stable
CAIRN_NODES=1
OS_RELEASE=1
while [ $# -gt 0 ]; do
  case "$1" in
    --out) OUT=$2; shift 2 ;;
    --cache) CACHE=$2; shift 2 ;;
    --version) VERSION=$2; shift 2 ;;
    --rebuild-base) REBUILD_BASE=1; shift ;;
    --slot-b) SLOT_B=$2; shift 2 ;;
    --no-xz) XZ=0; shift ;;
    --xz-level) XZ_LEVEL=$2; shift 2 ;;
    --keep-raw) KEEP_RAW=1; shift ;;
    --keep-work) KEEP_WORK=1; shift ;;
    --until) UNTIL=$2; shift 2 ;;
    --kernel) KERNEL=$2; shift 2 ;;
    --release-root) RELEASE_ROOT=$2; shift 2 ;;
    --release-url) RELEASE_URL=$2; shift 2 ;;
    --release-channel) RELEASE_CHANNEL=$2; shift 2 ;;
    --no-cairn-nodes) CAIRN_NODES=0; shift ;;
    --no-os-release) OS_RELEASE=0; shift ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done
case "$SLOT_B" in empty|copy) ;; *) die "--slot-b must be empty or copy" ;; esac
case "$KERNEL" in backports|stable) ;; *) die "--kernel must be backports or stable" ;; esac
case "$XZ_LEVEL" in [0-9]) ;; *) die "--xz-level must be 0 to 9, not '$XZ_LEVEL'" ;; esac
if [ -n "$RELEASE_ROOT$RELEASE_URL" ]; then
  [ -n "$RELEASE_ROOT" ] && [ -n "$RELEASE_URL" ] || die "--release-root and --release-url go together"
  [ -f "$RELEASE_ROOT" ] || die "--release-root $RELEASE_ROOT: no such file"
  node -e 'const r = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8")); if (r.signed?._type !== "root") throw new Error("not a TUF root.json")' "$RELEASE_ROOT" 2>/dev/null || die "--release-root $RELEASE_ROOT is not a TUF root.json"
  RELEASE_ROOT=$(cd "$(dirname "$RELEASE_ROOT")" && pwd)/$(basename "$RELEASE_ROOT")
  case "$RELEASE_URL" in http://*|https://*) ;; *) die "--release-url must be an http(s) URL" ;; esac
fi
[ "$(id -u)" -eq 0 ] || die "run as root (mmdebstrap, chroot and mke2fs -d need it)"
[ -n "$VERSION" ] || VERSION=$(node -p "require('$REPO/package.json').version")

mkdir -p "$OUT" "$CACHE"
exec 9>"$CACHE/.lock"
flock -n 9 || die "another build is using $CACHE (lock $CACHE/.lock)"
OUT=$(cd "$OUT" && pwd)
LOG_DIR="$OUT/logs"
rm -rf "$LOG_DIR"; mkdir -p "$LOG_DIR"
WORK=$(mktemp -d /var/tmp/cairn-image.XXXXXX)
IMAGE_NAME="cairn-$VERSION-rpi-arm64.img"
OS_RELEASE_NAME="cairn-os-$VERSION-rpi-arm64.tar.zst"

BASE_DIR="$CACHE/base-$(base_key)"
ADDON_DIR="$CACHE/addon-$(addon_key)"
NODE_RED_DIR="$CACHE/node-red-$(nodered_key)"
KMOD_DIR="$CACHE/kmod-$(kmod_key)"
ROOTFS="$WORK/rootfs"

STAGES=(preflight base addon nodered kmod rootfs fs osrelease assemble compress)
IMG_STAGE_TOTAL=${#STAGES[@]}
say "cairn image $VERSION: out $OUT, cache $CACHE, work $WORK, kernel $KERNEL"
if [ -n "$RELEASE_URL" ]; then say "agent OTA channel: $RELEASE_URL ($RELEASE_CHANNEL)"; else say "no --release-root/--release-url: the image has no agent OTA channel (updates off)"; fi
for s in "${STAGES[@]}"; do
  run_stage "$s" "stage_$s"
  if [ "$s" = "$UNTIL" ]; then say "stopped after stage $s (--until); work dir $WORK"; exit 0; fi
done
[ "$KEEP_WORK" = 1 ] && say "work dir kept: $WORK" || rm -rf "$WORK"
if [ "$XZ" = 1 ]; then say "done in $(elapsed_total): $OUT/$IMAGE_NAME.xz"; else say "done in $(elapsed_total): $OUT/$IMAGE_NAME"; fi
