#!/usr/bin/env bash
# Installs everything edgeflow needs on a fresh Debian (bookworm) machine. Idempotent:
# each step checks first and does nothing when its piece is already there.
# See docs/toolchain.md for why the eBPF toolchain is Debian's rustc-web + bpf-linker.
set -euo pipefail

log() { printf 'setup: %s\n' "$*" >&2; }

if [ "$(id -u)" -ne 0 ]; then
  echo "setup: must run as root (apt-get, BPF, network namespaces)" >&2
  exit 2
fi

# Debian packages: the eBPF toolchain, the test broker, traffic and inspection tools, the browser.
PKGS=(
  rustc-web rust-web-src llvm-22-dev   # eBPF build (route A)
  mosquitto mosquitto-clients          # the MQTT broker (demo, scripts/provision.sh, tests)
  openssl                              # certificates: scripts/provision.sh and the TLS tests
  iproute2 ethtool iputils-ping tcpdump bpftool   # namespaces, offloads, captures, nstat, listing
  chromium                              # dashboard browser test
  postgresql                            # the fleet store (--db postgres://), started by tests
  libcap2-bin util-linux                # capsh / setpriv for capability tests
  pkg-config build-essential sqlite3
  jq
  nfdump pmacct tshark                  # IPFIX collectors the export is tested against (docs/ipfix.md)
  ieee-data                             # MAC vendors (IEEE OUI registry) for LAN devices' owners
  lintian mmdebstrap arch-test          # Debian packages: packaging/build.sh checks, cross/vm/debian/ root filesystems
  dnsmasq-base                          # DNS server of the DNS tests (the binary, no service)
)

missing=()
for p in "${PKGS[@]}"; do
  [ -z "$p" ] && continue
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing Debian packages: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# The compiler for the eBPF crate must carry LLVM 22, matching bpf-linker's llvm-22 feature.
if ! /usr/bin/rustc -vV | grep -q '^LLVM version: 22'; then
  echo "setup: /usr/bin/rustc is not on LLVM 22 ($(/usr/bin/rustc -vV | grep LLVM)); bpf-linker's feature must follow" >&2
  exit 1
fi

CARGO_BIN="${CARGO_HOME:-$HOME/.cargo}/bin"
if ! "$CARGO_BIN/bpf-linker" --version 2>/dev/null | grep -q '0.13.0'; then
  log "building bpf-linker 0.13.0 against Debian's LLVM 22 (about 2 minutes)"
  PATH=/usr/lib/llvm-22/bin:$PATH cargo install bpf-linker@0.13.0 --locked \
    --no-default-features --features llvm-22
fi
# scripts/demo.sh's traffic generator (an HTTP server and client, a UDP trickle).
if ! command -v python3 >/dev/null 2>&1; then
  log "installing python3 for the demo's traffic"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3
fi
log "ok"
