//! In-kernel cost per packet of edgeflow's programs against the bare counter's, hook by hook,
//! without traffic: BPF_PROG_TEST_RUN runs each program on the same crafted frame `repeat`
//! times and the kernel reports the mean run time; trials interleave the programs and the
//! ratios are medians of per-trial ratios. One flow, hot caches: the programs' own
//! instructions and map work, free of the veth path's noise (bench's `bpf ns/run` column is
//! the same figure on real traffic). Prints a table: ns per run, and edgeflow's over bare's.
//!
//! `--cold` measures the other regime, the one real traffic is in: each trial is a single run
//! after the CPU's caches were flushed of the programs' code and data by reading a buffer
//! larger than L2 (on real bulk TCP the programs run once per GRO aggregate with 64 KiB
//! copies in between, so every run starts cold). There the cost follows the cache lines a run
//! touches, code and data, rather than its instruction count.
//!
//! prog-cost [--repeat N] [--trials T] [--against OBJECT] [--cold]

use anyhow::Context;
use argh::FromArgs;
use aya::{
    programs::{SchedClassifier, TestRun, TestRunOptions, Xdp},
    Ebpf,
};
use edge::probe::bpf::{self, LoadOptions, RttOptions};
use shared::craft::{Packet, L4};

static BARE: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/bare.bpf.o"));

/// Mean in-kernel run time of each program on crafted frames.
#[derive(FromArgs)]
struct Args {
    /// runs per trial (default 200000)
    #[argh(option, default = "200_000")]
    repeat: u32,
    /// trials per program; medians are reported, ratios taken within a trial (default 15,
    /// with --cold 2001)
    #[argh(option)]
    trials: Option<usize>,
    /// other builds of edgeflow's object (e.g. target/bpf/bpfel-unknown-none/bpf/edgeflow-ebpf
    /// of an earlier commit), run with RTT on in the same trials: one A/B column each. The
    /// loader writes this build's settings into their CPU slots: a build whose slots have
    /// another size is refused (compare such builds on traffic, with `--alt-edgeflow`)
    #[argh(option)]
    against: Vec<std::path::PathBuf>,
    /// one run per trial after evicting the caches
    #[argh(switch)]
    cold: bool,
    /// bytes read to evict the caches before each cold run, in KiB (default 4096)
    #[argh(option, default = "4096")]
    evict_kib: usize,
}

#[derive(Clone, Copy)]
enum Hook {
    Xdp,
    Tc,
    /// The TC egress program (against the bare TC counter): where a flow's owner is looked up
    /// (`shared::owner`), once per flow, and checked with one load per packet.
    TcEgress,
}

fn main() -> anyhow::Result<()> {
    let mut args: Args = argh::from_env();
    let mut evict = Evict::new(if args.cold { args.evict_kib * 1024 } else { 0 });
    if args.cold {
        args.repeat = 1;
    }
    let trials = args.trials.unwrap_or(if args.cold { 2001 } else { 15 });
    let frames = [
        ("udp64", udp_frame()),
        ("tcp-ts", tcp_frame()),
        ("dns53", dns_frame()),
    ];
    let mut bare = Ebpf::load(BARE).context("loading the bare object")?;
    {
        let x: &mut Xdp = bare.program_mut("bare_xdp").unwrap().try_into()?;
        x.load()?;
        let t: &mut SchedClassifier = bare.program_mut("bare_tc").unwrap().try_into()?;
        t.load()?;
    }
    let opts = |rtt: bool, tcp_health: bool, dns: bool| LoadOptions {
        max_flows: 16_384,
        sample_every: 1,
        rtt: rtt.then(RttOptions::default),
        tcp_health,
        dns,
        owner: None,
    };
    let with_owner = LoadOptions {
        owner: Some(Default::default()),
        ..opts(true, true, true)
    };
    // The configurations compared with the bare counter, each one column: RTT, TCP health
    // and DNS off, RTT alone, all but DNS, everything on (the default).
    let mut configs: Vec<(String, Ebpf)> = vec![
        (
            "edgeflow-nortt".into(),
            bpf::load(opts(false, false, false))?.ebpf,
        ),
        (
            "edgeflow-notcp".into(),
            bpf::load(opts(true, false, false))?.ebpf,
        ),
        (
            "edgeflow-nodns".into(),
            bpf::load(opts(true, true, false))?.ebpf,
        ),
        ("edgeflow".into(), bpf::load(opts(true, true, true))?.ebpf),
        ("edgeflow+owner".into(), bpf::load(with_owner)?.ebpf),
    ];
    for (i, path) in args.against.iter().enumerate() {
        let object = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let other = bpf::load_object(&object, opts(true, true, true))
            .with_context(|| format!("loading {}", path.display()))?;
        configs.push((format!("against-{}", i + 1), other.ebpf));
    }
    print!("{:<7} {:<5} {:>9}", "frame", "hook", "bare ns");
    for (label, _) in &configs {
        print!(" {:>16} {:>6}", label, "x");
    }
    println!();
    for (fname, frame) in &frames {
        for hook in [Hook::Xdp, Hook::Tc, Hook::TcEgress] {
            let bare_prog = match hook {
                Hook::Xdp => "bare_xdp",
                Hook::Tc | Hook::TcEgress => "bare_tc",
            };
            // Each trial runs every program back to back, in an order rotated per trial, and
            // the ratios are taken within the trial: the host's noise (steal time, other
            // tenants) moves them together and cancels out of the ratio.
            let n = configs.len() + 1;
            let mut ns: Vec<Vec<f64>> = vec![Vec::new(); n];
            let mut ratio: Vec<Vec<f64>> = vec![Vec::new(); n];
            for t in 0..trials {
                let mut trial = vec![0f64; n];
                for k in 0..n {
                    let i = (t + k) % n;
                    evict.run();
                    trial[i] = if i == 0 {
                        run(&mut bare, bare_prog, hook, frame, args.repeat)?
                    } else {
                        run(
                            &mut configs[i - 1].1,
                            prog_name(hook),
                            hook,
                            frame,
                            args.repeat,
                        )?
                    };
                }
                for i in 0..n {
                    ns[i].push(trial[i]);
                    ratio[i].push(trial[i] / trial[0]);
                }
            }
            let hook_name = match hook {
                Hook::Xdp => "xdp",
                Hook::Tc => "tc",
                Hook::TcEgress => "tc-eg",
            };
            print!("{:<7} {:<5} {:>9.0}", fname, hook_name, median(&ns[0]));
            for i in 1..n {
                print!(" {:>16.0} {:>6.2}", median(&ns[i]), median(&ratio[i]));
            }
            println!();
        }
    }
    Ok(())
}

