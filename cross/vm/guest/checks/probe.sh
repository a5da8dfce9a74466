# A kernel the programs cannot run on (bullseye's 5.10: no BPF compare-and-swap): the agent
# says so in one line and exits 2, before any verifier dump, and attaches nothing.
# EFVM_EXPECT: a grep pattern that line must match (no spaces: use . for them).
. /checks/lib.sh
netpair quiet
want=${EFVM_EXPECT:-needs.Linux.5\.12}
edgeflow watch --json --netns efa --iface va --interval 60 >/tmp/w.out 2>/tmp/w.err
rc=$?
sed 's/^/EFVM probe-err /' /tmp/w.err
lines=$(grep -c . /tmp/w.err)
say "probe rc=$rc stderr_lines=$lines"
[ "$rc" = 2 ] || fail "exit $rc, want 2"
[ "$lines" = 1 ] || fail "stderr has $lines lines, want 1"
grep -q "$want" /tmp/w.err || fail "the line does not match $want"
h=$(hooks efa va); say "after-exit $h"
[ "$h" = "ingress=0 egress=0 xdp=0" ] || fail "attached something: $h"
