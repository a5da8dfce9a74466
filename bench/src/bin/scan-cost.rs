//! In-kernel cost per packet under a flood (issue 24): a spoofed-source SYN scan of many
//! times the table's size, with a few real conversations (UDP and TCP, both ways) among it,
//! run through the bare counter and edgeflow's programs with BPF_PROG_TEST_RUN, frame by
//! frame, each program on the same frames in the same trial (order rotated). Both tables are
//! sized for the same flows (`--max-flows`: the bare counter's hash map holds that many,
//! edgeflow's table twice as many slots), so both are full for most of the run: the bare
//! counter fails an insert per scan packet, edgeflow reclaims a one-packet flow's slot
//! (`shared::table`, pressure) or counts the packet as overflow.
//!
//! Prints ns per packet for each (the trials after both tables filled; medians of trials,
//! the ratio a median of per-trial ratios), then checks what edgeflow counted: every real
//! conversation's packets and bytes per direction exact, and `parsed = flows + overflow +
//! reclaimed`. A run with a real conversation miscounted exits 1.
//!
//! Each run is one frame (repeat 1), so each figure includes the kernel's clock reads around
//! the run (~20 ns, the same for both): the ratio is a lower bound of the programs' own.
//!
//! scan-cost [--max-flows N] [--frames N] [--chunk N] [--hook xdp|tc]

use anyhow::{bail, Context};
use argh::FromArgs;
use aya::{
    programs::{SchedClassifier, TestRun, TestRunOptions, Xdp},
    Ebpf, EbpfLoader,
};
use edge::probe::{
    bpf::{self, LoadOptions, RttOptions},
    maps::Maps,
};
use shared::{
    craft::{Packet, L4},
    flow::tcp,
    parse::parse,
    Count, FlowKey, Stat,
};
use std::collections::HashMap;
use testkit::rng::Rng;

static BARE: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/bare.bpf.o"));

/// In-kernel ns per packet under a spoofed-source scan: bare counter against edgeflow.
#[derive(FromArgs)]
struct Args {
    /// flows both tables are sized for (default 16384, the agent's default)
    #[argh(option, default = "16_384")]
    max_flows: u32,
    /// frames in the run (default 300000)
    #[argh(option, default = "300_000")]
    frames: usize,
    /// frames per trial (default 2000)
    #[argh(option, default = "2000")]
    chunk: usize,
    /// hook: xdp or tc (default xdp)
    #[argh(option, default = "String::from(\"xdp\")")]
    hook: String,
}

/// Real conversations: half start before the scan, half once both tables are full.
const REAL: usize = 16;
/// One frame in this many is a real conversation's.
const REAL_EVERY: usize = 16;

fn main() -> anyhow::Result<()> {
    let args: Args = argh::from_env();
    let xdp = match args.hook.as_str() {
        "xdp" => true,
        "tc" => false,
        h => bail!("--hook {h}: xdp or tc"),
    };
    let mut bare = EbpfLoader::new()
        .map_max_entries("BARE_FLOWS", args.max_flows)
        .load(BARE)
        .context("loading the bare object")?;
    {
        let x: &mut Xdp = bare.program_mut("bare_xdp").unwrap().try_into()?;
        x.load()?;
        let t: &mut SchedClassifier = bare.program_mut("bare_tc").unwrap().try_into()?;
        t.load()?;
    }
    let mut ef = bpf::load(LoadOptions {
        max_flows: args.max_flows,
        sample_every: 1,
        rtt: Some(RttOptions::default()),
        tcp_health: true,
        dns: true,
        owner: None,
    })?
    .ebpf;
    let maps = Maps::take(&mut ef)?;

    let (frames, want) = scan(&args);
    // Both tables are full once the scan has sent twice the slots' worth of flows.
    let warm = (4 * args.max_flows as usize).min(frames.len() / 2);
    let mut ns = [Vec::new(), Vec::new()];
    let mut ratio = Vec::new();
    for (t, chunk) in frames.chunks(args.chunk).enumerate() {
        let mut trial = [0f64; 2];
        for k in 0..2 {
            let i = (t + k) % 2;
            let (ebpf, prog) = match (i, xdp) {
                (0, true) => (&mut bare, "bare_xdp"),
                (0, false) => (&mut bare, "bare_tc"),
                (_, true) => (&mut ef, bpf::XDP_PROG),
                (_, false) => (&mut ef, bpf::TC_PROG),
            };
            let mut sum = 0f64;
            for f in chunk {
                sum += run(ebpf, prog, xdp, f)?;
            }
            trial[i] = sum / chunk.len() as f64;
        }
        if t * args.chunk >= warm {
            ns[0].push(trial[0]);
            ns[1].push(trial[1]);
            ratio.push(trial[1] / trial[0]);
        }
    }
    let s = maps.stats.read()?;
    let got = |st: Stat| s[st as usize];
    println!(
        "scan-cost: {} frames ({} real every {REAL_EVERY}), tables for {} flows, {}; {} trials of {} after {warm}",
        frames.len(),
        REAL,
        args.max_flows,
        args.hook,
        ratio.len(),
        args.chunk
    );
    println!(
        "{:<10} {:>9} {:>11} {:>6}",
        "hook", "bare ns", "edgeflow ns", "x"
    );
    println!(
        "{:<10} {:>9.0} {:>11.0} {:>6.2}",
        args.hook,
        median(&ns[0]),
        median(&ns[1]),
        median(&ratio)
    );
    let mut flows = Vec::new();
    maps.table.read_flows(&mut flows);
    let in_flows = flows.iter().fold(Count::default(), |mut c, (_, v)| {
        c.add(&Count {
            packets: v.packets()[0] + v.packets()[1],
            bytes: v.bytes()[0] + v.bytes()[1],
        });
        c
    });
    let table: HashMap<FlowKey, ([u64; 2], [u64; 2])> = flows
        .iter()
        .map(|(k, v)| (FlowKey { ifindex: 0, ..*k }, (v.packets(), v.bytes())))
        .collect();
    println!(
        "edgeflow: parsed {} packets; in {} flows {}, overflow {}, reclaimed {} (flows' packets)",
        got(Stat::Parsed).packets,
        flows.len(),
        in_flows.packets,
        got(Stat::Overflow).packets,
        got(Stat::Reclaimed).packets
    );
    let mut bad = 0;
    for (k, w) in &want {
        let g = table.get(k).copied().unwrap_or_default();
        if g != *w {
            bad += 1;
            println!("real flow {k:?}: counted {g:?}, sent {w:?}");
        }
    }
    println!(
        "real conversations exact: {}/{}",
        want.len() - bad,
        want.len()
    );
    let sum = in_flows
        .plus(&got(Stat::Overflow))
        .plus(&got(Stat::Reclaimed));
    if sum != got(Stat::Parsed) {
        bad += 1;
        println!("not conserved: flows + overflow + reclaimed = {sum:?}");
    }
    if bad > 0 {
        std::process::exit(1);
    }
    Ok(())
}

