"""What the kernel counts, read without running anything: per-cgroup CPU (cgroup v1
cpuacct, exact scheduler runtime), interface and protocol counters of a namespace (through a
process living in it), ksoftirqd's runtime, hypervisor steal, BPF program and map fdinfo."""
import os
import re

USER_HZ = os.sysconf("SC_CLK_TCK")
CPUACCT = "/sys/fs/cgroup/cpuacct"


def read(path):
    with open(path) as f:
        return f.read()


def root_usage_ns():
    return int(read(f"{CPUACCT}/cpuacct.usage"))


def netdev(pid, ifname):
    for line in read(f"/proc/{pid}/net/dev").splitlines():
        if ":" in line:
            name, rest = line.split(":", 1)
            if name.strip() == ifname:
                v = [int(x) for x in rest.split()]
                return dict(rx_bytes=v[0], rx_packets=v[1], rx_drop=v[3],
                            tx_bytes=v[8], tx_packets=v[9])
    raise KeyError(ifname)


def snmp(pid):
    """{'Udp': {...}, 'Tcp': {...}, ...} of the namespace pid lives in."""
    lines = read(f"/proc/{pid}/net/snmp").splitlines()
    out = {}
    for keys, vals in zip(lines[::2], lines[1::2]):
        out[keys.split(":")[0]] = dict(zip(keys.split()[1:], (int(x) for x in vals.split()[1:])))
    return out


def steal_s():
    for line in read("/proc/stat").splitlines():
        if line.startswith("cpu "):
            return int(line.split()[8]) / USER_HZ
    return 0.0


def ksoftirqd_pids():
    pids = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                if read(f"/proc/{d}/comm").startswith("ksoftirqd/"):
                    pids.append(int(d))
            except OSError:
                pass
    return pids


def task_runtime_ns(pids):
    tot = 0
    for p in pids:
        try:
            tot += int(read(f"/proc/{p}/schedstat").split()[0])
        except OSError:
            pass
    return tot


def vm_kib(pids, field):
    """VmRSS (resident now) or VmHWM (peak, the process's own high-water mark), summed."""
    tot = 0
    for p in pids:
        try:
            m = re.search(rf"^{field}:\s+(\d+)", read(f"/proc/{p}/status"), re.M)
            tot += int(m.group(1)) if m else 0
        except OSError:
            pass
    return tot


def bpf_mapped_kib(pids):
    """Resident pages of BPF maps mapped into these processes (edgeflow's flow table): the
    kernel's memory, counted in the BPF map column, not the process's own."""
    tot = 0
    for p in pids:
        try:
            smaps = read(f"/proc/{p}/smaps")
        except OSError:
            continue
        mapped = False
        for line in smaps.splitlines():
            if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
                mapped = line.endswith("anon_inode:bpf-map")
            elif mapped and line.startswith("Rss:"):
                tot += int(line.split()[1])
    return tot


def own_kib(pids, field):
    """`vm_kib` without the BPF maps mapped into the processes."""
    return vm_kib(pids, field) - bpf_mapped_kib(pids)


def bpf_fds(pids):
    """BPF programs and maps held by these processes, from fdinfo:
    ({prog_id: {run_time_ns, run_cnt, type}}, {map_id: memlock})."""
    progs, maps = {}, {}
    for p in pids:
        try:
            fds = os.listdir(f"/proc/{p}/fdinfo")
        except OSError:
            continue
        for fd in fds:
            try:
                info = read(f"/proc/{p}/fdinfo/{fd}")
            except OSError:
                continue
            kv = dict(l.split(":", 1) for l in info.splitlines() if ":" in l)
            kv = {k.strip(): v.strip() for k, v in kv.items()}
            if "prog_type" in kv:  # a program fd (link fds name their prog_id too)
                progs[int(kv["prog_id"])] = dict(run_time_ns=int(kv.get("run_time_ns", 0)),
                                                 run_cnt=int(kv.get("run_cnt", 0)),
                                                 type=kv.get("prog_type"))
            elif "map_type" in kv:
                maps[int(kv["map_id"])] = int(kv.get("memlock", 0))
    return progs, maps


STATS_SYSCTL = "/proc/sys/kernel/bpf_stats_enabled"


def bpf_stats(on):
    """Run-time accounting of every BPF program (costs two clock reads per run: on only
    outside the CPU window)."""
    with open(STATS_SYSCTL, "w") as f:
        f.write("1" if on else "0")
