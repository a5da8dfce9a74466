"""The configurations: what runs on the receiving veth end (efbd, in the dst namespace).

Each monitor is started before the traffic and stopped after it, and reports what it itself
counted (packets accounted, what it lost) and what it exported. `sees` says which directions
it observes ('rx': ingress hooks; 'both': pcap taps and edgeflow's ingress + egress), `unit`
what it counts a packet as ('wire': segments, as a GRO/GSO aggregate's gso_segs; 'skb': one
per kernel packet, so a 64 KB TCP aggregate is one) — so coverage compares like with like.
"""
import json
import os
import re
import signal
import subprocess
import time

from netns import IF_DST, nsx

NF_PORT, SF_PORT, MQTT_PORT = 9995, 6343, 1883


def wait_for(path, pattern, timeout):
    rx = re.compile(pattern)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(path, errors="replace") as f:
                if rx.search(f.read()):
                    return True
        except FileNotFoundError:
            pass
        time.sleep(0.05)
    return False


def text(path):
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except FileNotFoundError:
        return ""


class Monitor:
    """No monitor: the baseline."""
    sees, unit, bpf, collector = "both", "skb", False, None

    def __init__(self, name):
        self.name = name

    def describe(self):
        return "nothing (baseline)"

    def start(self, run):
        pass

    def before_stop(self, run):
        return {}

    def stop(self, run):
        return {}


class Process(Monitor):
    """A monitor process in the dst namespace, in the 'mon' cgroup, on the monitor CPU."""
    ready_re, ready_timeout, ready_file = None, 10.0, None
    # Whether stopping it also clears the 'mon' group (not while a pair's other part runs).
    clears_group = True

    def argv(self, run):
        raise NotImplementedError

    def start(self, run):
        self.log = os.path.join(run.work, f"{self.name}.log")
        self.out = open(self.log, "w")
        argv = nsx(run.topo.dst, *self.argv(run))
        run.rec["mon_cmd"] = " ".join(argv[4:])
        self.proc = run.groups.spawn("mon", argv, run.cpus["mon"], self.out)
        ready = self.ready_file or self.log
        if self.ready_re and not wait_for(ready, self.ready_re, self.ready_timeout):
            raise RuntimeError(f"{self.name} not ready: {text(self.log)[-1500:]}")
        run.wait(0.3)
        if self.proc.poll() is not None:
            raise RuntimeError(f"{self.name} exited early: {text(self.log)[-1500:]}")

    def signal_stop(self, run, sig=signal.SIGINT, timeout=10):
        try:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=timeout)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
        if self.clears_group:
            run.groups.stop("mon", wait=3)
        self.out.close()
        return text(self.log)


class Bare(Process):
    """The reference floor: a 5-tuple and one hash-map update per packet (bench/ebpf/src/counter.rs)."""
    sees, bpf, ready_re = "rx", True, r"attached"

    def __init__(self, name, hook):
        super().__init__(name)
        self.hook = hook
        # Generic XDP runs once per skb (after GRO); native XDP on veth sees segments, and the
        # TC program counts an aggregate's gso_segs.
        self.unit = "skb" if hook == "xdpgeneric" else "wire"

    def describe(self):
        where = {"xdpdrv": "native XDP", "xdpgeneric": "generic (SKB) XDP", "tc": "TC ingress"}
        return f"bare counter, {where[self.hook]}: 5-tuple + one hash-map update per packet"

    def argv(self, run):
        return [run.bins["bare-counter"], "--iface", IF_DST, "--hook", self.hook]

    def stop(self, run):
        log = self.signal_stop(run)
        for line in log.splitlines():
            if line.startswith("{"):
                j = json.loads(line)
                return dict(mon_accounted=j["packets"], mon_lost=j["full"], mon_flows=j["flows"])
        return dict(mon_note="no report")


