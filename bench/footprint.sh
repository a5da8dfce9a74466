#!/usr/bin/env bash
# Footprint of the agent with 16k active flows (a benchmark, not a test): prints a table of
# drain time, summary build time, agent CPU per interval, RSS and bytes per flow record.
# Needs root (BPF, namespaces). Usage: sudo bench/footprint.sh [FLOWS] [WINDOWS] [TABLE]
# (`bench/bench footprint` runs it at 16k and 64k flows).
# Timings depend on what else the machine runs: the table's header prints the load average.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
source scripts/env.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}"
cargo build --release --locked -p edgeflow -p edgeflow-bench --bin edgeflow --bin footprint
"$CARGO_TARGET_DIR/release/footprint" "$CARGO_TARGET_DIR/release/edgeflow" "${1:-16000}" "${2:-5}" "${3:-16384}"
