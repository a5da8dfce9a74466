#!/usr/bin/env bash
# Builds static (musl) edgeflow binaries for the edge boxes, with the eBPF object embedded:
#   sudo cross/build.sh [x86_64|aarch64|armv7|all]      (default: all)
# Results: $CARGO_TARGET_DIR/<triple>/edge-release/edgeflow (stripped), sizes printed.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
"$HERE/setup.sh"
source "$HERE/env.sh"

which=${1:-all}
case $which in
  x86_64) targets=(x86_64-unknown-linux-musl) ;;
  aarch64) targets=(aarch64-unknown-linux-musl) ;;
  armv7) targets=(armv7-unknown-linux-musleabihf) ;;
  all) targets=(x86_64-unknown-linux-musl aarch64-unknown-linux-musl armv7-unknown-linux-musleabihf) ;;
  *) echo "usage: cross/build.sh [x86_64|aarch64|armv7|all]" >&2; exit 2 ;;
esac

cd "$ROOT"
printf '%-34s %10s %8s\n' target bytes time
for t in "${targets[@]}"; do
  start=$(date +%s)
  cargo --config "$HERE/config.toml" zigbuild --locked --profile edge-release \
    -Z build-std=std,panic_abort --target "$t" -p edgeflow --bin edgeflow >&2
  bin="$CARGO_TARGET_DIR/$t/edge-release/edgeflow"
  printf '%-34s %10s %7ss\n' "$t" "$(stat -c %s "$bin")" "$(( $(date +%s) - start ))"
done
