#!/usr/bin/env bash
# The main job: installs what is missing, builds, provisions and starts the broker (Debian's
# Mosquitto set up by scripts/provision.sh: TLS, a password per device, the ACL, persistence
# for the collector's session), starts the collector, creates a demo namespace pair with
# traffic running and an agent on each side, and prints the dashboard URL. Ctrl-C stops and
# removes everything it created.
#
# Ports: EDGEFLOW_DEMO_HTTP (default 127.0.0.1:8080) and EDGEFLOW_DEMO_MQTT (default
# 127.0.0.1:18830, not 1883/8883: Debian's mosquitto service may hold those); a busy default
# moves to the next free port.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
source scripts/env.sh
cargo build --release --locked -p edgeflow -p edgeflow-collector
BIN="${CARGO_TARGET_DIR:-target}/release"

say() { printf '\033[1mdemo:\033[0m %s\n' "$*"; }
# First loopback port from $1 on with it and the next $2 (default 0) free.
free_port() {
  local p=$1 i
  for ((i = 0; i <= ${2:-0}; i++)); do
    if ss -Hltn "sport = :$((p + i))" | grep -q .; then p=$((p + i + 1)) i=-1; fi
  done
  echo "$p"
}
HTTP="${EDGEFLOW_DEMO_HTTP:-127.0.0.1:$(free_port 8080)}"
# The broker listens on two ports: passwords on this one, client certificates on the next.
MQTT="${EDGEFLOW_DEMO_MQTT:-127.0.0.1:$(free_port 18830 1)}"

A=efdemo-a B=efdemo-b
WORK=$(mktemp -d /tmp/edgeflow-demo.XXXXXX)
# Mosquitto drops to its own user and must reach its files under here.
chmod 711 "$WORK"
AGENTS=() OTHERS=()

cleanup() {
  # Runs once; a second Ctrl-C (or a SIGINT relayed to the process group, as `timeout` does)
  # must not cut it short and leave the namespaces, the broker and the collector behind.
  trap - EXIT
  trap '' INT TERM
  echo
  say "stopping"
  # Agents first, politely: a final window, "offline", programs detached.
  for p in "${AGENTS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${AGENTS[@]}"; do
    for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
  done
  # Their last windows and "offline" reach the collector before it stops.
  if [ ${#AGENTS[@]} -gt 0 ]; then sleep 1; fi
  for p in "${OTHERS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  # The broker last: it saves the collector's session on the way out.
  for p in "${OTHERS[@]}"; do
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  done
  [ -n "${BROKER:-}" ] && kill -TERM "$BROKER" 2>/dev/null || true
  wait 2>/dev/null || true
  ip netns del "$A" 2>/dev/null || true
  ip netns del "$B" 2>/dev/null || true
  rm -rf "$WORK"
  say "removed the namespaces, processes and $WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Leftovers of an earlier run that was killed hard.
ip netns del "$A" 2>/dev/null || true
ip netns del "$B" 2>/dev/null || true

say "broker: Mosquitto on mqtts://$MQTT (TLS, a login per device, ACL), files in $WORK/broker"
./scripts/provision.sh init "$WORK/broker" --port "${MQTT##*:}" --bind "${MQTT%:*}" >/dev/null
./scripts/provision.sh device "$WORK/broker" lab demo-edge-a >/dev/null
./scripts/provision.sh device "$WORK/broker" branch demo-edge-b >/dev/null
# The broker and the collector in sessions of their own: Ctrl-C in the terminal reaches the
# script, the agents and the traffic, and cleanup stops these two after the agents' last words.
setsid mosquitto -c "$WORK/broker/mosquitto.conf" 2>"$WORK/mosquitto.log" &
BROKER=$!
for _ in $(seq 100); do ss -Hltn "sport = :${MQTT##*:}" | grep -q . && break; sleep 0.1; done
kill -0 "$BROKER" 2>/dev/null || { cat "$WORK/mosquitto.log" >&2; exit 1; }

say "collector: dashboard on http://$HTTP/, data in $WORK"
setsid "$BIN/edgeflow-collector" --config "$WORK/broker/collector.toml" --http "$HTTP" \
  --db "$WORK/collector.db" --retention-days 1 >"$WORK/collector.out" 2>"$WORK/collector.log" &
OTHERS+=($!)
for _ in $(seq 100); do grep -q 'dashboard http' "$WORK/collector.out" 2>/dev/null && break; sleep 0.1; done
grep -q 'dashboard http' "$WORK/collector.out" || { cat "$WORK/collector.log" >&2; exit 1; }

say "namespaces $A (10.198.0.1, fd98::1) and $B (10.198.0.2, fd98::2), one veth pair"
ip netns add "$A"
ip netns add "$B"
ip link add efdemo0 netns "$A" type veth peer name efdemo1 netns "$B"
ip -n "$A" addr add 10.198.0.1/24 dev efdemo0
ip -n "$B" addr add 10.198.0.2/24 dev efdemo1
ip -n "$A" addr add fd98::1/64 dev efdemo0 nodad
ip -n "$B" addr add fd98::2/64 dev efdemo1 nodad
for ns in "$A" "$B"; do ip -n "$ns" link set lo up; done
ip -n "$A" link set efdemo0 up
ip -n "$B" link set efdemo1 up

# One agent per side, in the root namespace (its MQTT connection reaches the loopback broker)
# with the programs attached inside the demo namespaces.
for side in a:"$A":efdemo0:lab b:"$B":efdemo1:branch; do
  IFS=: read -r name ns dev site <<<"$side"
  "$BIN/edgeflow" run --config "$WORK/broker/devices/$site/demo-edge-$name/edgeflow.toml" \
    --iface "$dev" --netns "$ns" --interval 2 2>"$WORK/agent-$name.log" &
  AGENTS+=($!)
done
for name in a b; do
  for _ in $(seq 300); do grep -q 'edgeflow: ready' "$WORK/agent-$name.log" 2>/dev/null && break; sleep 0.1; done
  grep -q 'edgeflow: ready' "$WORK/agent-$name.log" || { cat "$WORK/agent-$name.log" >&2; exit 1; }
done

say "traffic: HTTP downloads over TCP (RTT), a UDP trickle to 8 ports, ping over IPv4 and IPv6"
mkdir -p "$WORK/www"
head -c 200000 /dev/urandom >"$WORK/www/page"
head -c 4000000 /dev/urandom >"$WORK/www/bulk"
ip netns exec "$A" python3 -m http.server 8000 --bind 10.198.0.1 --directory "$WORK/www" \
  >/dev/null 2>&1 &
OTHERS+=($!)
ip netns exec "$B" python3 -c '
import socket, time, urllib.request
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
time.sleep(1)
for i in range(1000000):
    udp.sendto(b"x" * (64 + i % 900), ("10.198.0.1", 5000 + i % 8))
    if i % 20 == 0:
        path = "bulk" if i % 400 == 0 else "page"
        try:
            urllib.request.urlopen("http://10.198.0.1:8000/" + path, timeout=5).read()
        except OSError:
            pass
    time.sleep(0.01)' &
OTHERS+=($!)
ip netns exec "$A" ping -q -i 0.5 10.198.0.2 >/dev/null &
OTHERS+=($!)
ip netns exec "$B" ping -q -6 -i 1 fd98::1 >/dev/null &
OTHERS+=($!)

echo
say "dashboard:  http://$HTTP/"
say "API:        http://$HTTP/api/devices   metrics: http://$HTTP/metrics"
say "logs:       $WORK/{collector,agent-a,agent-b,mosquitto}.log"
say "Ctrl-C stops everything and removes what the demo created"
wait "${OTHERS[0]}"
