# On a kernel too old for the programs (bullseye's 5.10): the agent names the missing feature
# and the minimum kernel in one line and exits 2, no verifier dump.
. /checks/lib.sh
netpair quiet
edgeflow watch --json --netns efa --iface va --interval 60 >/tmp/w.out 2>/tmp/w.err
rc=$?
sed 's/^/EFVM probe-err /' /tmp/w.err
lines=$(grep -c . /tmp/w.err)
say "probe rc=$rc stderr_lines=$lines"
[ "$rc" = 2 ] || fail "exit $rc, want 2"
[ "$lines" = 1 ] || fail "stderr has $lines lines, want 1"
grep -q 'needs Linux 5\.12' /tmp/w.err || fail "no 'needs Linux 5.12' in the message"
h=$(hooks efa va); say "after-exit $h"
[ "$h" = "ingress=0 egress=0 xdp=0" ] || fail "attached something: $h"
