"""Pairing runs with their baselines, the table, and the targets."""
import math
import statistics


def med(vals):
    v = [x for x in vals if x is not None and x == x]
    return statistics.median(v) if v else None


def quartiles(vals):
    """(25th, 75th) percentile, or None with fewer than 4 values."""
    v = sorted(x for x in vals if x is not None and x == x)
    if len(v) < 4:
        return None
    q = statistics.quantiles(v, n=4)
    return (q[0], q[2])


def fmt(x, spec):
    return "-" if x is None else format(x, spec)


def usable(r):
    return r.get("clean") and "pps" in r


def pair(recs, base="none"):
    """Each run against its nearest clean baseline run in time (the earlier on ties): the rate
    ratio and the added CPU per packet, so slow drift cancels."""
    bases = [r for r in recs if r["config"] == base and usable(r)]
    for r in recs:
        if "pps" not in r or not bases:
            continue
        b = min(bases, key=lambda b: (abs(b["seq"] - r["seq"]), b["seq"] > r["seq"]))
        key = "pps" if r["traffic"] == "udp" else "gbps"
        if b[key]:
            r["ratio"] = r[key] / b[key]
        r["added_us_per_pkt"] = r["box_us_per_pkt"] - b["box_us_per_pkt"]
        r["base_seq"] = b["seq"]


def derived(r):
    """Per-run figures the table shows that come from the monitor's own report."""
    out = {}
    if r.get("mon_accounted") is not None and r.get("carried"):
        out["coverage"] = 100.0 * r["mon_accounted"] / r["carried"]
        out["missing"] = r["carried"] - r["mon_accounted"]
    bpf = r.get("bpf") or {}
    # edgeflow_clock runs once per drain (the agent's tick conversion), not per packet.
    ing = {k: v["ns_per_run"] for k, v in bpf.items() if "egr" not in k and "clock" not in k}
    eg = [v["ns_per_run"] for k, v in bpf.items() if "egr" in k]
    if "+" in r["config"]:
        # A pair (monitors.Pair): edgeflow's ingress program against the other's, on the
        # same packets in the same run.
        ef = [v for k, v in ing.items() if k.startswith("edgeflow")]
        other = [v for k, v in ing.items() if not k.startswith("edgeflow")]
        out["bpf_in"] = ef[0] if ef else None
        out["bpf_other"] = other[0] if other else None
        out["bpf_pair"] = ef[0] / other[0] if ef and other else None
    else:
        out["bpf_in"] = next(iter(ing.values()), None)
    out["bpf_eg"] = eg[0] if eg else None
    recs = r.get("export_records")
    payload = r.get("export_payload_bytes", r.get("export_payload_bytes_udp"))
    out["bytes_per_record"] = payload / recs if recs and payload is not None else None
    return out


COLUMNS = [
    # header, key, format, per-unit
    ("rate", "rate", ".1f"), ("ratio", "ratio", ".3f"), ("added us/pkt", "added", "+.3f"),
    ("mon us/pkt", "mon", ".3f"), ("bpf ns/run in", "bpf_in", ".0f"),
    ("bpf ns/run eg", "bpf_eg", ".0f"), ("RSS MiB", "rss", ".1f"), ("peak MiB", "hwm", ".1f"), ("BPF map MiB", "kmem", ".2f"),
    ("lost", "lost", ".0f"), ("coverage %", "coverage", ".2f"), ("missing", "missing", ".0f"),
    ("B/record", "bpr", ".1f"), ("foreign", "foreign", ".2f"),
]


