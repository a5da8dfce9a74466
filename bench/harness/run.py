"""One run: one configuration under one traffic load, measured.

start monitor -> L0 -> start traffic -> warm-up -> S0 -> window -> S1 -> (BPF programs:
run-time stats on for a short extra window) -> traffic ends -> L1 -> stop monitor.
Rates and CPU come from S0..S1 only (steady state, BPF stats off); what the monitor lost and
covered spans its lifetime L0..L1, so every packet it could have seen is in the comparison.
"""
import datetime as dt
import json
import os
import shutil
import subprocess
import time

import counters as c
from netns import IF_DST, IF_SRC
from monitors import make

IP_UDP = 20 + 8  # what lo's byte counter adds to a datagram's payload (no Ethernet header on lo)


class Interrupted(Exception):
    pass


class Run:
    def __init__(self, seq, rnd, name, ctx):
        self.seq, self.round, self.name = seq, rnd, name
        self.topo, self.groups, self.cpus = ctx.topo, ctx.groups, ctx.cpus
        self.bins, self.args, self.traffic = ctx.bins, ctx.args, ctx.traffic
        self.ctx = ctx
        self.work = os.path.join(ctx.workdir, f"run{seq:03d}-{name}")
        os.makedirs(self.work, exist_ok=True)
        self.rec = dict(seq=seq, round=rnd, config=name, traffic=self.traffic.kind,
                        rate=self.traffic.rate, flows=self.traffic.flows,
                        ts=dt.datetime.now().isoformat(timespec="seconds"))

    def wait(self, s):
        if self.ctx.stopping:
            raise Interrupted()
        time.sleep(s)

    def snapshot(self):
        g = self.groups
        return dict(
            t=time.monotonic(), cg={r: g.usage_ns(r) for r in ("gen", "sink", "mon", "coll", "ctl")},
            root=c.root_usage_ns(), ksoftirqd=c.task_runtime_ns(self.ctx.ksoftirqd),
            steal=c.steal_s(), dst=c.netdev(self.topo.dst_pid, IF_DST),
            src=c.netdev(self.topo.src_pid, IF_SRC), lo=c.netdev(self.topo.dst_pid, "lo"),
            snmp_dst=c.snmp(self.topo.dst_pid), snmp_src=c.snmp(self.topo.src_pid))

    def execute(self):
        a, mon = self.args, make(self.name)
        self.rec["quiet_wait_s"], self.rec["pre_busy"] = self.ctx.wait_quiet()
        seconds = a.warmup + a.duration + (a.stats_window if mon.bpf else 0) + 0.5
        try:
            mon.start(self)
            l0 = self.snapshot()
            self.traffic.start(self, seconds)
            self.wait(a.warmup)
            s0 = self.snapshot()
            self.wait(a.duration)
            s1 = self.snapshot()
            self.rec.update(window(s0, s1, self.traffic.kind, a))
            mon_pids = self.groups.pids("mon")
            self.rec["mon_rss_kib"] = c.own_kib(mon_pids, "VmRSS") or None
            if mon.bpf:
                self.rec.update(self.bpf_runtime(mon_pids, a.stats_window))
            self.rec.update(self.traffic.finish(self, seconds))
            self.wait(0.5)  # what is queued reaches the monitor
            self.rec.update({k: v for k, v in mon.before_stop(self).items() if v is not None})
            # Resident at the end of the traffic (after several drains); and the peak.
            mon_pids = self.groups.pids("mon")
            self.rec["mon_rss_kib"] = max(self.rec["mon_rss_kib"] or 0,
                                          c.own_kib(mon_pids, "VmRSS")) or None
            self.rec["mon_hwm_kib"] = c.own_kib(mon_pids, "VmHWM") or None
            l1 = self.snapshot()
            self.rec.update({k: v for k, v in mon.stop(self).items() if v is not None})
            self.rec.update(lifetime(l0, l1, self.traffic.kind, mon))
        except Interrupted:
            raise
        except Exception as e:  # a failed run is recorded and the schedule goes on
            self.rec["error"] = f"{type(e).__name__}: {e}"
        finally:
            for role in ("gen", "sink", "mon", "coll"):
                self.groups.stop(role, wait=3)
            if not a.keep_work:
                shutil.rmtree(self.work, ignore_errors=True)
        self.rec["clean"] = "error" not in self.rec and self.rec.get("foreign_cpus", 9) <= a.max_foreign
        return self.rec

    def bpf_runtime(self, pids, seconds):
        """ns per program run, over a short window with the kernel's run-time stats on."""
        p0, maps = c.bpf_fds(pids)
        owned = self.ctx.bpf_stats_owned
        if owned:
            c.bpf_stats(True)
        try:
            self.wait(seconds)
        finally:
            if owned:
                c.bpf_stats(False)
        p1, _ = c.bpf_fds(pids)
        out = dict(kmem_bytes=sum(maps.values()), bpf={})
        for pid, v in p1.items():
            runs = v["run_cnt"] - p0.get(pid, {}).get("run_cnt", 0)
            if runs > 0:
                ns = v["run_time_ns"] - p0[pid]["run_time_ns"]
                out["bpf"][prog_name(pid)] = dict(runs=runs, ns_per_run=ns / runs)
        return out


