# Stage "fs": the six file systems as image files, made without mounting (FAT with
# mkfs.vfat -C and mcopy, ext4 with mke2fs -d).
#   config   autoboot.txt (tryboot A/B), README, an example cairn.yaml
#   boot A   Pi firmware, dtbs, kernel, initramfs, config.txt, cmdline.txt root=cairn-rootA
#   boot B   the same for slot B with --slot-b copy; empty (filled by the first OS update) otherwise
#   root A   the tree from the rootfs stage (its /boot/firmware left out)
#   root B   a copy of root A, or empty
#   data     /var/lib/cairn: the layout cairn-provision expects, time zone UTC

FAT_LABEL_CONFIG=CAIRN
export MTOOLS_SKIP_CHECK=1

# The kernel command line of a slot (cmdline.txt). The last console is the one systemd
# and the emergency shell use: the HDMI screen; the Pi 4's UART (ttyS1) also logs.
# panic=10: a boot that fails before systemd runs (no root found, a kernel panic) resets
# after 10 s instead of waiting in the initramfs shell, so a failed OS trial falls back
# to the committed slot by itself (the hardware watchdog covers hangs after that).
slot_cmdline() { echo "console=ttyS1,115200 console=tty0 root=LABEL=cairn-root$1 rootfstype=ext4 rootwait rw fsck.repair=yes net.ifnames=0 panic=10"; }

slot_config_txt() {
  cat <<EOT
# Cairn OS $VERSION, boot slot $1. Read by the Raspberry Pi firmware; an OS update
# rewrites this whole partition. Debian's upstream kernel and device trees.
[all]
arm_64bit=1
enable_uart=1
upstream_kernel=1
kernel=vmlinuz
initramfs initrd.img followkernel
EOT
}

fill_boot_slot() {
  local dir=$1 slot=$2 R=$ROOTFS kver
  kver=$(ls "$R/lib/modules" | sort -V | tail -n 1)
  mkdir -p "$dir"
  cp "$R"/usr/lib/raspi-firmware/*.elf "$R"/usr/lib/raspi-firmware/*.dat "$R"/usr/lib/raspi-firmware/bootcode.bin "$dir/"
  cp "$R/usr/lib/linux-image-$kver"/broadcom/bcm27*.dtb "$dir/"
  cp "$R/boot/vmlinuz-$kver" "$dir/vmlinuz"
  cp "$R/boot/initrd.img-$kver" "$dir/initrd.img"
  slot_config_txt "$slot" >"$dir/config.txt"
  slot_cmdline "$slot" >"$dir/cmdline.txt"
  printf 'slot=%s\nversion=%s\nkernel=%s\n' "$slot" "$VERSION" "$kver" >"$dir/cairn-slot.txt"
}

# make_fat FILE SIZE_MIB LABEL DIR
make_fat() {
  rm -f "$1"
  mkfs.vfat -C "$1" $(($2 * 1024)) -n "$3" >/dev/null
  if [ -n "$(ls -A "$4")" ]; then mcopy -s -p -i "$1" "$4"/* ::/; fi
  mdir -i "$1" ::/ 2>/dev/null | tail -n 2 || true
}

# make_ext4 FILE SIZE_MIB LABEL DIR
make_ext4() {
  rm -f "$1"
  mke2fs -q -F -t ext4 -L "$3" -m 1 -d "$4" -E root_owner=0:0 "$1" "$2M"
  e2fsck -fn "$1" >/dev/null
}

# make_ext4_owned FILE SIZE_MIB LABEL DIR: like make_ext4, keeping DIR's owner and mode
# for the file system's root directory
make_ext4_owned() {
  rm -f "$1"
  mke2fs -q -F -t ext4 -L "$3" -m 1 -d "$4" -E root_owner="$(stat -c %u:%g "$4")" "$1" "$2M"
  debugfs -w -R "sif / mode 0$(printf '%o' $((0040000 | 0$(stat -c %a "$4"))))" "$1" >/dev/null
  e2fsck -fn "$1" >/dev/null
}

stage_fs() {
  local F="$WORK/fs" S="$WORK/stage"
  rm -rf "$F" "$S"
  mkdir -p "$F" "$S/config" "$S/boota" "$S/bootb" "$S/empty" "$S/data"

  # config partition: the one a PC shows when the card is inserted
  cp "$HERE/files/autoboot.txt" "$HERE/files/README.txt" "$HERE/files/cairn.yaml.example" "$S/config/"
  sed -i 's/$/\r/' "$S/config/README.txt" "$S/config/cairn.yaml.example"
  make_fat "$F/config.vfat" "$CONFIG_MIB" "$FAT_LABEL_CONFIG" "$S/config"

  fill_boot_slot "$S/boota" A
  make_fat "$F/boota.vfat" "$BOOT_MIB" CAIRN-BOOTA "$S/boota"
  [ "$SLOT_B" = copy ] && fill_boot_slot "$S/bootb" B
  make_fat "$F/bootb.vfat" "$BOOT_MIB" CAIRN-BOOTB "$S/bootb"

  # root: what the Pi firmware reads lives in the boot slots, not here
  rm -rf "$ROOTFS/boot/firmware"; mkdir -p "$ROOTFS/boot/firmware"
  make_ext4 "$F/roota.ext4" "$ROOT_MIB" cairn-rootA "$ROOTFS"
  if [ "$SLOT_B" = copy ]; then make_ext4 "$F/rootb.ext4" "$ROOT_MIB" cairn-rootB "$ROOTFS"
  else make_ext4 "$F/rootb.ext4" "$ROOT_MIB" cairn-rootB "$S/empty"; fi

  # data: the layout from image-build/provision/provision-plan.ts (layoutSteps), owners numeric
  local uid gid nuid ngid
  uid=$(chroot "$ROOTFS" id -u cairn)
  gid=$(chroot "$ROOTFS" id -g cairn)
  nuid=$(chroot "$ROOTFS" id -u nodered)
  ngid=$(chroot "$ROOTFS" id -g nodered)
  # the top: root:cairn 1775 (the agent's local API socket and token live here; sticky,
  # so the agent cannot rename root's directories)
  chown 0:"$gid" "$S/data"; chmod 1775 "$S/data"
  install -d -m 0755 -o 0 -g 0 "$S/data/os"
  install -d -m 0700 -o "$uid" -g "$gid" "$S/data/agent"
  install -d -m 0750 -o 0 -g "$gid" "$S/data/etc" "$S/data/etc/node-red"
  install -d -m 0750 -o "$nuid" -g "$ngid" "$S/data/node-red"
  ln -s /usr/share/zoneinfo/UTC "$S/data/os/localtime"
  echo UTC >"$S/data/os/timezone"
  make_ext4_owned "$F/data.ext4" "$DATA_MIB" cairn-data "$S/data"
  note "root $(du -sh "$ROOTFS" | cut -f1) in ${ROOT_MIB} MiB"
}