/// The frames: a SYN from a random (spoofed) source per frame, and every `REAL_EVERY`th a
/// packet of one of the real conversations (request and answer in turn); what each real
/// conversation should count per direction.
#[allow(clippy::type_complexity)]
fn scan(args: &Args) -> (Vec<Vec<u8>>, HashMap<FlowKey, ([u64; 2], [u64; 2])>) {
    let mut r = Rng(0x5ca4);
    let (client, server) = ([10, 211, 0, 1], [10, 211, 0, 2]);
    let mut sent = [0usize; REAL];
    let mut want: HashMap<FlowKey, ([u64; 2], [u64; 2])> = HashMap::new();
    let late = (4 * args.max_flows as usize).min(args.frames / 2);
    let mut frames = Vec::with_capacity(args.frames);
    for n in 0..args.frames {
        if n % REAL_EVERY == 0 {
            let live: Vec<usize> = (0..REAL).filter(|c| *c < REAL / 2 || n >= late).collect();
            let c = live[(n / REAL_EVERY) % live.len()];
            let answer = sent[c] % 2 == 1;
            sent[c] += 1;
            let (src, dst) = if answer {
                (server, client)
            } else {
                (client, server)
            };
            let (sp, dp) = if answer {
                (53, 40_000 + c as u16)
            } else {
                (40_000 + c as u16, 53)
            };
            let mut p = Packet::udp4(src, dst, sp, dp, 40 + c);
            if c % 2 == 1 {
                let flags = if sent[c] == 1 {
                    tcp::SYN
                } else if sent[c] == 2 {
                    tcp::SYN | tcp::ACK
                } else {
                    tcp::ACK
                };
                p.l4 = L4::Tcp {
                    sport: sp,
                    dport: dp,
                    flags,
                    seq: sent[c] as u32,
                    ack: 0,
                    options: vec![],
                };
            }
            let f = p.build();
            let parsed = parse(f.as_slice(), None).expect("a well-formed frame");
            let e = want.entry(parsed.key).or_default();
            e.0[parsed.dir.index()] += 1;
            e.1[parsed.dir.index()] += parsed.ip_len as u64;
            frames.push(f);
        } else {
            let src = [
                172,
                16 + (r.below(16) as u8),
                r.below(256) as u8,
                r.below(256) as u8,
            ];
            let mut p = Packet::tcp4(src, server, 1024 + r.below(60_000) as u16, 80, tcp::SYN);
            p.payload = 0;
            frames.push(p.build());
        }
    }
    (frames, want)
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// ns of one run of `prog` on `frame`.
fn run(ebpf: &mut Ebpf, prog: &str, xdp: bool, frame: &[u8]) -> anyhow::Result<f64> {
    let opts = TestRunOptions {
        data_in: Some(frame),
        repeat: 1,
        ..Default::default()
    };
    let p = ebpf.program_mut(prog).context("no such program")?;
    let r = if xdp {
        <&mut Xdp>::try_from(p)?.test_run(opts)?
    } else {
        <&mut SchedClassifier>::try_from(p)?.test_run(opts)?
    };
    Ok(r.duration.as_nanos() as f64)
}
