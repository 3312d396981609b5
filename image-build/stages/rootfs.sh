# Stage "rootfs": the Cairn layer on a copy of the cached base tree: the agent bundle and
# its arm64 addon, the first-boot program, the cairn user, systemd units and settings
# (image-build/rootfs/), /etc symlinks into the data partition, and a fresh initramfs.
# Ends by running the agent and the addon inside the tree under qemu-user.

ENABLE_UNITS=(systemd-networkd.service systemd-resolved.service systemd-timesyncd.service
  avahi-daemon.service ssh.service cairn-provision.service cairn-grow-data.service
  cairn-agent.service cairn-reboot.path cairn-reprovision.path cairn-node-red.service
  cairn-os-boot.service cairn-os-update.path cairn-os-trial.timer)

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
  # the inference worker, tfjs wasm binaries and demo model, beside the bundle
  node -e "for (const f of JSON.parse(require('fs').readFileSync(process.argv[1], 'utf8')).assets) console.log(f)" "$REPO/dist/bundle-assets.json" |
    while read -r f; do install -D -m 0644 "$REPO/dist/$f" "$R/opt/cairn/$f"; done
  # the OTA launcher: outside both agent slots, updated only with the OS (docs/ota.md)
  install -m 0644 "$REPO/dist/launcher.mjs" "$R/opt/cairn/launcher.mjs"
  install -m 0644 "$REPO/dist/image/provision.mjs" "$R/opt/cairn/provision.mjs"
  install -m 0644 "$REPO/dist/image/os-update.mjs" "$R/opt/cairn/os-update.mjs"
  cp -a "$ADDON_DIR/node_modules" "$R/opt/cairn/"
  # the agent's release channel: its trusted TUF root and URL (build.sh --release-*)
  if [ -n "$RELEASE_ROOT" ]; then
    install -m 0644 "$RELEASE_ROOT" "$R/opt/cairn/root.json"
    printf 'CAIRN_OTA_RELEASE_URL=%s\nCAIRN_OTA_RELEASE_ROOT=/opt/cairn/root.json\nCAIRN_OTA_CHANNEL=%s\n' "$RELEASE_URL" "$RELEASE_CHANNEL" >"$R/opt/cairn/ota.env"
    echo "agent OTA channel: $RELEASE_URL ($RELEASE_CHANNEL), root $(node -p "require('$RELEASE_ROOT').signed.version") from $RELEASE_ROOT"
  else
    echo "no release channel given: agent OTA is off in this image"
  fi
  chown -R 0:0 "$R/opt/cairn"
  # the bundle's own version (the launcher compares it with the committed agent slot's;
  # the image's --version may differ)
  node "$REPO/dist/cairn.mjs" --version >"$R/opt/cairn/VERSION"

  # the unprivileged user the agent runs as (no login, no password); video for
  # /dev/vcio (vcgencmd), gpio for the GPIO character devices (60-cairn-gpio.rules)
  chroot "$R" groupadd --system gpio
  chroot "$R" useradd --system --user-group --groups video,gpio --home-dir /var/lib/cairn/agent --no-create-home --shell /usr/sbin/nologin cairn
  # Node-RED's user: in the cairn group for the agent's local API socket and token
  chroot "$R" useradd --system --user-group --groups cairn,gpio --home-dir /var/lib/cairn/node-red --no-create-home --shell /usr/sbin/nologin nodered

  # Node-RED (cached by the nodered stage) and the Cairn nodes from this repo
  cp -a "$NODE_RED_DIR" "$R/opt/node-red"
  rm -f "$R/opt/node-red/.complete"
  install_cairn_nodes "$R/opt/node-red"
  chown -R 0:0 "$R/opt/node-red"

  # /etc entries that must survive OS updates and a read-only root point into the data
  # partition, which the initramfs mounts before systemd starts
  install -d -m 0755 "$R/var/lib/cairn" "$R/boot/cairn"
  ln -sfn /var/lib/cairn/os/hostname "$R/etc/hostname"
  ln -sfn /var/lib/cairn/os/localtime "$R/etc/localtime"
  rm -f "$R/etc/timezone"
  install -d -m 0755 "$R/etc/wpa_supplicant" "$R/etc/avahi/services"
  ln -sfn /var/lib/cairn/os/wpa_supplicant-wlan0.conf "$R/etc/wpa_supplicant/wpa_supplicant-wlan0.conf"
  # (/etc/avahi/services stays an empty directory: the avahi drop-in binds
  # /var/lib/cairn/os/avahi over it, since avahi chroots into /etc/avahi)
  # no host key baked into the image: each device makes its own (cairn-provision)
  rm -f "$R"/etc/ssh/ssh_host_*
  # systemd-resolved's stub resolver
  ln -sfn ../run/systemd/resolve/stub-resolv.conf "$R/etc/resolv.conf"
  # Cairn OS in os-release, for support questions
  sed -i "s/^PRETTY_NAME=.*/PRETTY_NAME=\"Cairn OS $VERSION (Debian $(cut -d. -f1 "$R/etc/debian_version"))\"/" "$R/usr/lib/os-release"
  printf 'CAIRN_VERSION=%s\nCAIRN_BUILT=%s\nCAIRN_KERNEL=%s\n' "$VERSION" "$(date -u +%FT%TZ)" "$KERNEL" >"$R/etc/cairn-release"

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
  # the tryboot flag for Debian's kernel (kmod stage; loaded by the OS update helper)
  install_kmod "$R" "$kver"
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
  chroot "$R" /usr/bin/node --check /opt/cairn/os-update.mjs
  chroot "$R" /usr/bin/node --check /opt/cairn/launcher.mjs
  chroot "$R" /usr/bin/node -e "console.log('node-red ' + require('/opt/node-red/node_modules/node-red/package.json').version + ' in the tree')"
  check_kernel "$R" "$kver" "$WORK/initramfs.list"
  note "$(du -sh --exclude=./proc "$R" | cut -f1), kernel $kver${CAIRN_NODES_NOTE:+, $CAIRN_NODES_NOTE}"
}