class Mosquitto:
    """The broker edgeflow publishes to, on the dst namespace's 127.0.0.1, and a subscriber
    that keeps every summary (hex, one per line) for `edgeflow decode`."""

    def start(self, run):
        conf = os.path.join(run.work, "mosquitto.conf")
        with open(conf, "w") as f:
            f.write(f"listener {MQTT_PORT} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                    "log_dest stderr\n")
        self.log = open(os.path.join(run.work, "mosquitto.log"), "w")
        self.summaries = os.path.join(run.work, "summaries.hex")
        self.sub_out = open(self.summaries, "w")
        g, cpu, ns = run.groups, run.cpus["mon"], run.topo.dst
        self.broker = g.spawn("coll", nsx(ns, "mosquitto", "-c", conf), cpu, self.log)
        if not wait_for(self.log.name, r"running", 5):
            raise RuntimeError(f"mosquitto not ready: {text(self.log.name)}")
        self.sub = g.spawn("coll", nsx(ns, "mosquitto_sub", "-h", "127.0.0.1", "-p", str(MQTT_PORT),
                                       "-q", "1", "-t", "edgeflow/+/+/+/flows", "-F", "%x"),
                           cpu, self.sub_out, self.log)
        run.wait(0.3)

    def stop(self, run):
        run.wait(0.5)  # the last PUBACKed summary reaches the subscriber
        run.groups.stop("coll", wait=3)
        self.sub_out.close()
        self.log.close()
        return {}


class Edgeflow(Process):
    """The agent, `edgeflow run`, publishing to the local broker every export interval."""
    ready_re, ready_timeout, bpf, unit = r"edgeflow: ready", 60.0, True, "wire"

    def __init__(self, name, attach, rtt=True, sample=1, owner=True):
        super().__init__(name)
        self.attach, self.rtt, self.sample, self.owner = attach, rtt, sample, owner
        # `<config>@alt` runs another build of the agent (--alt-edgeflow): an A/B of two
        # builds on real traffic, interleaved like any two configurations.
        self.bin = "edgeflow-alt" if name.endswith(ALT) else "edgeflow"

    def describe(self):
        return (f"edgeflow run --attach {self.attach}{'' if self.rtt else ' --no-rtt'}"
                f"{'' if self.owner else ' --no-owner'}"
                f"{f' --sample {self.sample}' if self.sample > 1 else ''} -> mosquitto on 127.0.0.1"
                f"{' (the --alt-edgeflow build)' if self.bin == 'edgeflow-alt' else ''}")

    def start(self, run):
        self.collector = Mosquitto()
        self.collector.start(run)
        super().start(run)
        att = re.search(r"edgeflow: attached (.*)", text(self.log))
        run.rec["edgeflow_attach"] = att.group(1) if att else None

    def argv(self, run):
        a = [run.bins[self.bin], "run", "--iface", IF_DST, "--device", "bench", "--site", "bench",
             "--broker", f"mqtt://127.0.0.1:{MQTT_PORT}", "--interval", str(run.args.interval),
             "--attach", self.attach, "--max-flows", str(run.args.max_flows)]
        if not self.rtt:
            a.append("--no-rtt")
        if not self.owner:
            a.append("--no-owner")
        if self.sample > 1:
            a += ["--sample", str(self.sample)]
        return a

    def stop(self, run):
        # SIGINT: a last window is drained and published, acknowledged, then it detaches.
        self.signal_stop(run, signal.SIGINT, timeout=15)
        self.collector.stop(run)
        return self.decode(run)

    def decode(self, run):
        with open(self.collector.summaries) as f:
            lines = [l.strip() for l in f if l.strip()]
        if not lines:
            return dict(mon_note="no summaries received")
        r = subprocess.run([run.bins[self.bin], "decode", self.collector.summaries],
                           capture_output=True, text=True, timeout=60)
        msgs = [json.loads(l) for l in r.stdout.splitlines() if l.startswith("{")]
        head = [m for m in msgs if m.get("part", 0) == 0]
        sample = max(1, head[0].get("sample_every", 1)) if head else 1
        return dict(
            mon_accounted=sum(m["totals"]["packets"] for m in head) * sample,
            mon_lost=sum(m["overflow"]["packets"] for m in head),
            export_messages=len(lines),
            export_payload_bytes=sum(len(l) // 2 for l in lines),
            export_records=sum(len(m.get("flows", [])) for m in msgs),
            agent_rss_kib=max((m["health"].get("rss_kib", 0) for m in head), default=None),
            active_flows_max=max((m["health"].get("active_flows", 0) for m in head), default=None),
            # Packets the programs saw but keyed to no flow (non-IP, fragments, bad headers).
            agent_seen=sum(m["health"]["packets_seen"] for m in head) * sample,
            agent_unkeyed=sum(m["health"][k] for m in head
                              for k in ("parse_errors", "fragments", "non_ip")) * sample,
        )


class Tcpdump(Process):
    ready_re = r"listening on"

    def describe(self):
        return f"tcpdump -i {IF_DST} -n -w FILE (scratch, deleted after the run)"

    def argv(self, run):
        self.pcap = os.path.join(run.work, "cap.pcap")
        return ["tcpdump", "-i", IF_DST, "-n", "-w", self.pcap]

    def stop(self, run):
        log = self.signal_stop(run)
        g = lambda p: int(m.group(1)) if (m := re.search(p, log)) else None
        res = dict(mon_accounted=g(r"(\d+) packets? captured"),
                   mon_lost=g(r"(\d+) packets? dropped by kernel"))
        if os.path.exists(self.pcap):
            os.unlink(self.pcap)
        return res


class Collector:
    """nfcapd (NetFlow) or sfcapd (sFlow) on the dst namespace's 127.0.0.1: what the agent
    really exported, counted by nfdump."""

    def __init__(self, binary, port):
        self.binary, self.port = binary, port

    def start(self, run):
        self.dir = os.path.join(run.work, self.binary)
        os.makedirs(self.dir, exist_ok=True)
        self.log = open(os.path.join(run.work, f"{self.binary}.log"), "w")
        run.groups.spawn("coll", nsx(run.topo.dst, self.binary, "-b", "127.0.0.1", "-p",
                                     str(self.port), "-w", self.dir, "-t", "3600"),
                         run.cpus["mon"], self.log)
        run.wait(0.5)

    def stop(self, run):
        run.wait(0.3)
        run.groups.stop("coll", wait=5)
        self.log.close()
        out = subprocess.run(["nfdump", "-R", self.dir, "-I"], capture_output=True, text=True,
                             timeout=60).stdout
        g = lambda k: int(m.group(1)) if (m := re.search(rf"^{k}: (\d+)", out, re.M)) else None
        return dict(export_records=g("Flows"), mon_accounted=g("Packets"))


class Softflowd(Process):
    ready_re = r"starting data collection|Entering main"

    def __init__(self, name):
        super().__init__(name)
        self.collector = Collector("nfcapd", NF_PORT)

    def describe(self):
        return "softflowd -v 9 (NetFlow v9), maxlife = export interval -> nfcapd on 127.0.0.1"

    def argv(self, run):
        self.ctl = os.path.join(run.work, "softflowd.ctl")
        return ["softflowd", "-d", "-i", IF_DST, "-n", f"127.0.0.1:{NF_PORT}", "-v", "9",
                "-m", "65536", "-c", self.ctl, "-p", os.path.join(run.work, "softflowd.pid"),
                "-t", f"maxlife={int(run.args.interval)}"]

    def start(self, run):
        self.collector.start(run)
        super().start(run)

    def before_stop(self, run):
        out = subprocess.run(["softflowctl", "-c", self.ctl, "statistics"], capture_output=True,
                             text=True, timeout=10).stdout
        g = lambda p: int(m.group(1)) if (m := re.search(p, out)) else None
        return dict(mon_lost=g(r"Packets dropped by libpcap: (\d+)"))

    def stop(self, run):
        # SIGTERM loses softflowd 1.1's flows and SIGINT waits for a packet: ask it to
        # expire and export everything through its control socket.
        subprocess.run(["softflowctl", "-c", self.ctl, "shutdown"], capture_output=True, timeout=10)
        self.signal_stop(run, signal.SIGTERM, timeout=5)
        return self.collector.stop(run)


class PmacctdSflow(Process):
    """pmacctd's sFlow v5 probe (sfprobe), 1-in-100 as an sFlow agent is deployed; hsflowd,
    the usual host sFlow agent, is not packaged in Debian."""
    ready_re = r"Exporting flows to|link type is|sfprobe"

    def __init__(self, name, sampling=100):
        super().__init__(name)
        self.sampling = sampling
        self.collector = Collector("sfcapd", SF_PORT)

    def describe(self):
        return f"pmacctd, sfprobe plugin (sFlow v5, 1-in-{self.sampling}) -> sfcapd on 127.0.0.1"

    def argv(self, run):
        conf = os.path.join(run.work, "pmacctd.conf")
        self.ready_file = os.path.join(run.work, "pmacctd-own.log")
        with open(conf, "w") as f:
            f.write("\n".join([
                "daemonize: false", f"pcap_interface: {IF_DST}", "plugins: sfprobe",
                f"sfprobe_receiver: 127.0.0.1:{SF_PORT}", f"sampling_rate: {self.sampling}",
                f"logfile: {self.ready_file}", ""]))
        return ["pmacctd", "-f", conf]

    def start(self, run):
        self.collector.start(run)
        super().start(run)

    def before_stop(self, run):
        os.kill(self.proc.pid, signal.SIGUSR1)  # the core logs its pcap counters
        wait_for(self.ready_file, r"dropped_packets=\d+", 3)
        m = re.findall(r"received_packets=(\d+) dropped_packets=(\d+)", text(self.ready_file))
        return dict(mon_lost=int(m[-1][1])) if m else {}

    def stop(self, run):
        self.signal_stop(run, signal.SIGINT)
        return self.collector.stop(run)


class Pair(Monitor):
    """Two monitors on the same interface at once, `first+second`, attached in that order
    (TC runs them in that order: both return TC_ACT_UNSPEC, so neither ends the chain). Their
    programs then run on the same packets at the same moments, and the ratio of their in-kernel
    run times is paired within each run: the host's pace, which moves a program's ns/run by
    half from one run to the next, is the same for both. Only the in-kernel figures are meant:
    coverage comes from the second part's report, RSS and map memory count both."""
    bpf = True

    def __init__(self, name, first, second):
        super().__init__(name)
        self.parts = [make(first), make(second)]
        for p in self.parts:
            if not isinstance(p, Process) or not p.bpf:
                raise SystemExit(f"{name}: a pair is of two BPF monitors")
        self.sees, self.unit = self.parts[1].sees, self.parts[1].unit

    def describe(self):
        return " and ".join(p.describe() for p in self.parts) + ", on the same packets"

    def start(self, run):
        for p in self.parts:
            p.start(run)
        self.collector = self.parts[1].collector

    def before_stop(self, run):
        return self.parts[1].before_stop(run)

    def stop(self, run):
        # The first part's report is not used: stop it without clearing the group, then the
        # second, which clears it.
        self.parts[0].clears_group = False
        self.parts[0].stop(run)
        return self.parts[1].stop(run)


def registry():
    r = {
        "none": lambda n: Monitor(n),
        "bare-xdpdrv": lambda n: Bare(n, "xdpdrv"),
        "bare-xdpgeneric": lambda n: Bare(n, "xdpgeneric"),
        "bare-tc": lambda n: Bare(n, "tc"),
        "tcpdump-file": lambda n: Tcpdump(n),
        "softflowd": lambda n: Softflowd(n),
        "pmacctd-sflow": lambda n: PmacctdSflow(n),
    }
    for attach in ("tc", "xdp", "auto"):
        for rtt in (True, False):
            for sample in (1, 100):
                name = f"edgeflow-{attach}{'' if rtt else '-nortt'}{'-s100' if sample > 1 else ''}"
                r[name] = (lambda a, rt, s: lambda n: Edgeflow(n, a, rt, s))(attach, rtt, sample)
    # Owners (docs/owners.md) off: what attributing flows to processes and devices costs.
    r["edgeflow-tc-noowner"] = lambda n: Edgeflow(n, "tc", owner=False)
    return r


REGISTRY = registry()
# auto resolves to tc on a veth (the agent says so in each run's record): not run twice.
DEFAULT = (["none", "bare-xdpdrv", "bare-xdpgeneric", "bare-tc"]
           + [f"edgeflow-{a}{r}{s}" for a in ("tc", "xdp") for r in ("", "-nortt") for s in ("", "-s100")]
           + ["tcpdump-file", "softflowd", "pmacctd-sflow"])


ALT = "@alt"


def make(name):
    if "+" in name:
        first, second = name.split("+", 1)
        return Pair(name, first, second)
    base = name[:-len(ALT)] if name.endswith(ALT) and name.startswith("edgeflow") else name
    if base not in REGISTRY:
        raise SystemExit(f"unknown config {name!r}; known: {', '.join(REGISTRY)} "
                         f"(and edgeflow-*{ALT} with --alt-edgeflow)")
    return REGISTRY[base](name)
