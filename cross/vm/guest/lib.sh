# Shell helpers for the checks (sourced). Results are console lines `EFVM key value...`.
IP=/bin/ip     # iproute2's (busybox's applet has no netns)
TC=/sbin/tc
A4=10.77.0.1 B4=10.77.0.2 A6=fd77::1 B6=fd77::2

say() { echo "EFVM $*"; }
fail() { say "fail $*"; exit 1; }
uptime_ms() { awk '{printf "%d\n", $1 * 1000}' /proc/uptime; }

# Two namespaces efa and efb joined by a veth pair va (efa) - vb (efb), IPv4 and IPv6.
# `quiet` also turns IPv6 off and fixes the neighbours: nothing on the link but the check's own
# traffic (no ARP, ND or MLD).
netpair() {
  $IP netns add efa && $IP netns add efb || fail "netns add"
  $IP link add va netns efa type veth peer name vb netns efb || fail "veth add"
  for ns in efa efb; do $IP -n $ns link set lo up; done
  if [ "$1" = quiet ]; then
    for ns in efa efb; do
      $IP netns exec $ns sysctl -qw net.ipv6.conf.all.disable_ipv6=1
      $IP netns exec $ns sysctl -qw net.ipv6.conf.default.disable_ipv6=1
    done
  fi
  $IP -n efa addr add $A4/24 dev va && $IP -n efb addr add $B4/24 dev vb || fail "addr v4"
  if [ "$1" != quiet ]; then
    $IP -n efa addr add $A6/64 dev va nodad && $IP -n efb addr add $B6/64 dev vb nodad || fail "addr v6"
  fi
  $IP -n efa link set va up && $IP -n efb link set vb up || fail "link up"
  if [ "$1" = quiet ]; then
    ma=$($IP -n efa link show va | awk '/link\/ether/ {print $2}')
    mb=$($IP -n efb link show vb | awk '/link\/ether/ {print $2}')
    $IP -n efa neigh replace $B4 lladdr "$mb" dev va nud permanent
    $IP -n efb neigh replace $A4 lladdr "$ma" dev vb nud permanent
  fi
  i=0
  until $IP -n efa link show va | grep -q 'state UP' && $IP -n efb link show vb | grep -q 'state UP'; do
    i=$((i + 1)); [ $i -lt 100 ] || fail "veth not up"; sleep 0.1
  done
}

# A counter of /proc/net/snmp in a namespace: snmp NS Tcp OutSegs.
snmp() {
  $IP netns exec "$1" awk -v p="$2:" -v f="$3" '
    $1 == p && !h { for (i = 2; i <= NF; i++) col[$i] = i; h = 1; next }
    $1 == p && h { print $(col[f]); exit }' /proc/net/snmp
}
# Segments a namespace put on the wire (first sends and retransmissions).
tcp_out() { echo $(( $(snmp "$1" Tcp OutSegs) + $(snmp "$1" Tcp RetransSegs) )); }

# agent_start NAME ARGS...: runs `edgeflow ARGS` in the background (stdout /tmp/NAME.out,
# stderr /tmp/NAME.err) and waits until it says it is ready; reports the time it took.
agent_start() {
  name=$1; shift
  t0=$(uptime_ms)
  # Emptied here, not by the redirection: the background shell may open it after the first look.
  : >/tmp/$name.out; : >/tmp/$name.err
  edgeflow "$@" >>/tmp/$name.out 2>>/tmp/$name.err &
  eval "${name}_pid=$!"
  i=0
  until grep -q 'edgeflow: ready' /tmp/$name.err; do
    if ! kill -0 "$(eval echo \$${name}_pid)" 2>/dev/null; then
      sed "s/^/EFVM $name-err /" /tmp/$name.err
      fail "$name exited before it was ready"
    fi
    i=$((i + 1)); [ $i -lt 3000 ] || fail "$name not ready in 300 s"
    sleep 0.1
  done
  say "load name=$name ms=$(( $(uptime_ms) - t0 ))"
}

