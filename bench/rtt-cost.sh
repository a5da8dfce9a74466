#!/usr/bin/env bash
# The in-kernel cost of TCP RTT tracking: runs the same bounded TCP traffic between two test
# namespaces with RTT tracking off and on (TC and XDP ingress) and prints each program's run
# time per run (kernel BPF stats). A check, not a benchmark: figures vary with the machine's
# load; compare the on/off rows of one run. Needs root. Run as `bench/bench rtt-cost`.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
# The programs' cost does not depend on the agent's build profile; the dev build is shared
# with the tests.
cargo run --quiet -p edgeflow-bench --bin rtt-cost
