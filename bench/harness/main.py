#!/usr/bin/env python3
"""edgeflow's benchmark: what a flow monitor costs per packet, and what it misses.

Identical bounded traffic crosses a veth pair between two namespaces; each configuration
(no monitor, bare counters per hook, edgeflow in each mode, tcpdump, softflowd, pmacctd's
sFlow probe) watches the receiving end. Configurations are interleaved with baseline runs
and repeated; runs disturbed by other tenants' CPU load are re-queued. See docs/bench.md.
Run through bench/bench (it installs, builds and passes the binaries).
"""
import argparse
import json
import os
import signal
import subprocess
import sys
import time

import counters
import monitors
import report
from cgroups import Groups
from netns import Topology
from run import Interrupted, Run
from traffic import Traffic

BENCH = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def schedule(configs, rounds, base_every):
    """Each round runs every configuration once, rotated from round to round, with a baseline
    before every `base_every` of them (1: strict A B A C ...)."""
    base, others = configs[0], configs[1:]
    out = []
    for r in range(rounds):
        k = r % len(others) if others else 0
        rot = others[k:] + others[:k]
        if not rot:
            out.append((r, base))
        for i in range(0, len(rot), base_every):
            out += [(r, base)] + [(r, c) for c in rot[i:i + base_every]]
    return out


class Context:
    def __init__(self, args, topo, groups, traffic, bins):
        self.args, self.topo, self.groups, self.traffic, self.bins = args, topo, groups, traffic, bins
        self.cpus = dict(gen=args.gen_cpu, sink=args.sink_cpu, mon=args.mon_cpu)
        self.workdir = args.workdir
        self.ksoftirqd = counters.ksoftirqd_pids()
        self.stopping = False
        # Leave the kernel's run-time stats as found; if someone has them on, they stay on
        # (and the CPU window then includes their small cost: recorded in meta.json).
        self.bpf_stats_owned = counters.read(counters.STATS_SYSCTL).strip() == "0"

    def wait_quiet(self):
        """Waits (bounded) until the machine is nearly idle; returns (waited s, busy share)."""
        t0 = time.monotonic()
        while True:
            a, ta = counters.root_usage_ns(), time.monotonic()
            time.sleep(0.5)
            busy = (counters.root_usage_ns() - a) / 1e9 / ((time.monotonic() - ta) * os.cpu_count())
            if busy <= self.args.quiet_busy or time.monotonic() - t0 >= self.args.quiet_wait:
                return round(time.monotonic() - t0, 1), round(busy, 3)


def versions():
    cmds = dict(kernel="uname -r", cpu="grep -m1 'model name' /proc/cpuinfo | cut -d: -f2",
                cpus="nproc", mem="grep MemTotal /proc/meminfo",
                tcpdump="tcpdump --version 2>&1 | head -1", trafgen="trafgen -v 2>&1 | head -1",
                iperf3="iperf3 -v 2>&1 | head -1",
                softflowd="dpkg-query -W -f '${Version}' softflowd",
                pmacct="dpkg-query -W -f '${Version}' pmacct",
                mosquitto="dpkg-query -W -f '${Version}' mosquitto",
                edgeflow="git -C %s rev-parse --short HEAD" % BENCH)
    return {k: subprocess.run(v, shell=True, capture_output=True, text=True).stdout.strip()
            for k, v in cmds.items()}


