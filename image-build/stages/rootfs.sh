# Stage "rootfs": the Cairn layer on a copy of the cached base tree: the agent bundle and
# its arm64 addon, the first-boot program, the cairn user, systemd units and settings
# (image-build/rootfs/), /etc symlinks into the data partition, and a fresh initramfs.
# Ends by running the agent and the addon inside the tree under qemu-user.

ENABLE_UNITS=(systemd-networkd.service systemd-resolved.service systemd-timesyncd.service
  avahi-daemon.service ssh.service cairn-provision.service cairn-grow-data.service
  cairn-agent.service cairn-reboot.path)

stage_rootfs() {
  local R=$ROOTFS
  rm -rf "$R"
  cp -a "$BASE_DIR/tree" "$R"

  # settings and units; the repo's file modes are kept, owners are root
  cp -a "$HERE/rootfs/." "$R/"
  (cd "$HERE/rootfs" && find . -mindepth 1) | while read -r p; do chown -h 0:0 "$R/$p"; done

  # the agent
  install -d -m 0755 "$R/opt/cairn"
  install -m 0755 "$REPO/dist/cairn.mjs" "$R/opt/cairn/cairn.mjs"
  install -m 0644 "$REPO/dist/image/provision.mjs" "$R/opt/cairn/provision.mjs"
  cp -a "$ADDON_DIR/node_modules" "$R/opt/cairn/"
  chown -R 0:0 "$R/opt/cairn"
  printf '%s\n' "$VERSION" >"$R/opt/cairn/VERSION"

  # the unprivileged user the agent runs as (no login, no password)
  chroot "$R" useradd --system --user-group --home-dir /var/lib/cairn/agent --no-create-home --shell /usr/sbin/nologin cairn

  # /etc entries that must survive OS updates and a read-only root point into the data
  # partition, which the initramfs mounts before systemd starts
  install -d -m 0755 "$R/var/lib/cairn" "$R/boot/cairn"
  ln -sfn /var/lib/cairn/os/hostname "$R/etc/hostname"
  ln -sfn /var/lib/cairn/os/localtime "$R/etc/localtime"
  rm -f "$R/etc/timezone"
  install -d -m 0755 "$R/etc/wpa_supplicant" "$R/etc/avahi/services"
  ln -sfn /var/lib/cairn/os/wpa_supplicant-wlan0.conf "$R/etc/wpa_supplicant/wpa_supplicant-wlan0.conf"
  ln -sfn /var/lib/cairn/os/avahi-cairn.service "$R/etc/avahi/services/cairn.service"
  # no host key baked into the image: each device makes its own (cairn-provision)
  rm -f "$R"/etc/ssh/ssh_host_*
  # systemd-resolved's stub resolver
  ln -sfn ../run/systemd/resolve/stub-resolv.conf "$R/etc/resolv.conf"
  # Cairn OS in os-release, for support questions
  sed -i "s/^PRETTY_NAME=.*/PRETTY_NAME=\"Cairn OS $VERSION (Debian $(cut -d. -f1 "$R/etc/debian_version"))\"/" "$R/usr/lib/os-release"
  printf 'CAIRN_VERSION=%s\nCAIRN_BUILT=%s\n' "$VERSION" "$(date -u +%FT%TZ)" >"$R/etc/cairn-release"

  chroot "$R" systemctl enable "${ENABLE_UNITS[@]}"
  # Wi-Fi starts when wlan0 appears (never in qemu, so no 90 s device wait there)
  install -d "$R/etc/systemd/system/sys-subsystem-net-devices-wlan0.device.wants"
  ln -sfn /usr/lib/systemd/system/wpa_supplicant@.service "$R/etc/systemd/system/sys-subsystem-net-devices-wlan0.device.wants/wpa_supplicant@wlan0.service"
  # wpa_supplicant's D-Bus service would compete with the per-interface one
  chroot "$R" systemctl disable wpa_supplicant.service || true
  # the provisioned host key lives on the data partition; no keys in /etc/ssh
  chroot "$R" systemctl mask sshd-keygen.service
  # an appliance: OS updates come as whole A/B slots, not from apt on the device
  chroot "$R" systemctl disable apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer
  # systemd's ssh-over-vsock generator only logs an error on a Pi
  install -d "$R/etc/systemd/system-generators"
  ln -sfn /dev/null "$R/etc/systemd/system-generators/systemd-ssh-generator"
  # no passwords: root is locked (console and ssh-key logins only)
  chroot "$R" passwd -l root

  # initramfs with the Cairn hooks (modules, data partition, machine id)
  local kver
  kver=$(ls "$R/lib/modules" | sort -V | tail -n 1)
  in_tree "$R" update-initramfs -c -k "$kver"
  in_tree "$R" lsinitramfs "/boot/initrd.img-$kver" >"$WORK/initramfs.list"
  local m missing=()
  for m in sdhci-iproc mmc/host/bcm2835.ko xhci-pci usb-storage uas reset-raspberrypi virtio_blk scripts/local-bottom/cairn-data sbin/e2fsck; do
    grep -q -- "$m" "$WORK/initramfs.list" || missing+=("$m")
  done
  [ ${#missing[@]} -eq 0 ] || { echo "initramfs lacks: ${missing[*]}"; return 1; }

  # prove the agent and its arm64 addon run inside the tree (qemu-user)
  chroot "$R" /usr/bin/node -e "
    const Db = require('/opt/cairn/node_modules/better-sqlite3');
    const db = new Db(':memory:');
    const v = db.prepare('select sqlite_version() as v').get().v;
    console.log('better-sqlite3 loads on ' + process.arch + ', node ' + process.version + ' (ABI ' + process.versions.modules + '), sqlite ' + v);"
  chroot "$R" /usr/bin/node /opt/cairn/cairn.mjs --version
  chroot "$R" /usr/bin/node --check /opt/cairn/provision.mjs
  note "$(du -sh --exclude=./proc "$R" | cut -f1), kernel $kver"
}
