# `edgeflow run` in the guest publishing to the Mosquitto the host test started (QEMU user
# networking: the host's loopback is EFVM_BROKER). Known traffic on a quiet link (IPv4 only,
# static neighbours): 6 UDP datagrams of 100 bytes echoed and 3 pings. The guest reports what it
# sent (`sent ...` lines); the host's subscriber checks the summaries add up to exactly that.
. /checks/lib.sh
[ -n "$EFVM_BROKER" ] || fail "no EFVM_BROKER (run.sh --broker-port)"
netpair quiet
agent_start run run --netns efa --iface va --broker "mqtt://$EFVM_BROKER" \
  --device "vm-$EFVM_ARCH" --site vm --interval 2
: >/tmp/serve.out
$IP netns exec efb eftraffic udp-echo $B4 5000 6 >>/tmp/serve.out 2>&1 &
sp=$!
i=0; until grep -q ready /tmp/serve.out; do i=$((i + 1)); [ $i -lt 200 ] || fail "echo"; sleep 0.05; done
out=$($IP netns exec efa eftraffic udp-send $B4 5000 6 100) || fail "udp send"
wait $sp || fail "udp echo"
sport=$(echo "$out" | tr ' ' '\n' | sed -n 's/^sport=//p')
say "sent udp sport=$sport dport=5000 packets=12 bytes=$((12 * 128))"
$IP netns exec efa ping -c 3 -i 0.2 -q $B4 >/dev/null || fail "ping"
say "sent icmp type=8 code=0 packets=6 bytes=$((6 * 84))"
say "sent total packets=18 bytes=$((12 * 128 + 6 * 84))"
# Two more windows so the traffic is in published summaries, then a clean stop (which drains,
# waits for the broker's acknowledgements and publishes offline).
sleep 4
agent_stop run TERM
[ "$run_rc" = 0 ] || fail "run exit $run_rc"
h=$(hooks efa va); say "after-exit $h"
[ "$h" = "ingress=0 egress=0 xdp=0" ] || fail "still attached after exit: $h"
