#!/usr/bin/env bash
# Builds (once; cached) a Debian bookworm system disk for the package tests with mmdebstrap,
# from Debian's archive: systemd as init, Debian's stock kernel and its initramfs, iproute2, and
# what the checks use (adduser for the packages, iputils-ping, curl, mosquitto-clients):
#   cross/vm/debian/rootfs.sh amd64|arm64
# Prints shell assignments: IMAGE (raw ext4, label efroot, the root file system; boot it with
# snapshot=on, it stays pristine), VMLINUZ, INITRD, KVER. Cache: $CARGO_TARGET_DIR/vm/debian/,
# keyed by this script's content; rebuilt after 7 days so the kernel follows bookworm's.
# First build: ~3 min for amd64, ~10 min for arm64 (its maintainer scripts run under
# qemu-user; needs binfmt_misc, registered here when missing).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
arch=${1:?usage: cross/vm/debian/rootfs.sh amd64|arm64}
VM=${EDGEFLOW_VM_CACHE:-${CARGO_TARGET_DIR:-/var/tmp/edgeflow-target}/vm}

case $arch in
  amd64) kernel=linux-image-cloud-amd64 serial=ttyS0 ;;
  arm64) kernel=linux-image-arm64 serial=ttyAMA0 ;;
  *) echo "rootfs.sh: unknown arch $arch (amd64|arm64)" >&2; exit 2 ;;
esac
[ "$(id -u)" -eq 0 ] || { echo "rootfs.sh: run as root (mmdebstrap --mode=root)" >&2; exit 2; }
command -v mmdebstrap >/dev/null || { echo "rootfs.sh: mmdebstrap missing (scripts/setup.sh)" >&2; exit 2; }

key=$(cat "$0" "$HERE/efvm-run" | sha256sum | cut -c1-12)
dir="$VM/debian/$arch-$key"
if [ -f "$dir/.done" ] && [ -z "$(find "$dir/.done" -mtime +7)" ]; then
  cat "$dir/env"; exit 0
fi

# A foreign root file system runs its maintainer scripts under qemu-user, found through
# binfmt_misc: what qemu-user-static registers on a Debian host with systemd-binfmt running.
if [ "$arch" = arm64 ] && [ "$(uname -m)" != aarch64 ]; then
  [ -e /proc/sys/fs/binfmt_misc/register ] || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
  if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
    conf=/usr/lib/binfmt.d/qemu-aarch64.conf
    [ -f "$conf" ] || { echo "rootfs.sh: $conf missing (qemu-user-static)" >&2; exit 2; }
    grep -v '^#' "$conf" > /proc/sys/fs/binfmt_misc/register
  fi
fi

rm -rf "$VM/debian/$arch-"*
mkdir -p "$dir"
root="$dir/root"
start=$(date +%s)
mirror=http://deb.debian.org/debian
# The hook runs outside the chroot with its path as $1.
mmdebstrap --mode=root --variant=minbase --architectures="$arch" \
  --include="systemd,systemd-sysv,udev,kmod,initramfs-tools,$kernel,iproute2,adduser,iputils-ping,curl,mosquitto-clients" \
  --customize-hook='echo efvm > "$1/etc/hostname"' \
  --customize-hook='printf "/dev/vda / ext4 defaults 0 1\n" > "$1/etc/fstab"' \
  --customize-hook="install -m 0755 '$HERE/efvm-run' \"\$1/usr/local/sbin/efvm-run\"" \
  --customize-hook='printf "[Unit]\nDescription=edgeflow VM check (cross/vm/debian)\nAfter=local-fs.target systemd-udev-settle.service\n\n[Service]\nType=oneshot\nExecStart=/usr/local/sbin/efvm-run\nStandardOutput=tty\nStandardError=tty\nTTYPath=/dev/console\n\n[Install]\nWantedBy=multi-user.target\n" > "$1/etc/systemd/system/efvm.service"' \
  --customize-hook='ln -s /etc/systemd/system/efvm.service "$1/etc/systemd/system/multi-user.target.wants/efvm.service"' \
  --customize-hook='for u in serial-getty@ttyS0.service serial-getty@ttyAMA0.service getty@tty1.service apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer fstrim.timer; do ln -sf /dev/null "$1/etc/systemd/system/$u"; done' \
  bookworm "$root" \
  "deb $mirror bookworm main" "deb $mirror bookworm-updates main" \
  "deb http://deb.debian.org/debian-security bookworm-security main" >&2

kver=$(ls "$root/lib/modules" | head -1)
cp "$root/boot/vmlinuz-$kver" "$dir/vmlinuz"
cp "$root/boot/initrd.img-$kver" "$dir/initrd.img"
# The disk: an ext4 image of the tree (mke2fs -d keeps owners and modes), 2 GiB sparse.
rm -rf "$root/var/cache/apt/archives/"*.deb "$root/var/lib/apt/lists/"*_Packages
mke2fs -q -F -t ext4 -L efroot -d "$root" "$dir/root.img" 2G
rm -rf "$root"
printf 'IMAGE=%s\nVMLINUZ=%s\nINITRD=%s\nKVER=%s\nSERIAL=%s\n' \
  "$dir/root.img" "$dir/vmlinuz" "$dir/initrd.img" "$kver" "$serial" > "$dir/env"
touch "$dir/.done"
echo "rootfs.sh: $arch built in $(( $(date +%s) - start ))s ($(du -sh --apparent-size "$dir/root.img" | cut -f1) image, $(du -sh "$dir/root.img" | cut -f1) used)" >&2
cat "$dir/env"
