#!/usr/bin/env bash
# Boots Debian bookworm (cross/vm/debian/rootfs.sh: systemd as init, Debian's stock kernel)
# under QEMU (TCG) and runs one package check inside, printing its result lines as they come:
#   cross/vm/debian/run.sh [--arch amd64|arm64] [--broker-port PORT] [--http-port PORT]
#                          [--timeout SECS] [--deb FILE]... CHECK [KEY=value ...]
# CHECK is a script in cross/vm/debian/checks/ (by name) or a path; it runs as root in the
# booted system from a second disk that also holds the --deb files, eftraffic (the traffic
# helper of cross/vm/run.sh, static for the arch) and KEY=value as environment variables.
# Networking is QEMU user networking only: the guest is 10.0.2.15; --broker-port makes the
# host's 127.0.0.1:PORT the guest's 10.0.2.2:PORT (EFVM_BROKER); --http-port forwards the
# host's 127.0.0.1:PORT to the guest's port 8080.
# Output: the guest's `EFVM key value...` lines as `key value...` while the VM runs, then a
# `host ...` line with the timings. Exit 0 when the check reported `status ok`, 1 when it
# failed, 124 on the time limit (the VM is killed), 3 when the guest ended without a status.
# The VM and its temp files go on every exit path; the console log stays in
# $CARGO_TARGET_DIR/vm/logs/debian-ARCH-CHECK.log.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../../.." && pwd)
BASE=${CARGO_TARGET_DIR:-/var/tmp/edgeflow-target}
VM=${EDGEFLOW_VM_CACHE:-$BASE/vm}

arch=amd64 broker_port= http_port= limit=600 check=
debs=() params=()
while [ $# -gt 0 ]; do
  case $1 in
    --arch) arch=$2; shift 2 ;;
    --broker-port) broker_port=$2; shift 2 ;;
    --http-port) http_port=$2; shift 2 ;;
    --timeout) limit=$2; shift 2 ;;
    --deb) debs+=("$2"); shift 2 ;;
    -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
    -*) echo "run.sh: unknown option $1" >&2; exit 2 ;;
    *=*) params+=("$1"); shift ;;
    *) [ -z "$check" ] || { echo "run.sh: one CHECK only ($check, $1)" >&2; exit 2; }
       check=$1; shift ;;
  esac
done
[ -n "$check" ] || { echo "run.sh: which CHECK? (cross/vm/debian/checks/)" >&2; exit 2; }
if [ -f "$check" ]; then check_file=$check; else check_file="$HERE/checks/$check.sh"; fi
[ -f "$check_file" ] || { echo "run.sh: no check $check ($check_file)" >&2; exit 2; }
check_name=$(basename "$check_file" .sh)

case $arch in
  # no_timer_check: on a loaded host TCG is slow enough for the kernel's IO-APIC timer check
  # to fail and panic ("IO-APIC + timer doesn't work!") before the root is mounted.
  amd64) triple=x86_64-unknown-linux-musl karg=no_timer_check
         qemu=(qemu-system-x86_64 -accel tcg -cpu max -smp 2 -m 1024) ;;
  arm64) triple=aarch64-unknown-linux-musl karg=
         qemu=(qemu-system-aarch64 -M virt -cpu cortex-a72 -smp 2 -m 1024) ;;
  *) echo "run.sh: unknown arch $arch (amd64|arm64)" >&2; exit 2 ;;
esac

"$HERE/../setup.sh"
# The traffic helper, as cross/vm/run.sh builds it: when missing or older than its source.
traffic="$BASE/cross/$triple/edge-release/eftraffic"
if [ ! -x "$traffic" ] || [ -n "$(find "$HERE/../traffic" -newer "$traffic" -type f -print -quit)" ]; then
  (source "$ROOT/cross/env.sh" && cd "$ROOT" && cargo --config "$ROOT/cross/config.toml" zigbuild \
     --locked --profile edge-release -Z build-std=std,panic_abort --target "$triple" \
     -p edgeflow-vm-traffic --quiet) >&2
fi
eval "$("$HERE/rootfs.sh" "$arch")"   # IMAGE VMLINUZ INITRD KVER SERIAL

