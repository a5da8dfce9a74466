# Exact per-flow counts between two namespaces on a veth pair, read by `edgeflow watch --json`
# at va (efa's end; TC ingress + egress, or XDP ingress with EFVM_ATTACH=xdp; the table read
# through its mapped array):
# UDP v4 and v6 (5 datagrams echoed), TCP both ways (handshake, data, close; the senders'
# own segment counters are the truth), ICMP v4 and v6 echo; RTT samples on the TCP flows;
# the window totals conserve and nothing is left unsettled; nothing attached after exit.
. /checks/lib.sh
netpair
# IPv6 needs its neighbours once (ND is its own ICMPv6 flows, which the check ignores).
$IP netns exec efa ping -c 1 -w 5 -q $B6 >/dev/null || fail "v6 not reachable"
# EFVM_ATTACH: the agent's --attach (auto: TC both ways on a veth; xdp: XDP ingress).
agent_start watch watch --json --netns efa --iface va --attach "${EFVM_ATTACH:-auto}" --interval 60
say "attached $(hooks efa va)"

bad=0
# serve NS CMD...: starts an eftraffic server in NS and waits for its ready line.
serve() {
  ns=$1; shift
  : >/tmp/serve.out   # not by the redirection: the wait below may look before it happens
  $IP netns exec "$ns" eftraffic "$@" >>/tmp/serve.out 2>&1 &
  serve_pid=$!
  i=0
  until grep -q ready /tmp/serve.out; do
    i=$((i + 1)); [ $i -lt 200 ] || fail "server $* not ready"; sleep 0.05
  done
}
served() { wait "$serve_pid" || { cat /tmp/serve.out; fail "server failed"; }; }
field() { echo "$1" | tr ' ' '\n' | sed -n "s/^$2=//p"; }

# UDP: 5 datagrams of 100 bytes each way (v4: 128 bytes on the wire, v6: 148).
serve efb udp-echo $B4 5000 5
out=$($IP netns exec efa eftraffic udp-send $B4 5000 5 100) || fail "udp4 send"
served; sp4=$(field "$out" sport)
serve efb udp-echo $B6 5001 5
out=$($IP netns exec efa eftraffic udp-send $B6 5001 5 100) || fail "udp6 send"
served; sp6=$(field "$out" sport)

# TCP: 100,000 bytes up and 20,000 back, closed; once from efa, once from efb.
a0=$(tcp_out efa) b0=$(tcp_out efb)
serve efb tcp-serve $B4 8080 20000
out=$($IP netns exec efa eftraffic tcp-send $B4 8080 100000) || fail "tcp a>b"
served; tpa=$(field "$out" sport)
sleep 0.3
a1=$(tcp_out efa) b1=$(tcp_out efb)
serve efa tcp-serve $A4 8081 20000
out=$($IP netns exec efb eftraffic tcp-send $A4 8081 100000) || fail "tcp b>a"
served; tpb=$(field "$out" sport)
sleep 0.3
a2=$(tcp_out efa) b2=$(tcp_out efb)

# ICMP: 4 echoes each (v4: 84 bytes, v6: 104).
$IP netns exec efa ping -c 4 -i 0.2 -q $B4 >/dev/null || fail "ping"
$IP netns exec efa ping -c 4 -i 0.2 -q $B6 >/dev/null || fail "ping6"
sleep 0.5
agent_stop watch INT
[ "$watch_rc" = 0 ] || fail "watch exit $watch_rc"

flows_of /tmp/watch.out > /tmp/flows
sed 's/^/EFVM flow /' /tmp/flows
expect_flow /tmp/flows 17 $A4 "$sp4" $B4 5000 5 640 5 640
expect_flow /tmp/flows 17 $A6 "$sp6" $B6 5001 5 740 5 740
expect_flow /tmp/flows 1 $A4 8 $B4 0 4 336 4 336
expect_flow /tmp/flows 58 $A6 128 $B6 0 4 416 4 416
# TCP: packets are the segments each side sent (its own counters); every segment carries IP
# (20) + TCP (20) + timestamps (12) = 52 header bytes, the SYN and SYN-ACK 8 more (MSS, SACK,
# window scale).
pa=$((a1 - a0)) pb=$((b1 - b0))
expect_flow /tmp/flows 6 $A4 "$tpa" $B4 8080 $pa $((100000 + 52 * pa + 8)) $pb $((20000 + 52 * pb + 8))
pa=$((a2 - a1)) pb=$((b2 - b1))
expect_flow /tmp/flows 6 $B4 "$tpb" $A4 8081 $pb $((100000 + 52 * pb + 8)) $pa $((20000 + 52 * pa + 8))
# Handshake and close seen (SYN, ACK and FIN in the flags), and RTT samples with a handshake.
for k in "$A4 $tpa $B4 8080" "$B4 $tpb $A4 8081"; do
  line=$(awk -v k="6 $k" '$1" "$2" "$3" "$4" "$5 == k' /tmp/flows)
  set -- $line
  flags=${10:-0} samples=${11:-0} hs=${12:-0}
  if [ $((flags & 0x13)) = $((0x13)) ] && [ "$samples" -gt 0 ] && [ "$hs" -gt 0 ]; then
    say "tcp-ok $k flags=$flags rtt_samples=$samples handshake_us=$hs"
  else
    say "tcp-bad $k flags=$flags rtt_samples=$samples handshake_us=$hs"; bad=1
  fi
done
uns=$(last_unsettled /tmp/watch.out)
say "unsettled packets=$uns"
[ "$uns" = 0 ] || bad=1
after=$(hooks efa va)
say "after-exit $after"
[ "$after" = "ingress=0 egress=0 xdp=0" ] || fail "still attached after exit: $after"
[ "$bad" = 0 ] || fail "flow counts"
