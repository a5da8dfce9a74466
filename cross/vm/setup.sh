#!/usr/bin/env bash
# Installs what the VM tests need on the host (idempotent): QEMU for x86_64, arm64 and armv7
# (TCG; no KVM needed), cpio for the initramfs, and the foreign architectures whose Debian
# packages (kernels, busybox, iproute2) the guests are built from.
set -euo pipefail
[ "$(id -u)" -eq 0 ] || { echo "cross/vm/setup.sh: run as root" >&2; exit 2; }

pkgs=(qemu-system-x86 qemu-system-arm cpio mosquitto)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
archs=$(dpkg --print-foreign-architectures)
need_update=0
for a in arm64 armhf; do
  if ! grep -qx "$a" <<<"$archs"; then
    echo "cross/vm/setup.sh: adding foreign architecture $a" >&2
    dpkg --add-architecture "$a"
    need_update=1
  fi
done
# The foreign architectures' package lists exist only after an update.
for a in arm64 armhf; do
  ls /var/lib/apt/lists/*_binary-"$a"_Packages* >/dev/null 2>&1 || need_update=1
done
if [ ${#missing[@]} -gt 0 ] || [ "$need_update" = 1 ]; then
  apt-get update -qq
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "cross/vm/setup.sh: installing ${missing[*]}" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
echo "cross/vm/setup.sh: ok" >&2
