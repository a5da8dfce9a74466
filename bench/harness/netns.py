"""The two namespaces and the veth pair the traffic crosses, and nothing else.

    efb-src-<pid> [efbs 10.211.0.1/30] ==veth== [efbd 10.211.0.2/30] efb-dst-<pid>

The pair is created directly inside the namespaces (it never exists in the root namespace);
the addresses exist only there, neither namespace has a default route, IPv6 is off on the
link (no router solicitations or MLD in the counts) and neighbours are static (no ARP during
a measurement). Exporters in the destination namespace send to its own 127.0.0.1.
Removal is by name, also after a failure or a signal (see `Topology.down`).
"""
import json
import os
import subprocess
import time

NET = "10.211.0"
IP_SRC, IP_DST = NET + ".1", NET + ".2"
IF_SRC, IF_DST = "efbs", "efbd"


def run(argv, check=True, timeout=30):
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({r.returncode}): {r.stderr.strip()}")
    return r


def nsx(ns, *argv):
    """argv run inside namespace ns (`ip netns exec` execs in place: the pid stays)."""
    return ["ip", "netns", "exec", ns, *argv]


class Topology:
    def __init__(self):
        pid = os.getpid()
        self.src, self.dst = f"efb-src-{pid}", f"efb-dst-{pid}"
        self.holders = []

    def up(self):
        self.down()
        run(["ip", "netns", "add", self.src])
        run(["ip", "netns", "add", self.dst])
        run(["ip", "link", "add", IF_SRC, "netns", self.src, "type", "veth",
             "peer", "name", IF_DST, "netns", self.dst])
        for ns in (self.src, self.dst):
            run(["ip", "-n", ns, "link", "set", "lo", "up"])
            for conf in ("all", "default", IF_SRC if ns == self.src else IF_DST):
                run(nsx(ns, "sh", "-c",
                        f"echo 1 > /proc/sys/net/ipv6/conf/{conf}/disable_ipv6"))
        run(["ip", "-n", self.src, "addr", "add", IP_SRC + "/30", "dev", IF_SRC])
        run(["ip", "-n", self.dst, "addr", "add", IP_DST + "/30", "dev", IF_DST])
        run(["ip", "-n", self.src, "link", "set", IF_SRC, "up"])
        run(["ip", "-n", self.dst, "link", "set", IF_DST, "up"])
        self.mac_src, self.mac_dst = self.mac(self.src, IF_SRC), self.mac(self.dst, IF_DST)
        run(["ip", "-n", self.src, "neigh", "replace", IP_DST, "lladdr", self.mac_dst,
             "dev", IF_SRC, "nud", "permanent"])
        run(["ip", "-n", self.dst, "neigh", "replace", IP_SRC, "lladdr", self.mac_src,
             "dev", IF_DST, "nud", "permanent"])
        # Nothing may be routable beyond the /30.
        for ns in (self.src, self.dst):
            if run(["ip", "-n", ns, "route", "get", "1.1.1.1"], check=False).returncode == 0:
                raise RuntimeError(f"{ns} has an off-link route; refusing to send traffic")
        # A sleeping process per namespace: /proc/<pid>/net/* is that namespace's view, read
        # without spawning anything during a measurement.
        self.holders = [subprocess.Popen(nsx(ns, "sleep", "infinity"))
                        for ns in (self.src, self.dst)]
        time.sleep(0.2)

    @staticmethod
    def mac(ns, ifname):
        out = run(["ip", "-n", ns, "-j", "link", "show", ifname]).stdout
        return json.loads(out)[0]["address"]

    @property
    def src_pid(self):
        return self.holders[0].pid

    @property
    def dst_pid(self):
        return self.holders[1].pid

    def down(self):
        """Removes both namespaces by name, killing only processes inside them."""
        for h in self.holders:
            h.kill()
            h.wait()
        self.holders = []
        listed = run(["ip", "netns", "list"], check=False).stdout.split()
        for ns in (self.src, self.dst):
            if ns not in listed:
                continue
            pids = run(["ip", "netns", "pids", ns], check=False).stdout.split()
            for p in pids:
                try:
                    os.kill(int(p), 9)
                except (ProcessLookupError, ValueError):
                    pass
            if pids:
                time.sleep(0.3)
            run(["ip", "netns", "del", ns], check=False)
