#!/usr/bin/env bash
# Boots one of Debian's stock kernels under QEMU (TCG) with a busybox initramfs holding the
# static edgeflow binary, runs one check inside and prints its result lines:
#   cross/vm/run.sh [--arch x86_64|aarch64|armv7] [--kernel 6.1|5.10] [--bin EDGEFLOW]
#                   [--broker-port PORT] [--timeout SECS] CHECK [KEY=value ...]
# CHECK is a script in cross/vm/guest/checks/ (by name) or a path to one; KEY=value words go to
# the guest's kernel command line and reach the check as environment variables. --bin defaults
# to cross/build.sh's static binary for the arch, brought up to date first unless
# EDGEFLOW_VM_NO_BUILD=1 (then the last build is used as it is). --broker-port gives the
# guest QEMU user networking, where the host's 127.0.0.1:PORT is 10.0.2.2:PORT (EFVM_BROKER).
# Output: the guest's `EFVM key value...` lines as `key value...`, then `host ...` timings.
# Exit 0 when the check reported `status ok`, 1 when it failed, 124 on the time limit (the VM
# is killed), 3 when the guest ended without a status. The VM and its temp files go on every
# exit path; the last console log stays in $CARGO_TARGET_DIR/vm/logs/.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BASE=${CARGO_TARGET_DIR:-/var/tmp/edgeflow-target}
VM=${EDGEFLOW_VM_CACHE:-$BASE/vm}

arch=x86_64 series=6.1 bin= broker_port= limit=300 check=
params=()
while [ $# -gt 0 ]; do
  case $1 in
    --arch) arch=$2; shift 2 ;;
    --kernel) series=$2; shift 2 ;;
    --bin) bin=$2; shift 2 ;;
    --broker-port) broker_port=$2; shift 2 ;;
    --timeout) limit=$2; shift 2 ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    -*) echo "run.sh: unknown option $1" >&2; exit 2 ;;
    *=*) params+=("$1"); shift ;;
    *) [ -z "$check" ] || { echo "run.sh: one CHECK only ($check, $1)" >&2; exit 2; }
       check=$1; shift ;;
  esac
done
[ -n "$check" ] || { echo "run.sh: which CHECK? (cross/vm/guest/checks/)" >&2; exit 2; }
if [ -f "$check" ]; then check_file=$check; else check_file="$HERE/guest/checks/$check.sh"; fi
[ -f "$check_file" ] || { echo "run.sh: no check $check ($check_file)" >&2; exit 2; }
check_name=$(basename "$check_file" .sh)

case $arch in
  x86_64) triple=x86_64-unknown-linux-musl console=ttyS0
          qemu=(qemu-system-x86_64 -accel tcg -cpu max -smp 2 -m 1024) ;;
  aarch64) triple=aarch64-unknown-linux-musl console=ttyAMA0
          qemu=(qemu-system-aarch64 -M virt -cpu cortex-a72 -smp 2 -m 1024) ;;
  armv7) triple=armv7-unknown-linux-musleabihf console=ttyAMA0
          # highmem=off: a 32-bit kernel cannot claim the PCI ECAM window above 4 GiB.
          qemu=(qemu-system-arm -M virt,highmem=off -cpu cortex-a15 -smp 2 -m 1024) ;;
  *) echo "run.sh: unknown arch $arch (x86_64|aarch64|armv7)" >&2; exit 2 ;;
esac

"$HERE/setup.sh"
# The guest's binaries: static musl builds for the arch. cross/build.sh is incremental (seconds
# when nothing changed), so the VM always runs the current source unless --bin names one.
cross_out="$BASE/cross/$triple/edge-release"
if [ -z "$bin" ]; then
  bin="$cross_out/edgeflow"
  [ "${EDGEFLOW_VM_NO_BUILD:-0}" = 1 ] || "$ROOT/cross/build.sh" "$arch" >&2
fi
[ -x "$bin" ] || { echo "run.sh: no edgeflow binary at $bin" >&2; exit 2; }
# The traffic helper: built when missing or older than its source.
traffic="$cross_out/eftraffic"
if [ ! -x "$traffic" ] || [ -n "$(find "$HERE/traffic" -newer "$traffic" -type f -print -quit)" ]; then
  (source "$ROOT/cross/env.sh" && cd "$ROOT" && cargo --config "$ROOT/cross/config.toml" zigbuild \
     --locked --profile edge-release -Z build-std=std,panic_abort --target "$triple" \
     -p edgeflow-vm-traffic --quiet) >&2
fi

eval "$("$HERE/fetch.sh" "$arch" "$series")"   # KVER VMLINUZ MODROOT USERLAND

