# What loading costs with the JIT as the guest has it (EFVM_JIT sets net.core.bpf_jit_enable),
# and, where the JIT cannot compile the programs' atomics (32-bit ARM), the one line the agent
# refuses with. Prints `jit-load ...` (the agent's own load report) or `jit-refused ...`.
. /checks/lib.sh
netpair quiet
t0=$(uptime_ms)
edgeflow watch --json --netns efa --iface va --attach tc --interval 0.5 --count 1 \
  >/tmp/w.out 2>/tmp/w.err
rc=$?
ms=$(( $(uptime_ms) - t0 ))
sed 's/^/EFVM jit-err /' /tmp/w.err
jit=$(cat /proc/sys/net/core/bpf_jit_enable)
if [ "$rc" = 0 ]; then
  say "jit-load bpf_jit_enable=$jit rc=0 ms=$ms $(grep 'programs loaded' /tmp/w.err)"
else
  say "jit-refused bpf_jit_enable=$jit rc=$rc stderr_lines=$(grep -c . /tmp/w.err)"
fi
h=$(hooks efa va); say "after-exit $h"
[ "$h" = "ingress=0 egress=0 xdp=0" ] || fail "attached something: $h"
