#!/usr/bin/env bash
# Installs the cross-compiling toolchain (idempotent): Debian's rustc-web/cargo-web 1.96 with the
# library source (build-std), qemu-user-static to run the results, and zig + cargo-zigbuild from
# PyPI in a private venv (zig supplies musl, crt objects and libunwind for the link).
# See docs/toolchain.md, "Cross-compiling".
set -euo pipefail
[ "$(id -u)" -eq 0 ] || { echo "cross/setup.sh: run as root" >&2; exit 2; }
HERE=$(cd "$(dirname "$0")" && pwd)
"$HERE/../scripts/setup.sh"

pkgs=(rustc-web cargo-web rust-web-src qemu-user-static python3-venv xxd)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "cross/setup.sh: installing ${missing[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

VENV=${EDGEFLOW_CROSS_VENV:-/opt/edgeflow-cross/venv}
ZIG_VERSION=0.13.0.post1
ZIGBUILD_VERSION=0.19.8
if ! "$VENV/bin/cargo-zigbuild" --version 2>/dev/null | grep -q "$ZIGBUILD_VERSION" \
   || ! "$VENV/bin/python3" -m ziglang version 2>/dev/null | grep -q "^${ZIG_VERSION%.post*}"; then
  echo "cross/setup.sh: installing zig $ZIG_VERSION and cargo-zigbuild $ZIGBUILD_VERSION into $VENV" >&2
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q "ziglang==$ZIG_VERSION" "cargo-zigbuild==$ZIGBUILD_VERSION"
fi
echo "cross/setup.sh: ok" >&2
