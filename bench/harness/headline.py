"""`bench/bench headline OLD`: the headline figures of this build beside another build's,
measured in one sitting, interleaved (docs/bench.md, "Headline"). bench/headline.sh builds
both and calls this with their binaries.

- In-kernel ns per packet: `prog-cost --against OLD.o` (both objects in the same trials).
- Bulk TCP ratio: the harness with both builds each paired with the bare TC counter on the
  same aggregates, both orders (`bare-tc+edgeflow-tc`, `edgeflow-tc+bare-tc`, and the same
  `@alt` for the other build), in the same rounds.
- 64k drain, RSS (16k flows) and bytes per flow record: each build's footprint run, the two
  builds alternating run by run, first one then the other, for `--rounds` rounds.

This host's pace drifts by ~20 % from minute to minute: compare the two columns of one run,
never figures of different runs.
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))

# Rows of the footprint table (bench/src/bin/footprint.rs) and the run they come from.
ROWS = [
    ("drain of 64k flows, median (ms)", 64000, r"^\| drain of \d+ flows \(table read \+ deltas\)[^|]*\| ([\d.]+) /"),
    ("drain of 16k flows, median (ms)", 16000, r"^\| drain of \d+ flows \(table read \+ deltas\)[^|]*\| ([\d.]+) /"),
    ("agent RSS, 16k flows, without the mapped table (MiB)", 16000,
     r"^\| agent RSS at the end, without the mapped flow table[^|]*\| ([\d.]+) MiB"),
    ("agent RSS, 64k flows, without the mapped table (MiB)", 64000,
     r"^\| agent RSS at the end, without the mapped flow table[^|]*\| ([\d.]+) MiB"),
    ("payload bytes per flow record, 16k flows", 16000, r"^\| payload bytes per flow record[^|]*\| ([\d.]+) \|"),
]
# FLOWS WINDOWS TABLE, as `bench/bench footprint` runs them.
FOOTPRINT = {16000: ["16000", "5", "16384"], 64000: ["64000", "5", "65536"]}


def run(cmd, capture=False):
    print("+", " ".join(cmd), flush=True)
    if not capture:
        subprocess.run(cmd, check=True)
        return ""
    out = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=True).stdout
    print(out, flush=True)
    return out


def footprint(builds, rounds):
    # values[label][flows] = list of tables' text
    values = {b: {f: [] for f in FOOTPRINT} for b in builds}
    for r in range(rounds):
        order = list(builds) if r % 2 == 0 else list(reversed(builds))
        for flows in FOOTPRINT:
            for b in order:
                print(f"## footprint, {flows} flows, round {r + 1}: {b}", flush=True)
                values[b][flows].append(run([builds[b]["footprint"], builds[b]["edgeflow"]]
                                            + FOOTPRINT[flows], capture=True))
    table = []
    for name, flows, pattern in ROWS:
        cells = []
        for b in builds:
            got = [float(m.group(1)) for t in values[b][flows]
                   for m in [re.search(pattern, t, re.M)] if m]
            cells.append(statistics.median(got) if got else None)
        table.append((name, cells))
    return table


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--new", required=True, help="JSON: this build's binaries")
    ap.add_argument("--old", required=True, help="JSON: the other build's binaries and object")
    ap.add_argument("--old-name", default="old")
    ap.add_argument("-n", "--rounds", type=int, default=3)
    ap.add_argument("--max-foreign", help="passed to the harness (CPUs of other load a TCP run may see)")
    ap.add_argument("--skip", action="append", default=[], choices=("prog-cost", "tcp", "footprint"))
    args = ap.parse_args()
    new, old = json.loads(args.new), json.loads(args.old)
    builds = {"this build": new, args.old_name: old}

    if "prog-cost" not in args.skip:
        print("# In-kernel ns per packet on crafted frames (`against-1` is the other build)")
        run([new["prog-cost"], "--against", old["object"]])

    if "tcp" not in args.skip:
        print("# Bulk TCP: each build's TC program and the bare TC counter on the same aggregates")
        bins = {k: new[k] for k in ("edgeflow", "bare-counter", "udpsink")}
        configs = "none,bare-tc+edgeflow-tc,edgeflow-tc+bare-tc,bare-tc+edgeflow-tc@alt,edgeflow-tc@alt+bare-tc"
        run([sys.executable, os.path.join(HERE, "main.py"), "--bins", json.dumps(bins),
             "--alt-edgeflow", old["edgeflow"], "-t", "tcp", "-n", str(args.rounds), "-d", "4",
             "-c", configs] + (["--max-foreign", args.max_foreign] if args.max_foreign else []))

    if "footprint" not in args.skip:
        print(f"# Footprint, {args.rounds} rounds, the builds alternating")
        table = footprint(builds, args.rounds)
        names = list(builds)
        print(f"| measure (median of {args.rounds}) | {names[0]} | {names[1]} | ratio |")
        print("| --- | --- | --- | --- |")
        for name, (a, b) in table:
            ratio = f"{a / b:.2f}" if a is not None and b else "-"
            fmt = lambda v: "-" if v is None else f"{v:.1f}"
            print(f"| {name} | {fmt(a)} | {fmt(b)} | {ratio} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