mkdir -p "$VM/tmp" "$VM/logs"
tmp=$(mktemp -d "$VM/tmp/debian.XXXXXX")
qpid= tpid=
stop_vm() {
  [ -n "$qpid" ] || return 0
  kill -TERM "$qpid" 2>/dev/null || true
  for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$qpid" 2>/dev/null || break; sleep 0.2; done
  kill -KILL "$qpid" 2>/dev/null || true
  wait "$qpid" 2>/dev/null || true
  qpid=
}
cleanup() {
  stop_vm
  if [ -n "$tpid" ]; then kill "$tpid" 2>/dev/null || true; wait "$tpid" 2>/dev/null || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- the check disk ---
data="$tmp/data"
mkdir -p "$data"
cp "$check_file" "$data/check.sh"
cp "$traffic" "$data/eftraffic"
for d in "${debs[@]}"; do cp "$d" "$data/"; done
params+=("EFVM_ARCH=$arch" "EFVM_CHECK=$check_name" "EFVM_CHECK_TIMEOUT=$((limit * 9 / 10))")
netdev=user,id=n0
if [ -n "$broker_port" ]; then params+=("EFVM_BROKER=10.0.2.2:$broker_port"); fi
if [ -n "$http_port" ]; then netdev+=",hostfwd=tcp:127.0.0.1:$http_port-:8080"; fi
printf '%s\n' "${params[@]}" > "$data/env"
mke2fs -q -F -t ext4 -L efcheck -d "$data" "$tmp/data.img" 64M

# --- boot ---
log="$VM/logs/debian-$arch-$check_name.log"
: > "$tmp/console"
start=$(date +%s%N)
# The root disk is a snapshot: the guest's writes go to a temp file QEMU drops at exit.
timeout -s KILL $((limit + 15)) "${qemu[@]}" -kernel "$VMLINUZ" -initrd "$INITRD" \
  -append "root=/dev/vda rw console=$SERIAL panic=-1 quiet loglevel=3 net.ifnames=0 systemd.show_status=0 $karg" \
  -drive "file=$IMAGE,format=raw,if=none,id=root,snapshot=on" -device virtio-blk-pci,drive=root \
  -drive "file=$tmp/data.img,format=raw,if=none,id=data,readonly=on" -device virtio-blk-pci,drive=data \
  -netdev "$netdev" -device virtio-net-pci,netdev=n0 \
  -display none -monitor none -serial stdio -no-reboot \
  </dev/null >"$tmp/console" 2>&1 &
qpid=$!
# The result lines as they come (a test may act on one while the VM runs).
tail -n +1 -F --pid="$qpid" "$tmp/console" 2>/dev/null > >(sed -u -n 's/\r$//; s/^EFVM //p') &
tpid=$!
timed_out=0
while kill -0 "$qpid" 2>/dev/null; do
  if [ $(( ($(date +%s%N) - start) / 1000000000 )) -ge "$limit" ]; then
    timed_out=1
    stop_vm
    break
  fi
  sleep 0.5
done
[ -z "$qpid" ] || wait "$qpid" 2>/dev/null || true
qpid=
wait "$tpid" 2>/dev/null || true   # tail ends by itself once QEMU has (--pid)
tpid=
sleep 0.2                          # sed's last lines out before the host line
wall_ms=$(( ($(date +%s%N) - start) / 1000000 ))
tr -d '\r' < "$tmp/console" > "$log"

echo "host arch=$arch kver=$KVER check=$check_name wall_ms=$wall_ms"
if [ "$timed_out" = 1 ]; then
  echo "run.sh: debian $arch $check_name: no power-off within ${limit}s, VM killed (console: $log)" >&2
  tail -n 40 "$log" >&2
  exit 124
fi
if grep -q '^EFVM status ok' "$log"; then exit 0; fi
if grep -q '^EFVM status fail' "$log"; then
  echo "run.sh: debian $arch $check_name failed (console: $log)" >&2
  tail -n 40 "$log" >&2
  exit 1
fi
echo "run.sh: debian $arch $check_name ended without a status (console: $log)" >&2
tail -n 40 "$log" >&2
exit 3
