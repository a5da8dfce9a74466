#!/usr/bin/env bash
# Fetches (once; cached by package version) the Debian packages a VM test boots:
#   cross/vm/fetch.sh ARCH [KERNEL]     ARCH: x86_64 | aarch64 | armv7;  KERNEL: 6.1 (default) | 5.10
# 6.1 is bookworm's kernel, 5.10 bullseye's (x86_64 only), taken through an apt list of our own so
# the machine's lists stay bookworm. The kernel is the one Debian's metapackage
# (linux-image-cloud-amd64, -arm64, -armmp) currently points at. Prints shell assignments:
# KVER (uname -r), VMLINUZ, MODROOT (holds lib/modules/KVER), USERLAND (busybox, ip, tc and
# their libraries for the guest).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
arch=${1:?usage: cross/vm/fetch.sh x86_64|aarch64|armv7 [6.1|5.10]}
series=${2:-6.1}
VM=${EDGEFLOW_VM_CACHE:-${CARGO_TARGET_DIR:-/var/tmp/edgeflow-target}/vm}

case $arch in
  x86_64) debarch=amd64 flavour=cloud-amd64 ;;
  aarch64) debarch=arm64 flavour=arm64 ;;
  armv7) debarch=armhf flavour=armmp ;;
  *) echo "fetch.sh: unknown arch $arch (x86_64|aarch64|armv7)" >&2; exit 2 ;;
esac

# What a fetch resolved is reused for a day (apt-cache on three architectures is slow); after
# that the package versions are looked up again, so a newer kernel is picked up.
resolved="$VM/resolved-$arch-$series.env"
if [ -n "$(find "$resolved" -mtime -1 2>/dev/null)" ]; then
  # shellcheck disable=SC1090
  (source "$resolved" && [ -f "$VMLINUZ" ] && [ -f "$USERLAND/.done" ]) && { cat "$resolved"; exit 0; }
fi

apt_opts=()
case $series in
  6.1) ;;
  5.10)
    [ "$arch" = x86_64 ] || { echo "fetch.sh: 5.10 is fetched for x86_64 only" >&2; exit 2; }
    # bullseye through the archive URI this machine already uses, in lists of our own.
    uri=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
    [ -n "$uri" ] || uri=$(awk '$1=="deb" && $0 !~ /security/ {print ($2 ~ /^\[/ ? $3 : $2); exit}' /etc/apt/sources.list)
    b="$VM/apt-bullseye"
    mkdir -p "$b/lists/partial" "$b/parts"
    echo "deb [arch=amd64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $uri bullseye main" > "$b/sources.list"
    apt_opts=(-o "Dir::Etc::SourceList=$b/sources.list" -o "Dir::Etc::SourceParts=$b/parts"
              -o "Dir::State::Lists=$b/lists")
    # Refresh at most daily: a kernel version that vanished from the archive needs new lists.
    if [ -z "$(find "$b/lists" -maxdepth 1 -name '*_Packages*' -mtime -1 2>/dev/null)" ]; then
      apt-get -qq "${apt_opts[@]}" update >&2
    fi
    ;;
  *) echo "fetch.sh: unknown kernel series $series (6.1|5.10)" >&2; exit 2 ;;
esac

# The kernel package the metapackage depends on, e.g. linux-image-6.1.0-57-cloud-amd64.
meta="linux-image-$flavour:$debarch"
kpkg=$(apt-cache "${apt_opts[@]}" depends "$meta" | awk '/Depends: linux-image-/ {print $2; exit}')
kpkg=${kpkg%%:*}
[ -n "$kpkg" ] || { echo "fetch.sh: no kernel behind $meta in the apt lists (apt-get update?)" >&2; exit 1; }
case $kpkg in "linux-image-$series".*) ;; *)
  echo "fetch.sh: $meta points at $kpkg, not a $series kernel" >&2; exit 1 ;;
esac
kver=${kpkg#linux-image-}

debs="$VM/debs/$debarch"
mkdir -p "$debs"
# get PKG [APT-OPTIONS]: downloads PKG:debarch into the cache unless that exact version is
# already there; prints the file.
get() {
  local pkg=$1 ver file
  shift
  local opts=("$@")
  ver=$(apt-cache "${opts[@]}" policy "$pkg:$debarch" | awk '/Candidate:/ {print $2}')
  [ -n "$ver" ] && [ "$ver" != "(none)" ] || { echo "fetch.sh: no candidate for $pkg:$debarch" >&2; exit 1; }
  file=$(ls "$debs/${pkg}_${ver//:/%3a}_"*.deb 2>/dev/null | head -1 || true)
  if [ -z "$file" ]; then
    (cd "$debs" && apt-get -qq "${opts[@]}" download "$pkg:$debarch" >&2)
    file=$(ls "$debs/${pkg}_${ver//:/%3a}_"*.deb | head -1)
  fi
  echo "$file"
}

kdeb=$(get "$kpkg" "${apt_opts[@]}")
kroot="$VM/kernel/$(basename "$kdeb" .deb)"
if [ ! -f "$kroot/.done" ]; then
  rm -rf "$kroot"; mkdir -p "$kroot"
  dpkg-deb -x "$kdeb" "$kroot"
  touch "$kroot/.done"
fi

# The guest's userland (bookworm's, whatever the kernel): busybox, iproute2's ip and tc and the
# libraries they link.
user_pkgs=(busybox-static iproute2 libc6 libmnl0 libelf1 libbpf1 libcap2 libbsd0 libmd0 zlib1g
           libxtables12 libselinux1 libpcre2-8-0 libtirpc3 libdb5.3)
user_debs=()
for p in "${user_pkgs[@]}"; do user_debs+=("$(get "$p")"); done
key=$(printf '%s\n' "${user_debs[@]}" | xargs -n1 basename | sha256sum | cut -c1-16)
uroot="$VM/userland/$debarch-$key"
if [ ! -f "$uroot/.done" ]; then
  rm -rf "$uroot"; mkdir -p "$uroot"
  for d in "${user_debs[@]}"; do dpkg-deb -x "$d" "$uroot"; done
  # Only what the guest runs: drop documentation and the rest of iproute2's tools.
  rm -rf "$uroot/usr/share" "$uroot/etc"
  touch "$uroot/.done"
fi

printf 'KVER=%s\nVMLINUZ=%s\nMODROOT=%s\nUSERLAND=%s\n' \
  "$kver" "$kroot/boot/vmlinuz-$kver" "$kroot" "$uroot" > "$resolved"
cat "$resolved"