# agent_stop NAME [SIGNAL]: signals the agent (INT by default), waits, prints its output as
# `EFVM NAME-out ...` / `EFVM NAME-err ...` lines and sets NAME_rc.
agent_stop() {
  name=$1 sig=${2:-INT}
  pid=$(eval echo \$${name}_pid)
  kill -$sig "$pid"
  wait "$pid"
  rc=$?
  eval "${name}_rc=$rc"
  sed "s/^/EFVM $name-out /" /tmp/$name.out
  sed "s/^/EFVM $name-err /" /tmp/$name.err
  say "exit name=$name signal=$sig rc=$rc"
}

# What is attached to NS's DEV: `ingress=N egress=N xdp=N` (bpf filters per clsact hook,
# XDP programs); the tc filter lines go to the console (stderr) as `EFVM hook ...`.
hooks() {
  # A filter's lines carry its handle; `tc` also prints a line per pref (the chain head).
  ing=$($TC -n "$1" filter show dev "$2" ingress 2>/dev/null | grep ' bpf ' | grep -c ' handle ')
  egr=$($TC -n "$1" filter show dev "$2" egress 2>/dev/null | grep ' bpf ' | grep -c ' handle ')
  xdp=$($IP -n "$1" -d link show dev "$2" | grep -c 'prog/xdp')
  $TC -n "$1" filter show dev "$2" ingress 2>/dev/null | grep ' bpf .* tag ' | sed 's/^/EFVM hook ingress /' >&2
  $TC -n "$1" filter show dev "$2" egress 2>/dev/null | grep ' bpf .* tag ' | sed 's/^/EFVM hook egress /' >&2
  echo "ingress=$ing egress=$egr xdp=$xdp"
}

# Sums the flows of `watch --json` windows (FILE) per key and prints one line per flow:
# proto src sport dst dport pkts_fwd bytes_fwd pkts_rev bytes_rev tcp_flags rtt_samples handshake_us
flows_of() {
  awk '
    function get(s, k,   v) {
      if (!match(s, "\"" k "\":[^,}]*")) return 0
      v = substr(s, RSTART + length(k) + 3, RLENGTH - length(k) - 3)
      gsub(/"/, "", v); if (v == "null") v = 0
      return v
    }
    {
      n = split($0, part, /\{"proto":/)
      for (i = 2; i <= n; i++) {
        p = "\"proto\":" part[i]
        k = get(p, "proto") " " get(p, "src") " " get(p, "src_port") " " get(p, "dst") " " get(p, "dst_port")
        if (!(k in pf)) order[++nk] = k
        pf[k] += get(p, "packets_fwd"); bf[k] += get(p, "bytes_fwd")
        pr[k] += get(p, "packets_rev"); br[k] += get(p, "bytes_rev")
        fl[k] = get(p, "tcp_flags"); rs[k] += get(p, "samples")
        if (get(p, "handshake")) hs[k] = get(p, "handshake")
      }
    }
    END { for (i = 1; i <= nk; i++) { k = order[i]
      print k, pf[k], bf[k], pr[k], br[k], fl[k], rs[k], hs[k] + 0 } }' "$1"
}

# One window field summed over all windows of FILE: sum_field FILE unsettled packets.
last_unsettled() {
  tail -n 1 "$1" | awk '{ if (match($0, /"unsettled":\{"packets":[0-9]+/)) {
    s = substr($0, RSTART, RLENGTH); sub(/.*:/, "", s); print s } else print "missing" }'
}

# expect_flow FLOWS PROTO SRC SPORT DST DPORT PF BF PR BR: the summed flow must match exactly.
expect_flow() {
  f=$1; shift
  got=$(awk -v k="$1 $2 $3 $4 $5" '$1" "$2" "$3" "$4" "$5 == k {print $6, $7, $8, $9}' "$f")
  want="$6 $7 $8 $9"
  if [ "$got" = "$want" ]; then
    say "flow-ok $1 $2:$3 > $4:$5 pkts_fwd bytes_fwd pkts_rev bytes_rev = $want"
  else
    say "flow-bad $1 $2:$3 > $4:$5 want $want got ${got:-nothing}"
    bad=1
  fi
}
