# A killed agent's leftovers: after SIGKILL of a running agent and a restart there is exactly
# one program per hook, the restarted agent counts (3 pings, 3 + 3 packets), and after it
# exits nothing is attached. With --attach tc (clsact filters on ingress and egress), with
# --attach xdp (an XDP link, which dies with the process, and a clsact filter on egress), and
# with --attach xdp as on a kernel before XDP links (EDGEFLOW_LEGACY_ATTACH=1: the XDP program
# set through netlink outlives the killed agent too).
. /checks/lib.sh
netpair quiet
bad=0
for mode in tc xdp xdp-netlink; do
  attach=${mode%-netlink}
  if [ "$mode" = xdp-netlink ]; then export EDGEFLOW_LEGACY_ATTACH=1; else unset EDGEFLOW_LEGACY_ATTACH; fi
  agent_start first watch --json --netns efa --iface va --attach $attach --interval 60
  h=$(hooks efa va); say "running mode=$mode $h"
  kill -KILL "$first_pid"; wait "$first_pid" 2>/dev/null
  h=$(hooks efa va); say "after-kill mode=$mode $h"
  # What a killed agent leaves: everything but an XDP link.
  case $mode in
    tc) left="ingress=1 egress=1 xdp=0" ;;
    xdp) left="ingress=0 egress=1 xdp=0" ;;
    xdp-netlink) left="ingress=0 egress=1 xdp=1" ;;
  esac
  [ "$h" = "$left" ] || { say "bad mode=$mode after kill: want $left got $h"; bad=1; }
  agent_start second watch --json --netns efa --iface va --attach $attach --interval 60
  h=$(hooks efa va); say "restarted mode=$mode $h"
  case $mode in
    tc) want="ingress=1 egress=1 xdp=0" ;;
    xdp*) want="ingress=0 egress=1 xdp=1" ;;
  esac
  [ "$h" = "$want" ] || { say "bad mode=$mode restarted: want $want got $h"; bad=1; }
  $IP netns exec efa ping -c 3 -i 0.2 -q $B4 >/dev/null || fail "ping"
  sleep 0.5
  agent_stop second INT
  [ "$second_rc" = 0 ] || { say "bad mode=$mode second exit $second_rc"; bad=1; }
  flows_of /tmp/second.out > /tmp/flows
  expect_flow /tmp/flows 1 $A4 8 $B4 0 3 252 3 252
  h=$(hooks efa va); say "after-exit mode=$mode $h"
  [ "$h" = "ingress=0 egress=0 xdp=0" ] || { say "bad mode=$mode still attached after exit"; bad=1; }
  $TC -n efa qdisc show dev va | grep -q clsact && { say "bad mode=$mode clsact qdisc left"; bad=1; }
  # Start the next mode clean even after a failure.
  $TC -n efa qdisc del dev va clsact 2>/dev/null
  $IP -n efa link set dev va xdp off 2>/dev/null
done
[ "$bad" = 0 ] || fail "leftovers"
