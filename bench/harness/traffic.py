"""The bounded traffic every configuration gets, src namespace -> dst namespace.

udp: trafgen (netsniff-ng; PF_PACKET TX ring, qdisc bypass) sends IPv4/UDP frames of 60 bytes
     (64 on a wire with the FCS) whose source port cycles through `flows` values, fixed-rate
     (`-b Npps`, one sendto per packet) or as fast as it can; the sink is our udpsink.
tcp: iperf3 bulk, one connection, at saturation or paced (`-b`).
Every generator is bounded in time (timeout / iperf3 -t) and only ever addresses IP_DST.
"""
import json
import math
import os

from netns import IF_SRC, IP_DST, IP_SRC, nsx

UDP_PORT = 9000
TCP_PORT = 5201


class Traffic:
    def __init__(self, kind, rate, flows, payload, sink_poll_us, cpus, bins):
        self.kind, self.rate, self.flows, self.payload = kind, rate, flows, payload
        self.sink_poll_us, self.cpus, self.bins = sink_poll_us, cpus, bins

    def describe(self):
        what = (f"64-byte UDP, {self.flows} flows" if self.kind == "udp" else "bulk TCP (iperf3)")
        if not self.rate:
            return f"{what}, saturation"
        return f"{what}, {self.rate} {'pps' if self.kind == 'udp' else 'bit/s'}"

    def write_trafgen_cfg(self, topo, path):
        sp = f"dinc(10000, {10000 + self.flows - 1})" if self.flows > 1 else "10000"
        with open(path, "w") as f:
            f.write("{\n"
                    f"  eth(da={topo.mac_dst}, sa={topo.mac_src}),\n"
                    f"  ipv4(saddr={IP_SRC}, daddr={IP_DST}, ttl=64, df),\n"
                    f"  udp(sp={sp}, dp={UDP_PORT}),\n"
                    f"  fill(0x00, {self.payload})\n"
                    "}\n")

    def start(self, run, seconds):
        """Starts the sink, then the generator for `seconds`."""
        g, topo, work = run.groups, run.topo, run.work
        self.files = [open(os.path.join(work, n), "w") for n in ("sink.out", "sink.err", "gen.out")]
        sink_out, sink_err, gen_out = self.files
        if self.kind == "udp":
            self.sink = g.spawn("sink", nsx(topo.dst, self.bins["udpsink"], "--port", str(UDP_PORT),
                                            "--seconds", str(seconds + 4),
                                            "--poll-us", str(self.sink_poll_us)),
                                self.cpus["sink"], sink_out, sink_err)
            cfg = os.path.join(work, "trafgen.cfg")
            self.write_trafgen_cfg(topo, cfg)
            gen = ["timeout", "-s", "INT", f"{seconds:.1f}", "trafgen", "-o", IF_SRC, "-i", cfg,
                   "-P", "1", "--no-sock-mem", "-Q", "-C", "-q"]
            if self.rate:
                gen += ["-b", f"{self.rate}pps"]
        else:
            self.sink = g.spawn("sink", nsx(topo.dst, "iperf3", "-s", "-1", "-p", str(TCP_PORT),
                                            "-B", IP_DST),
                                self.cpus["sink"], sink_out, sink_err)
            gen = ["iperf3", "-c", IP_DST, "-p", str(TCP_PORT), "-B", IP_SRC, "-J",
                   "-t", str(math.ceil(seconds))]
            if self.rate:
                gen += ["-b", str(self.rate)]
        run.wait(0.3)
        self.gen = g.spawn("gen", nsx(topo.src, *gen), self.cpus["gen"], gen_out, sink_err)
        run.rec["gen_cmd"] = " ".join(gen)

    def finish(self, run, seconds):
        """Waits for the generator, stops the sink; returns what they reported."""
        g = run.groups
        try:
            self.gen.wait(timeout=seconds + 10)
        except Exception:
            pass
        g.stop("gen", wait=3)
        run.wait(0.3)
        if self.kind == "udp":
            g.stop("sink", wait=3)  # SIGTERM: it prints its count and exits
        else:
            g.stop("sink", wait=5)
        for f in self.files:
            f.close()
        res = {}
        try:
            if self.kind == "udp":
                with open(os.path.join(run.work, "sink.out")) as f:
                    res["sink_packets"] = json.loads(f.read().split("\n")[0])["packets"]
            else:
                with open(os.path.join(run.work, "gen.out")) as f:
                    j = json.load(f)
                res["iperf_sender_gbps"] = j["end"]["sum_sent"]["bits_per_second"] / 1e9
                res["iperf_retransmits"] = j["end"]["sum_sent"].get("retransmits")
        except (OSError, ValueError, KeyError, IndexError) as e:
            res["traffic_note"] = f"no generator/sink report: {e}"
        return res