# The Cairn Node-RED nodes (flows/node-red-contrib-cairn, issue 7), packed as npm would
# publish them, installed beside node-red so Node-RED finds them with its own nodes.
install_cairn_nodes() {
  local dest=$1 src="$REPO/flows/node-red-contrib-cairn"
  if [ "$CAIRN_NODES" = 0 ]; then
    echo "--no-cairn-nodes: Node-RED without the Cairn nodes"
    CAIRN_NODES_NOTE="no Cairn nodes (--no-cairn-nodes)"
    return 0
  fi
  if [ ! -f "$src/package.json" ]; then
    echo "flows/node-red-contrib-cairn is not there: Node-RED without the Cairn nodes"
    CAIRN_NODES_NOTE="no Cairn nodes"
    return 0
  fi
  if grep -q '"build"' "$src/package.json"; then (cd "$src" && npm run --silent build); fi
  local tgz
  tgz=$(cd "$src" && npm pack --silent --pack-destination "$WORK")
  nice -n 10 npm install --prefix "$dest" --omit=optional --omit=dev --ignore-scripts --no-audit --no-fund --no-update-notifier --no-save "$WORK/$tgz"
  test -f "$dest/node_modules/node-red-contrib-cairn/package.json"
  CAIRN_NODES_NOTE="Cairn nodes $(node -p "require('$dest/node_modules/node-red-contrib-cairn/package.json').version")"
  echo "$CAIRN_NODES_NOTE installed"
}

# Which boards this kernel serves, from its own config, dtbs and initramfs
# (docs/image.md, "Which kernel serves which board"). Pi 4 is required of every kernel;
# Pi 5 of the backports one.
check_kernel() {
  local R=$1 kver=$2 list=$3 cfg="$1/boot/config-$2" sym missing=()
  for sym in CONFIG_MMC_SDHCI_IPROC CONFIG_PCIE_BRCMSTB CONFIG_BCM2835_WDT; do grep -Eq "^$sym=(y|m)$" "$cfg" || missing+=("$sym"); done
  for f in bcm2711-rpi-4-b.dtb; do [ -f "$R/usr/lib/linux-image-$kver/broadcom/$f" ] || missing+=("$f"); done
  [ -f "$R/lib/modules/$kver/updates/cairn_tryboot.ko" ] || missing+=("cairn_tryboot.ko (kmod stage)")
  if [ "$KERNEL" = backports ]; then
    for sym in CONFIG_MMC_SDHCI_BRCMSTB CONFIG_MISC_RP1 CONFIG_PINCTRL_RP1 CONFIG_COMMON_CLK_RP1 CONFIG_MACB CONFIG_USB_XHCI_PLATFORM; do grep -Eq "^$sym=(y|m)$" "$cfg" || missing+=("$sym"); done
    for f in bcm2712-rpi-5-b.dtb bcm2712-d-rpi-5-b.dtb; do [ -f "$R/usr/lib/linux-image-$kver/broadcom/$f" ] || missing+=("$f"); done
    grep -q 'sdhci-brcmstb' "$list" || missing+=("sdhci-brcmstb in the initramfs")
  fi
  [ ${#missing[@]} -eq 0 ] || { echo "kernel $kver ($KERNEL) lacks: ${missing[*]}"; return 1; }
  echo "kernel $kver ($KERNEL): Pi 4$([ "$KERNEL" = backports ] && echo ' and Pi 5') symbols, dtbs and initramfs modules present"
}
