#!/usr/bin/env bash
# Collector ingest benchmark: summaries/s and flow records/s decoded and stored on this
# machine, printed as a table (bench/benches/ingest.rs). Not part of the tests. Run as
# `bench/bench ingest`.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
cargo bench --locked -p edgeflow-bench --bench ingest
