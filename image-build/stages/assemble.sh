# Stage "assemble": the partition table and the file systems, written into one image
# file without mounting anything (sfdisk on a file, dd conv=notrunc,sparse).
#
#   p1  CAIRN        FAT   64 MiB  autoboot.txt (tryboot A/B); cairn.yaml goes here
#   p2  CAIRN-BOOTA  FAT  256 MiB  slot A: firmware, kernel, initramfs, config.txt
#   p3  CAIRN-BOOTB  FAT  256 MiB  slot B
#   p4  extended
#   p5  cairn-rootA  ext4          slot A root
#   p6  cairn-rootB  ext4          slot B root
#   p7  cairn-data   ext4          /var/lib/cairn, grown to fill the card on first boot
#
# MBR, not GPT: every Pi 4 bootloader reads it. Only p1-p3 are read by the firmware,
# so the roots and data can be logical partitions.

CONFIG_MIB=64
BOOT_MIB=256
ROOT_MIB=1536
DATA_MIB=256
DISK_ID=0xca12e000

stage_assemble() {
  local img="$WORK/$IMAGE_NAME" total
  total=$((4 + CONFIG_MIB + 2 * BOOT_MIB + 3 + 2 * ROOT_MIB + DATA_MIB))
  rm -f "$img"
  truncate -s "${total}M" "$img"
  # Explicit starts (in MiB, 4 MiB aligned for SD erase blocks): sfdisk would otherwise
  # put the extended partition into the gap before p1. Each logical partition starts
  # 1 MiB after the previous one ends, leaving room for its EBR.
  local m=2048 p1=4 p2 p3 p4 p5 p6 p7
  p2=$((p1 + CONFIG_MIB)); p3=$((p2 + BOOT_MIB)); p4=$((p3 + BOOT_MIB))
  p5=$((p4 + 1)); p6=$((p5 + ROOT_MIB + 1)); p7=$((p6 + ROOT_MIB + 1))
  sfdisk --quiet "$img" <<EOT
label: dos
label-id: $DISK_ID
unit: sectors

start=$((p1 * m)), size=$((CONFIG_MIB * m)), type=c
start=$((p2 * m)), size=$((BOOT_MIB * m)), type=c
start=$((p3 * m)), size=$((BOOT_MIB * m)), type=c
start=$((p4 * m)), type=5
start=$((p5 * m)), size=$((ROOT_MIB * m)), type=83
start=$((p6 * m)), size=$((ROOT_MIB * m)), type=83
start=$((p7 * m)), size=$((DATA_MIB * m)), type=83
EOT
  sfdisk -d "$img"
  local n fs
  for n in 1 2 3 5 6 7; do
    case $n in 1) fs=config.vfat ;; 2) fs=boota.vfat ;; 3) fs=bootb.vfat ;; 5) fs=roota.ext4 ;; 6) fs=rootb.ext4 ;; 7) fs=data.ext4 ;; esac
    local start size
    read -r start size < <(sfdisk -J "$img" | node -e "
      const t = JSON.parse(require('fs').readFileSync(0, 'utf8')).partitiontable;
      const p = t.partitions.find(p => p.node.endsWith('$n'));
      console.log(p.start, p.size)")
    local fsz
    fsz=$(stat -c %s "$WORK/fs/$fs")
    [ "$fsz" -le $((size * 512)) ] || { echo "$fs ($fsz bytes) does not fit partition $n ($((size * 512)) bytes)"; return 1; }
    dd if="$WORK/fs/$fs" of="$img" bs=1M seek=$((start * 512)) oflag=seek_bytes conv=notrunc,sparse status=none
    echo "partition $n: $fs at sector $start ($((size / 2048)) MiB)"
  done
  note "$(du -h --apparent-size "$img" | cut -f1) ($(du -h "$img" | cut -f1) allocated)"
}