/// Reads a buffer larger than the CPU's L2 so the next run finds its code and data in L3 at
/// best (L2 holds L1's lines on the CPUs this runs on, so L1i goes too).
struct Evict {
    buf: Vec<u64>,
    sink: u64,
}

impl Evict {
    fn new(bytes: usize) -> Evict {
        Evict {
            buf: vec![1; bytes / 8],
            sink: 0,
        }
    }

    fn run(&mut self) {
        // One word per cache line is enough to pull the line in.
        let mut s = 0u64;
        for w in self.buf.iter().step_by(8) {
            s = s.wrapping_add(*w);
        }
        self.sink = std::hint::black_box(self.sink.wrapping_add(s));
    }
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn prog_name(hook: Hook) -> &'static str {
    match hook {
        Hook::Xdp => bpf::XDP_PROG,
        Hook::Tc => bpf::TC_PROG,
        Hook::TcEgress => bpf::TC_EGRESS_PROG,
    }
}

/// Mean ns per run of `repeat` runs of `prog` on `frame`.
fn run(ebpf: &mut Ebpf, prog: &str, hook: Hook, frame: &[u8], repeat: u32) -> anyhow::Result<f64> {
    let opts = TestRunOptions {
        data_in: Some(frame),
        repeat,
        ..Default::default()
    };
    let p = ebpf.program_mut(prog).context("no such program")?;
    let r = match hook {
        Hook::Xdp => <&mut Xdp>::try_from(p)?.test_run(opts)?,
        Hook::Tc | Hook::TcEgress => <&mut SchedClassifier>::try_from(p)?.test_run(opts)?,
    };
    Ok(r.duration.as_nanos() as f64)
}

/// The bench's UDP packet: 64 bytes on a wire (60 without the FCS).
fn udp_frame() -> Vec<u8> {
    Packet::udp4([10, 211, 0, 1], [10, 211, 0, 2], 10_000, 9000, 18).build()
}

/// A DNS query to port 53 ("www.example.com" A), as a stub resolver sends it: the DNS path
/// parses it and updates the flow's DNS state (a repeated query: its id stays pending).
fn dns_frame() -> Vec<u8> {
    let mut msg = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    msg.extend(b"\x03www\x07example\x03com\x00");
    msg.extend([0, 1, 0, 1]);
    let mut f = Packet::udp4([10, 211, 0, 1], [10, 211, 0, 2], 40_000, 53, msg.len()).build();
    let at = f.len() - msg.len();
    f[at..].copy_from_slice(&msg);
    f
}

/// A bulk TCP data segment as Linux sends it: ACK, timestamp option, 1448 bytes of data.
fn tcp_frame() -> Vec<u8> {
    let mut p = Packet::tcp4([10, 211, 0, 1], [10, 211, 0, 2], 40_000, 5201, 0x18);
    if let L4::Tcp { options, .. } = &mut p.l4 {
        *options = vec![1, 1, 8, 10, 0, 0, 1, 0, 0, 0, 2, 0];
    }
    p.payload = 1448;
    p.build()
}