mkdir -p "$VM/tmp" "$VM/logs"
# Left only by a run that was itself SIGKILLed; none runs for hours.
find "$VM/tmp" -mindepth 1 -maxdepth 1 -mmin +600 -exec rm -rf {} + 2>/dev/null || true
tmp=$(mktemp -d "$VM/tmp/run.XXXXXX")
qpid=
# Stops QEMU: through `timeout`, which passes the signal on (and kills it by itself at the
# limit should this script be killed first).
stop_vm() {
  [ -n "$qpid" ] || return 0
  kill -TERM "$qpid" 2>/dev/null || true
  for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$qpid" 2>/dev/null || break; sleep 0.2; done
  pkill -KILL -P "$qpid" 2>/dev/null || true
  kill -KILL "$qpid" 2>/dev/null || true
  wait "$qpid" 2>/dev/null || true
  qpid=
}
cleanup() {
  stop_vm
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- initramfs ---
root="$tmp/root"
mkdir -p "$root"
cp -a "$USERLAND/." "$root/"
rm -f "$root/.done"
mkdir -p "$root/lib/modules" "$root/checks" "$root/usr/local/bin"
cp "$HERE/guest/init" "$root/init"
cp "$HERE/guest/lib.sh" "$root/checks/lib.sh"
cp "$check_file" "$root/checks/check.sh"
cp "$bin" "$root/usr/local/bin/edgeflow"
cp "$traffic" "$root/usr/local/bin/eftraffic"
chmod +x "$root/init" "$root/checks/check.sh"

# Modules in dependency order (read from each module's .modinfo, so any arch works); built-in
# ones are skipped.
moddir="$MODROOT/lib/modules/$KVER"
declare -A have=()
order=()
add_module() {
  local m=$1 f d
  [ -z "${have[$m]:-}" ] || return 0
  have[$m]=1
  f=$(find "$moddir/kernel" \( -name "$m.ko" -o -name "${m//_/-}.ko" \) -print -quit)
  if [ -z "$f" ]; then
    grep -qE "/(${m}|${m//_/-})\.ko$" "$moddir/modules.builtin" && return 0
    echo "run.sh: module $m is neither in $KVER's package nor built in" >&2; exit 1
  fi
  for d in $(tr '\0' '\n' < "$f" | sed -n 's/^depends=//p' | tr , ' '); do add_module "$d"; done
  cp "$f" "$root/lib/modules/"
  order+=("$(basename "$f")")
}
for m in veth sch_ingress cls_bpf; do add_module "$m"; done
netargs=(-nic none)
if [ -n "$broker_port" ]; then
  for m in virtio_pci virtio_net; do add_module "$m"; done
  netargs=(-netdev user,id=n0 -device virtio-net-pci,netdev=n0)
  params+=("EFVM_NET=1" "EFVM_BROKER=10.0.2.2:$broker_port")
fi
printf '%s\n' "${order[@]}" > "$root/lib/modules/order"
(cd "$root" && find . | cpio -o -H newc --quiet | gzip -1) > "$tmp/initrd.gz"
rm -rf "$root"

# --- boot ---
log="$VM/logs/$arch-$series-$check_name.log"
start=$(date +%s%N)
timeout -s KILL $((limit + 15)) "${qemu[@]}" -kernel "$VMLINUZ" -initrd "$tmp/initrd.gz" \
  -append "console=$console panic=-1 quiet loglevel=3 EFVM_ARCH=$arch EFVM_CHECK=$check_name EFVM_CHECK_TIMEOUT=$((limit * 9 / 10)) ${params[*]}" \
  -display none -monitor none -serial stdio -no-reboot "${netargs[@]}" \
  </dev/null >"$tmp/console" 2>&1 &
qpid=$!
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
wall_ms=$(( ($(date +%s%N) - start) / 1000000 ))
tr -d '\r' < "$tmp/console" > "$log"

sed -n 's/^EFVM //p' "$log"
echo "host arch=$arch kernel=$series kver=$KVER check=$check_name wall_ms=$wall_ms"
if [ "$timed_out" = 1 ]; then
  echo "run.sh: $arch $check_name: no power-off within ${limit}s, VM killed (console: $log)" >&2
  tail -n 40 "$log" >&2
  exit 124
fi
if grep -q '^EFVM status ok' "$log"; then exit 0; fi
if grep -q '^EFVM status fail' "$log"; then
  echo "run.sh: $arch $check_name failed (console: $log)" >&2
  tail -n 40 "$log" >&2
  exit 1
fi
echo "run.sh: $arch $check_name ended without a status (console: $log)" >&2
tail -n 40 "$log" >&2
exit 3
