#!/usr/bin/env bash
# `bench/bench headline OLD [-n ROUNDS] [--skip prog-cost|tcp|footprint]... [--max-foreign CPUS]`: the headline
# figures (in-kernel ns, bulk TCP ratio, 64k drain, RSS, bytes per flow record) of this
# checkout's build beside the build of commit OLD, measured interleaved in one sitting
# (docs/bench.md, "Headline"). As root. Builds both in release: this one in
# $CARGO_TARGET_DIR, OLD from `git archive` in a folder of its own with a target directory of
# its own under $CARGO_TARGET_DIR/headline (never hard links of this one: cargo rewrites
# build-script outputs in place, and the embedded eBPF object would be shared).
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 1 ] || { echo "usage: bench/bench headline OLD_COMMIT [-n ROUNDS] [--skip WHAT]..." >&2; exit 2; }
old=$(git rev-parse --verify --quiet "$1^{commit}") || { echo "bench: $1 is not a commit" >&2; exit 2; }
shift
[ "$(id -u)" -eq 0 ] || { echo "bench: run as root (namespaces, BPF, cgroups)" >&2; exit 2; }
./scripts/setup.sh
./bench/setup.sh
source scripts/env.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
cargo build --release --locked -p edgeflow -p edgeflow-bench
rel="$CARGO_TARGET_DIR/release"

short=${old:0:10}
base="$CARGO_TARGET_DIR/headline"
src="$base/src-$short"
if [ ! -d "$src" ]; then
  mkdir -p "$base" && rm -rf "$src.tmp" && mkdir "$src.tmp"
  git archive "$old" | tar -x -C "$src.tmp"
  mv "$src.tmp" "$src"
fi
otarget="$base/target-$short"
# The footprint benchmark moved from edge/examples to bench/ (issue 20).
if [ -f "$src/bench/src/bin/footprint.rs" ]; then
  fp_build=(-p edgeflow-bench --bin footprint) fp_bin="$otarget/release/footprint"
else
  fp_build=(-p edgeflow --example footprint) fp_bin="$otarget/release/examples/footprint"
fi
(cd "$src" && CARGO_TARGET_DIR="$otarget" cargo build --release --locked -p edgeflow --bin edgeflow "${fp_build[@]}")
# Its eBPF object as its build left it (bin edgeflow-ebpf of the `bpf` profile since issue 20,
# bin edgeflow of the release profile before).
obj=""
for o in "$otarget/bpf/bpfel-unknown-none/bpf/edgeflow-ebpf" "$otarget/bpf/bpfel-unknown-none/release/edgeflow"; do
  [ -f "$o" ] && { obj=$o; break; }
done
[ -n "$obj" ] || { echo "bench: no eBPF object found under $otarget/bpf" >&2; exit 1; }

new=$(printf '{"edgeflow":"%s","bare-counter":"%s","udpsink":"%s","prog-cost":"%s","footprint":"%s"}' \
  "$rel/edgeflow" "$rel/bare-counter" "$rel/udpsink" "$rel/prog-cost" "$rel/footprint")
oldj=$(printf '{"edgeflow":"%s","footprint":"%s","object":"%s"}' "$otarget/release/edgeflow" "$fp_bin" "$obj")
exec python3 bench/harness/headline.py --new "$new" --old "$oldj" --old-name "$short" "$@"
