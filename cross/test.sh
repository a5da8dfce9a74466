#!/usr/bin/env bash
# Builds the three static targets and proves them (the ARM ones under qemu-user): `edgeflow
# --version`, a usage error with its exit code, `edgeflow decode` of the golden V1 payload, and
# the unit tests of `shared` and `edge` that need no kernel features beyond plain syscalls.
#   sudo cross/test.sh
# Not part of scripts/test.sh by default (a first run rebuilds std twice per target, ~25 min on
# 2 cores); set EDGEFLOW_TEST_CROSS=1 to make scripts/test.sh run it.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
"$HERE/build.sh" all
source "$HERE/env.sh"
cd "$ROOT"

golden_hex=$(tr -d '\n' < shared/src/wire/golden_v1.hex)
fail=0
for t in x86_64-unknown-linux-musl aarch64-unknown-linux-musl armv7-unknown-linux-musleabihf; do
  case $t in x86_64*) q=env ;; aarch64*) q=qemu-aarch64-static ;; *) q=qemu-arm-static ;; esac
  bin="$CARGO_TARGET_DIR/$t/edge-release/edgeflow"
  echo "== $t"
  $q "$bin" --version | grep -q '^edgeflow ' || { echo "FAIL: --version" >&2; fail=1; }
  set +e; $q "$bin" watch --iface no-such-if0 2>/dev/null; rc=$?; set -e
  [ "$rc" -eq 2 ] || { echo "FAIL: unknown interface exit $rc, want 2" >&2; fail=1; }
  if $q "$bin" decode --help >/dev/null 2>&1; then
    echo "$golden_hex" | xxd -r -p | $q "$bin" decode - | grep -q '"device":"edge-01"' \
      || { echo "FAIL: decode of the golden payload" >&2; fail=1; }
  else
    echo "(this build has no decode command yet)"
  fi
  cargo-zigbuild test --config "$HERE/config.toml" --locked -Z build-std=std,panic_abort \
    --target "$t" -p edgeflow-shared --features wire,craft || fail=1
  cargo-zigbuild test --config "$HERE/config.toml" --locked -Z build-std=std,panic_abort \
    --target "$t" -p edgeflow --lib || fail=1
done
[ "$fail" -eq 0 ] && echo "cross: all passed" || { echo "cross: FAILED" >&2; exit 1; }
