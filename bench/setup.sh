#!/usr/bin/env bash
# Installs the Debian packages the benchmark drives. Idempotent: installs only what is
# missing. Called by bench/bench; scripts/setup.sh (the project's own tools) runs first.
# hsflowd (host-sflow) is not packaged in Debian, so the sFlow agent here is pmacctd's
# sfprobe plugin.
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
  echo "bench/setup.sh: must run as root (apt-get)" >&2
  exit 2
fi

PKGS=(
  netsniff-ng            # trafgen: the 64-byte UDP generator (PF_PACKET TX ring)
  iperf3                 # bulk TCP
  tcpdump                # a monitor under test
  softflowd              # NetFlow v9 agent under test (softflowctl for its counters)
  pmacct                 # pmacctd with the sFlow probe plugin
  nfdump nfdump-sflow    # nfcapd / sfcapd collectors, and nfdump to count what they received
  mosquitto mosquitto-clients   # the broker edgeflow publishes to, and a subscriber
  bpftool iproute2 ethtool util-linux   # program names, namespaces, taskset
)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "bench/setup.sh: installing ${missing[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
