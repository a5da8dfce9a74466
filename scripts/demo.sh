#!/usr/bin/env bash
# The main job: installs everything, builds, and shows edgeflow on a demo namespace pair with
# traffic running. Ctrl-C stops and removes everything it created.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
source scripts/env.sh
cargo build --release --locked -p edgeflow
BIN="${CARGO_TARGET_DIR:-target}/release/edgeflow"

A=efdemo-a B=efdemo-b
cleanup() {
  kill $(jobs -p) 2>/dev/null || true
  ip netns del "$A" 2>/dev/null || true
  ip netns del "$B" 2>/dev/null || true
}
trap cleanup EXIT INT TERM
cleanup
ip netns add "$A"; ip netns add "$B"
ip link add efdemo0 netns "$A" type veth peer name efdemo1 netns "$B"
ip -n "$A" addr add 10.198.0.1/24 dev efdemo0; ip -n "$B" addr add 10.198.0.2/24 dev efdemo1
for ns in "$A" "$B"; do ip -n "$ns" link set lo up; done
ip -n "$A" link set efdemo0 up; ip -n "$B" link set efdemo1 up
# Traffic: pings, and a bounded UDP trickle, inside the demo namespaces only.
ip netns exec "$A" ping -q -i 0.5 -c 100000 10.198.0.2 >/dev/null &
ip netns exec "$B" python3 -c '
import socket,time
s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)
for i in range(1000000):
    s.sendto(b"x"*(64+i%900),("10.198.0.1",5000+i%8)); time.sleep(0.01)' &
ip netns exec "$B" "$BIN" watch --iface efdemo1 --interval 2
