# The quickest whole check: the programs load and attach, 3 pings are one ICMP flow of 3 + 3
# packets, and nothing stays attached after the agent exits.
. /checks/lib.sh
say "version $(edgeflow --version)"
netpair quiet
agent_start watch watch --json --netns efa --iface va --interval 60
say "attached $(hooks efa va)"
$IP netns exec efa ping -c 3 -i 0.2 -q $B4 >/dev/null || fail "ping"
sleep 0.5
agent_stop watch INT
[ "$watch_rc" = 0 ] || fail "watch exit $watch_rc"
flows_of /tmp/watch.out > /tmp/flows
sed 's/^/EFVM flow /' /tmp/flows
bad=0
expect_flow /tmp/flows 1 $A4 8 $B4 0 3 252 3 252
after=$(hooks efa va)
say "after-exit $after"
[ "$after" = "ingress=0 egress=0 xdp=0" ] || fail "still attached after exit: $after"
[ "$bad" = 0 ] || fail "flow counts"