def rows(recs, configs):
    """Medians over each configuration's clean runs."""
    out = []
    for cfg in configs:
        mine = [r for r in recs if r["config"] == cfg]
        ok = [r for r in mine if usable(r)]
        row = dict(config=cfg, n=len(ok), disturbed=sum(1 for r in mine if not r.get("clean") and "error" not in r),
                   errors=sum(1 for r in mine if "error" in r))
        if ok:
            dv = [derived(r) for r in ok]
            udp = ok[0]["traffic"] == "udp"
            row.update(
                rate=med([r["pps"] / 1e3 if udp else r["gbps"] for r in ok]),
                ratio=med([r.get("ratio") for r in ok]),
                added=med([r.get("added_us_per_pkt") for r in ok]),
                added_q=quartiles([r.get("added_us_per_pkt") for r in ok]),
                mon=med([r["mon_us_per_pkt"] for r in ok]),
                bpf_in=med([x["bpf_in"] for x in dv]), bpf_eg=med([x["bpf_eg"] for x in dv]),
                bpf_in_round={r["round"]: x["bpf_in"] for r, x in zip(ok, dv)
                              if x["bpf_in"] is not None},
                bpf_other=med([x.get("bpf_other") for x in dv]),
                bpf_pair=med([x.get("bpf_pair") for x in dv]),
                bpf_pair_q=quartiles([x.get("bpf_pair") for x in dv]),
                rss=med([(r.get("mon_rss_kib") or 0) / 1024 or None for r in ok]),
                hwm=med([(r.get("mon_hwm_kib") or 0) / 1024 or None for r in ok]),
                kmem=med([r["kmem_bytes"] / 2**20 if r.get("kmem_bytes") else None for r in ok]),
                lost=med([r.get("mon_lost") for r in ok]),
                coverage=med([x.get("coverage") for x in dv]),
                missing=med([x.get("missing") for x in dv]),
                bpr=med([x["bytes_per_record"] for x in dv]),
                foreign=max(r["foreign_cpus"] for r in ok),
                skb=med([r["rx_bytes"] / r["rx_skbs"] for r in ok if r.get("rx_skbs")]),
            )
        out.append(row)
    return out


def table(recs, configs, title):
    rs = rows(recs, configs)
    udp = recs and recs[0]["traffic"] == "udp"
    hdr = ["config", "n"] + [h if k != "rate" else ("rx kpps" if udp else "rx Gbit/s")
                             for h, k, _ in COLUMNS] + ([] if udp else ["skb B"])
    lines_ = []
    for row in rs:
        note = ", ".join(x for x in (f"+{row['disturbed']} disturbed" if row["disturbed"] else "",
                                     f"{row['errors']} failed" if row["errors"] else "") if x)
        cells = [row["config"], f"{row['n']}" + (f" ({note})" if note else "")]
        cells += [fmt(row.get(k), f) for _, k, f in COLUMNS]
        if not udp:
            cells.append(fmt(row.get("skb"), ".0f"))
        lines_.append(cells)
    widths = [max(len(str(x)) for x in col) for col in zip(hdr, *lines_)]
    show = lambda cells: "  ".join(str(x).ljust(w) if i == 0 else str(x).rjust(w)
                                   for i, (x, w) in enumerate(zip(cells, widths)))
    out = [title, show(hdr), show(["-" * w for w in widths])] + [show(c) for c in lines_]
    return "\n".join(out), rs


LEGEND = """\
n: clean runs (runs with foreign CPU load above the limit are re-queued with a fresh baseline).
rate, ratio: delivered UDP datagrams (kpps) or TCP Gbit/s, median; ratio = median of each run's
  rate / its nearest baseline run's.  Per packet = per wire packet (UDP datagram, TCP segment).
added: each run's exact CPU on the box (generator + receive softirq in its context, sink,
  monitor, ksoftirqd; cgroup cpuacct, not tick-sampled) per packet minus its baseline run's.
mon: the monitor's own processes per packet (user + kernel, its cgroup).
bpf ns/run: the monitor's BPF programs, run_time_ns / run_cnt with kernel.bpf_stats_enabled on
  for a separate window after the CPU window (in: XDP or TC ingress; eg: TC egress).
  A pair `A+B` runs both monitors at once on the same packets (A's program first): its row
  shows edgeflow's programs, its target line the ratio to the other's within each run; its
  other columns mix the two monitors.
RSS, peak: resident memory of the monitor's processes at the end of the traffic (VmRSS) and
  their high-water mark (VmHWM), less the BPF maps mapped into them (edgeflow's flow table:
  kernel memory, in the next column); BPF map: memlock of the maps the monitor holds.
lost: what the monitor reports it lost (tcpdump/pcap kernel drops, softflowd's libpcap drops,
  edgeflow's overflow record, the bare counter's map-full count).
coverage, missing: packets the monitor accounted for (captured, in exported flows, in its
  totals; sampled exports scaled by their rate) vs packets that crossed the veth while it ran,
  counted in its own unit (TCP: segments for edgeflow and the XDP/TC counters, skbs for pcap).
B/record: export payload bytes per flow record (edgeflow: postcard summaries; softflowd:
  NetFlow v9; pmacctd: sFlow datagrams per flow sample).
foreign: worst other-tenant CPU load during the kept runs, in CPUs."""


def ratio_ok(a, b, limit):
    return a is not None and b is not None and b > 0 and a <= limit * b