def measure(args, bins):
    configs = []
    for c in args.configs or [",".join(monitors.DEFAULT)]:
        configs += [x for x in c.split(",") if x]
    for c in configs:
        monitors.make(c)
    if configs[0] != "none":
        configs.insert(0, "none")
    traffic = Traffic(args.traffic, args.rate, args.flows, args.payload, args.sink_poll_us,
                      dict(gen=args.gen_cpu, sink=args.sink_cpu), bins)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    label = f"{args.traffic}-{'r' + str(args.rate) if args.rate else 'max'}"
    out = args.out or os.path.join(BENCH, "results", f"{stamp}-{label}")
    os.makedirs(out, exist_ok=True)
    sched = schedule(configs, args.rounds, args.base_every)
    retries = len(sched) // 3 if args.retries is None else args.retries
    per_run = args.warmup + args.duration + args.stats_window + 6
    log(f"{len(sched)} runs ({args.rounds} rounds x {len(configs)} configs), about "
        f"{len(sched) * per_run / 60:.0f} min on a quiet machine; up to {retries} re-runs; {out}")
    topo, groups = Topology(), Groups()
    ctx = Context(args, topo, groups, traffic, bins)
    meta = dict(args=vars(args), configs={c: monitors.make(c).describe() for c in configs},
                traffic=traffic.describe(), versions=versions(), started=stamp,
                bpf_stats_preexisting=not ctx.bpf_stats_owned)
    with open(os.path.join(out, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1)

    def on_signal(sig, _frame):
        ctx.stopping = True
        raise Interrupted()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    recs, interrupted = [], False
    t0 = time.monotonic()
    try:
        groups.setup()
        topo.up()
        queue = list(sched)
        with open(os.path.join(out, "runs.jsonl"), "w") as jf:
            while queue:
                if args.time_budget and time.monotonic() - t0 > args.time_budget * 60:
                    log("time budget spent: no more quiet waits or re-runs")
                    retries, args.quiet_wait, args.time_budget = 0, 0, 0
                rnd, name = queue.pop(0)
                rec = Run(len(recs), rnd, name, ctx).execute()
                recs.append(rec)
                jf.write(json.dumps(rec) + "\n")
                jf.flush()
                progress(rec, len(recs), len(sched))
                if not rec["clean"] and "error" not in rec and retries > 0:
                    extra = [(rnd, name)] if name == configs[0] else [(rnd, configs[0]), (rnd, name)]
                    retries -= len(extra)
                    queue += extra
                    log(f"  disturbed ({rec['foreign_cpus']:.2f} CPU of foreign load): re-queued")
    except Interrupted:
        interrupted = True
        log("interrupted: cleaning up")
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if ctx.bpf_stats_owned:
            counters.bpf_stats(False)
        topo.down()
        groups.teardown()
        signal.signal(signal.SIGINT, signal.SIG_DFL)
    report.pair(recs, configs[0])
    with open(os.path.join(out, "runs.jsonl"), "w") as jf:
        for r in recs:
            jf.write(json.dumps(r) + "\n")
    text = render(recs, configs, args, traffic.describe())
    with open(os.path.join(out, "table.txt"), "w") as f:
        f.write(text + "\n")
    print(text)
    print(f"\nresults: {out}")
    return (130 if interrupted else 0), recs, out


def render(recs, configs, args, what):
    title = (f"traffic: {what}; window {args.duration:g} s after {args.warmup:g} s warm-up; "
             f"runs with > {args.max_foreign:g} CPU of foreign load not used; "
             f"rounds {args.rounds}; baseline every {args.base_every}; CPUs gen={args.gen_cpu} "
             f"sink={args.sink_cpu} mon={args.mon_cpu}; export interval {args.interval:g} s")
    tab, rs = report.table(recs, configs, title)
    tg = report.targets(rs, tcp_saturation=args.traffic == "tcp" and not args.rate)
    return "\n".join([tab, "", report.LEGEND] + (["", "targets:"] + tg if tg else []))


def progress(rec, i, total):
    if "error" in rec:
        log(f"[{i}] {rec['config']}: FAILED: {rec['error'][:400]}")
        return
    rate = f"{rec['pps'] / 1e3:7.1f} kpps" if rec["traffic"] == "udp" else f"{rec['gbps']:6.2f} Gbit/s"
    log(f"[{i}/{total}] r{rec['round']} {rec['config']:22s} {rate}  box {rec['box_us_per_pkt']:.3f} "
        f"us/pkt  mon {rec['mon_us_per_pkt']:.4f}  foreign {rec['foreign_cpus']:.2f} CPU"
        + (f"  (waited {rec['quiet_wait_s']:.0f}s for quiet)" if rec["quiet_wait_s"] > 2 else ""))


def table_only(path, max_foreign):
    """Re-prints a run's table; runs are judged clean again against --max-foreign."""
    recs = [json.loads(l) for l in open(path)]
    for r in recs:
        r["clean"] = "error" not in r and r.get("foreign_cpus", 9) <= max_foreign
    configs = list(dict.fromkeys(r["config"] for r in sorted(recs, key=lambda r: r["seq"])))
    configs = ["none"] + [c for c in configs if c != "none"]
    report.pair(recs)
    meta = json.load(open(os.path.join(os.path.dirname(path), "meta.json")))
    margs = argparse.Namespace(**meta["args"])
    margs.max_foreign = max_foreign
    print(render(recs, configs, margs, meta["traffic"]))
    return 0


def main():
    ap = argparse.ArgumentParser(prog="bench/bench", description=__doc__.split("\n")[0])
    ap.add_argument("-t", "--traffic", choices=("udp", "tcp"), default="udp")
    ap.add_argument("-r", "--rate", type=int, default=0,
                    help="offered load: pps (udp) or bit/s (tcp); 0 = saturation (default)")
    ap.add_argument("-n", "--rounds", type=int, default=3)
    ap.add_argument("-c", "--configs", action="append", help="comma list (default: all of --list)")
    ap.add_argument("-d", "--duration", type=float, default=5.0, help="CPU window, s")
    ap.add_argument("-w", "--warmup", type=float, default=1.0)
    ap.add_argument("--stats-window", type=float, default=1.0,
                    help="s of BPF run-time stats after the CPU window (BPF configs)")
    ap.add_argument("-f", "--flows", type=int, default=1024, help="udp: distinct 5-tuples")
    ap.add_argument("--payload", type=int, default=18, help="udp payload (18: 64-byte frames)")
    ap.add_argument("--interval", type=float, default=2.0,
                    help="export interval, s: edgeflow's window, softflowd's maxlife (default 2)")
    ap.add_argument("--max-flows", type=int, default=16384, help="edgeflow's table size")
    ap.add_argument("--base-every", type=int, default=4)
    ap.add_argument("--sink-poll-us", type=int, default=500)
    ap.add_argument("--gen-cpu", default="0")
    ap.add_argument("--sink-cpu", default="1")
    ap.add_argument("--mon-cpu", default="1")
    ap.add_argument("--max-foreign", type=float, default=0.10,
                    help="CPUs of other tenants' load above which a run is re-queued")
    ap.add_argument("--quiet-busy", type=float, default=0.10,
                    help="share of all CPUs busy below which a run may start")
    ap.add_argument("--quiet-wait", type=float, default=30.0, help="max s to wait for quiet")
    ap.add_argument("--retries", type=int, default=None, help="max re-runs (default: a third)")
    ap.add_argument("--time-budget", type=float, default=0, help="minutes; then no waits/re-runs")
    ap.add_argument("--workdir", default="/tmp/edgeflow-bench")
    ap.add_argument("--keep-work", action="store_true")
    ap.add_argument("-o", "--out")
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--table-only", metavar="RUNS_JSONL")
    ap.add_argument("--alt-edgeflow", metavar="BIN",
                    help="another build of the agent, run by configs named edgeflow-...@alt")
    ap.add_argument("--bins", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.list:
        for name in monitors.REGISTRY:
            star = "*" if name in monitors.DEFAULT else " "
            print(f"{name:24s} {star} {monitors.make(name).describe()}")
        print("(* = in the default set; edgeflow-auto-* resolve to tc on a veth)")
        return 0
    if args.table_only:
        return table_only(args.table_only, args.max_foreign)
    if os.geteuid() != 0:
        raise SystemExit("bench: run as root (namespaces, BPF, cgroups)")
    bins = json.loads(args.bins)
    if args.alt_edgeflow:
        bins["edgeflow-alt"] = os.path.abspath(args.alt_edgeflow)
    elif any(n.endswith(monitors.ALT) for c in args.configs or [] for n in c.split(",")):
        raise SystemExit("bench: configs named ...@alt need --alt-edgeflow BIN")
    os.makedirs(args.workdir, exist_ok=True)
    return measure(args, bins)[0]


if __name__ == "__main__":
    sys.exit(main())
