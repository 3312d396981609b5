# Shared helpers for image-build/*.sh: stage runner with elapsed times, logging, cache keys.
# Sourced, not run.

IMG_T0=$(date +%s)
IMG_STAGE_N=0
IMG_STAGE_TOTAL=${IMG_STAGE_TOTAL:-0}

fmt_secs() { local s=$1; if [ "$s" -ge 60 ]; then printf '%dm%02ds' $((s / 60)) $((s % 60)); else printf '%ds' "$s"; fi; }

say() { printf '%s\n' "$*" >&2; }
die() { say "image-build: $*"; exit 1; }

# run_stage NAME FUNCTION: runs FUNCTION with its output in $LOG_DIR/NN-NAME.log and one
# progress line on the terminal. On failure it names the stage, shows the log's tail and
# exits non-zero, leaving the log and the work dir for inspection.
run_stage() {
  local name=$1 fn=$2
  IMG_STAGE_N=$((IMG_STAGE_N + 1))
  local log
  log=$(printf '%s/%02d-%s.log' "$LOG_DIR" "$IMG_STAGE_N" "$name")
  local t0 note
  t0=$(date +%s)
  printf '[%d/%d] %-10s ' "$IMG_STAGE_N" "$IMG_STAGE_TOTAL" "$name" >&2
  STAGE_NOTE=''
  : >"$log"
  # The stage function runs in a subshell so that `set -e` inside it stops the stage,
  # not the caller, and the caller can report which stage failed.
  # (Not inside `if`: there bash would ignore set -e in the subshell.)
  local rc
  set +e
  ( set -euo pipefail; "$fn" ) >>"$log" 2>&1 3>"$LOG_DIR/.note"
  rc=$?
  set -e
  if [ "$rc" -eq 0 ]; then
    note=$(cat "$LOG_DIR/.note" 2>/dev/null || true)
    printf '%8s  %s\n' "$(fmt_secs $(($(date +%s) - t0)))" "$note" >&2
  else
    printf '%8s  FAILED\n' "$(fmt_secs $(($(date +%s) - t0)))" >&2
    say ''
    say "image-build: stage '$name' failed (exit $rc) after $(fmt_secs $(($(date +%s) - t0))); last lines of $log:"
    tail -n 25 "$log" | sed 's/^/  | /' >&2
    say "image-build: full log kept at $log${WORK:+; work dir kept at $WORK}"
    exit 1
  fi
}

# note TEXT: a short remark shown after the stage's time (e.g. "cached").
note() { printf '%s ' "$*" >&3; }

elapsed_total() { fmt_secs $(($(date +%s) - IMG_T0)); }

# Runs a command inside a tree with /proc, /sys and /dev available (update-initramfs and
# some maintainer scripts need them), undone whatever happens.
in_tree() {
  local tree=$1; shift
  # (the host's NODE_EXTRA_CA_CERTS names a file the tree may not have)
  env -u NODE_EXTRA_CA_CERTS unshare --mount --fork -- sh -c '
    tree=$1; shift
    mount -t proc proc "$tree/proc"
    mount --rbind /sys "$tree/sys"
    mount --rbind /dev "$tree/dev"
    exec chroot "$tree" "$@"' sh "$tree" "$@"
}

# Content hash of files and literal strings, for cache keys.
hash_inputs() {
  local x
  for x in "$@"; do
    if [ -d "$x" ]; then (cd "$x" && find . -type f -o -type l | LC_ALL=C sort | while read -r f; do printf '%s\n' "$f"; if [ -L "$f" ]; then readlink "$f"; else cat "$f"; fi; done)
    elif [ -f "$x" ]; then cat "$x"
    else printf '%s' "$x"
    fi
    printf '\0'
  done | sha256sum | cut -c1-16
}