def targets(rs, tcp_saturation=False):
    """The issue's targets that this table can decide, with the figures behind each."""
    by = {r["config"]: r for r in rs if r["n"]}
    out = []

    def line(ok, text, tag=None):
        tag = tag or ('undecided' if ok is None else 'met' if ok else 'MISSED')
        out.append(f"  [{tag}] {text}")

    def spread(r):
        q = r.get("added_q")
        return f" (runs' middle half {q[0]:+.3f}..{q[1]:+.3f})" if q else ""

    for ef, bare in (("edgeflow-tc", "bare-tc"), ("edgeflow-tc-nortt", "bare-tc"),
                     ("edgeflow-xdp", "bare-xdpdrv"), ("edgeflow-xdp-nortt", "bare-xdpdrv")):
        e, b = by.get(ef), by.get(bare)
        if not e or not b:
            continue
        if e.get("bpf_in") and b.get("bpf_in"):
            # Paired within each round: the host's drift moves both programs' figures together
            # (from one round to the next a program's ns/run can change by half), and cancels
            # out of the ratio. Ratio of the medians only when fewer than 3 rounds pair up.
            er, br = e.get("bpf_in_round", {}), b.get("bpf_in_round", {})
            paired = [er[k] / br[k] for k in er if br.get(k)]
            of_medians = e["bpf_in"] / b["bpf_in"]
            if len(paired) >= 3:
                x, q = med(paired), quartiles(paired)
                how = (f"{x:.2f}x, median of {len(paired)} rounds' ratios"
                       + (f", middle half {q[0]:.2f}..{q[1]:.2f}" if q else "")
                       + f"; ratio of medians {of_medians:.2f}x")
            else:
                x, how = of_medians, f"{of_medians:.2f}x"
            line(x <= 1.3,
                 f"{ef} in-kernel {e['bpf_in']:.0f} ns/run <= 1.3 x {bare} {b['bpf_in']:.0f} "
                 f"({how})")
        if e.get("added") is not None and b.get("added") is not None:
            # A floor whose runs straddle zero cannot be multiplied: the ratio would be noise.
            q = b.get("added_q")
            ok = None if q and q[0] <= 0 <= q[1] else ratio_ok(e["added"], max(b["added"], 0.0), 1.3)
            line(ok, f"{ef} added {e['added']:+.3f} us/pkt{spread(e)} <= 1.3 x {bare} "
                     f"{b['added']:+.3f}{spread(b)}")
        for other in ("tcpdump-file", "softflowd"):
            o = by.get(other)
            if o and e.get("added") is not None and o.get("added") is not None:
                line(e["added"] < o["added"],
                     f"{ef} added {e['added']:+.3f} us/pkt{spread(e)} < {other} "
                     f"{o['added']:+.3f}{spread(o)}")
        if e.get("mon") is not None:
            line(e["mon"] <= 0.02, f"{ef} userspace {e['mon']:.4f} us/pkt near zero (<= 0.02)")
    def pair_ratio(name):
        r = by.get(name)
        return r.get("bpf_pair") if r else None

    for name, r in by.items():
        if "+" in name and r.get("bpf_pair") is not None:
            q = r.get("bpf_pair_q")
            first, second = name.split("+", 1)
            other = first if second.startswith("edgeflow") else second
            # With the other order in the table, one order alone decides nothing: whichever
            # program runs first pays for the packet's and the skb's lines.
            back = pair_ratio(f"{second}+{first}")
            reverse = back is not None
            line(r["bpf_pair"] <= 1.3,
                 f"{name}: edgeflow in-kernel {r['bpf_in']:.0f} ns/run <= 1.3 x {other} "
                 f"{r['bpf_other']:.0f} on the same packets ({r['bpf_pair']:.2f}x, median of "
                 f"{r['n']} runs' ratios" + (f", middle half {q[0]:.2f}..{q[1]:.2f}" if q else "")
                 + ")", tag="one order" if reverse else None)
            if first.startswith("edgeflow") and reverse:
                # Running first multiplies a program's cost by about the same factor whichever
                # it is, so it cancels out of the geometric mean of the two orders' ratios.
                both = math.sqrt(r["bpf_pair"] * back)
                line(both <= 1.3,
                     f"{first} in-kernel <= 1.3 x {second} on the same packets, both orders: "
                     f"{both:.2f}x (geometric mean of {r['bpf_pair']:.2f}x with edgeflow first "
                     f"and {back:.2f}x second)")
    if tcp_saturation:
        for name, r in by.items():
            if name.startswith("edgeflow") and r.get("ratio") is not None:
                line(r["ratio"] >= 0.9 and r.get("missing") == 0,
                     f"{name} bulk TCP {r['ratio']:.3f}x of none (>= 0.9), "
                     f"missing {fmt(r.get('missing'), '.0f')} packets (0)")
    return out