def prog_name(prog_id):
    r = subprocess.run(["bpftool", "-j", "prog", "show", "id", str(prog_id)], capture_output=True,
                       text=True, timeout=10)
    try:
        return json.loads(r.stdout)["name"]
    except (ValueError, KeyError):
        return str(prog_id)


def d(a, b, *path):
    for p in path:
        a, b = a[p], b[p]
    return b - a


def window(s0, s1, kind, args):
    """Steady-state figures between two snapshots."""
    w = s1["t"] - s0["t"]
    r = dict(window_s=w)
    for role in ("gen", "sink", "mon", "coll", "ctl"):
        r[f"cpu_{role}_s"] = d(s0, s1, "cg", role) / 1e9
    r["ksoftirqd_s"] = d(s0, s1, "ksoftirqd") / 1e9
    ours = sum(r[f"cpu_{x}_s"] for x in ("gen", "sink", "mon", "coll", "ctl")) + r["ksoftirqd_s"]
    r["foreign_cpus"] = (d(s0, s1, "root") / 1e9 - ours) / w
    r["steal_cpus"] = d(s0, s1, "steal") / w
    r["rx_bytes"] = d(s0, s1, "dst", "rx_bytes")
    r["rx_skbs"] = d(s0, s1, "dst", "rx_packets")
    r["rx_drop"] = d(s0, s1, "dst", "rx_drop")
    if kind == "udp":
        r["pkts"] = d(s0, s1, "snmp_dst", "Udp", "InDatagrams")
        r["udp_rcvbuf_err"] = d(s0, s1, "snmp_dst", "Udp", "RcvbufErrors")
    else:
        # Wire packets = TCP segments sent (a GSO aggregate crosses the veth whole).
        r["pkts"] = d(s0, s1, "snmp_src", "Tcp", "OutSegs") + d(s0, s1, "snmp_src", "Tcp", "RetransSegs")
    r["pps"] = r["pkts"] / w
    r["gbps"] = r["rx_bytes"] * 8 / w / 1e9
    n = r["pkts"] or float("nan")
    # On the box: generator (sender + the receive softirq it runs), sink, monitor, ksoftirqd.
    # The collector stands for the central one (another machine): not the monitor's cost.
    r["box_us_per_pkt"] = (r["cpu_gen_s"] + r["cpu_sink_s"] + r["cpu_mon_s"] + r["ksoftirqd_s"]) / n * 1e6
    r["mon_us_per_pkt"] = r["cpu_mon_s"] / n * 1e6
    r["coll_us_per_pkt"] = r["cpu_coll_s"] / n * 1e6
    return r


def lifetime(l0, l1, kind, mon):
    """What crossed the veth while the monitor ran, in the monitor's own unit, and what the
    monitor accounted of it; and what its exporter put on the wire."""
    r = {}
    if kind == "tcp" and mon.unit == "wire":
        # Both ends' view from the src namespace, whose only TCP is the test's (the dst
        # namespace also carries the agent's MQTT over lo): segments it sent, and segments it
        # received — ACKs, never aggregated (GRO is off on the veth).
        rx = d(l0, l1, "snmp_src", "Tcp", "OutSegs") + d(l0, l1, "snmp_src", "Tcp", "RetransSegs")
        tx = d(l0, l1, "snmp_src", "Tcp", "InSegs")
    else:
        rx, tx = d(l0, l1, "dst", "rx_packets"), d(l0, l1, "dst", "tx_packets")
    r["carried"] = rx + (tx if mon.sees == "both" else 0)
    r["monitor_sees"], r["monitor_unit"] = mon.sees, mon.unit
    datagrams = d(l0, l1, "snmp_dst", "Udp", "OutDatagrams")
    if mon.collector is not None and datagrams:
        r["export_datagrams"] = datagrams
        r["export_payload_bytes_udp"] = d(l0, l1, "lo", "tx_bytes") - datagrams * IP_UDP
    return r
