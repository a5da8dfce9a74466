#!/usr/bin/env bash
# The test command (README, and .ci/run): installs what is missing, then lints and runs every
# test. Needs root: tests load BPF programs and create network namespaces.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
# A build cache outside the clone is fine; a missing install step is not.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/edgeflow-target}"
source scripts/env.sh

# QEMU and the foreign architectures for the VM tests (edge/tests/vm.rs, cross/vm/).
[ "${EDGEFLOW_TEST_VM:-}" = 0 ] || cross/vm/setup.sh

# --all covers edge-ebpf too (a workspace member; rustfmt follows its cfg-gated modules).
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
# Cross builds for the edge boxes, proven under qemu-user (long on a first run; see docs/install.md).
if [ "${EDGEFLOW_TEST_CROSS:-0}" = 1 ]; then
  cross/test.sh
fi
