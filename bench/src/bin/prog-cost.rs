//! In-kernel cost per packet of edgeflow's programs against the bare counter's, hook by hook,
//! without traffic: BPF_PROG_TEST_RUN runs each program on the same crafted frame `repeat`
//! times and the kernel reports the mean run time. One flow, hot caches: the programs' own
//! instructions and map work, free of the veth path's noise (bench's `bpf ns/run` column is
//! the same figure on real traffic). Prints a table: ns per run, and edgeflow's over bare's.
//!
//! prog-cost [--repeat N] [--trials T]

use anyhow::Context;
use argh::FromArgs;
use aya::{
    programs::{SchedClassifier, TestRun, TestRunOptions, Xdp},
    Ebpf,
};
use edge::bpf::{self, LoadOptions, RttOptions};
use shared::craft::{Packet, L4};

static BARE: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/bare.bpf.o"));

/// Mean in-kernel run time of each program on crafted frames.
#[derive(FromArgs)]
struct Args {
    /// runs per trial (default 1000000)
    #[argh(option, default = "1_000_000")]
    repeat: u32,
    /// trials per program; the median is reported (default 5)
    #[argh(option, default = "5")]
    trials: usize,
}

#[derive(Clone, Copy)]
enum Hook {
    Xdp,
    Tc,
}

fn main() -> anyhow::Result<()> {
    let args: Args = argh::from_env();
    let frames = [("udp64", udp_frame()), ("tcp-ts", tcp_frame())];
    let mut bare = Ebpf::load(BARE).context("loading the bare object")?;
    {
        let x: &mut Xdp = bare.program_mut("bare_xdp").unwrap().try_into()?;
        x.load()?;
        let t: &mut SchedClassifier = bare.program_mut("bare_tc").unwrap().try_into()?;
        t.load()?;
    }
    let load = |rtt: bool| {
        bpf::load(LoadOptions {
            max_flows: 16_384,
            sample_every: 1,
            rtt: rtt.then(RttOptions::default),
        })
    };
    let mut ef_rtt = load(true)?;
    let mut ef_nortt = load(false)?;
    println!(
        "{:<7} {:<4} {:>9} {:>16} {:>6} {:>13} {:>6}",
        "frame", "hook", "bare ns", "edgeflow-nortt", "x", "edgeflow", "x"
    );
    for (fname, frame) in &frames {
        for hook in [Hook::Xdp, Hook::Tc] {
            let bare_prog = match hook {
                Hook::Xdp => "bare_xdp",
                Hook::Tc => "bare_tc",
            };
            let b = median(&mut bare, bare_prog, hook, frame, &args)?;
            let n = median(&mut ef_nortt.ebpf, prog_name(hook), hook, frame, &args)?;
            let r = median(&mut ef_rtt.ebpf, prog_name(hook), hook, frame, &args)?;
            println!(
                "{:<7} {:<4} {:>9.0} {:>16.0} {:>6.2} {:>13.0} {:>6.2}",
                fname,
                match hook {
                    Hook::Xdp => "xdp",
                    Hook::Tc => "tc",
                },
                b,
                n,
                n / b,
                r,
                r / b
            );
        }
    }
    Ok(())
}

/// Median over the trials of the mean ns per run.
fn median(ebpf: &mut Ebpf, prog: &str, hook: Hook, frame: &[u8], a: &Args) -> anyhow::Result<f64> {
    let mut ns: Vec<f64> = (0..a.trials)
        .map(|_| run(ebpf, prog, hook, frame, a.repeat))
        .collect::<anyhow::Result<_>>()?;
    ns.sort_by(f64::total_cmp);
    Ok(ns[ns.len() / 2])
}

fn prog_name(hook: Hook) -> &'static str {
    match hook {
        Hook::Xdp => bpf::XDP_PROG,
        Hook::Tc => bpf::TC_PROG,
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
        Hook::Tc => <&mut SchedClassifier>::try_from(p)?.test_run(opts)?,
    };
    Ok(r.duration.as_nanos() as f64)
}

/// The bench's UDP packet: 64 bytes on a wire (60 without the FCS).
fn udp_frame() -> Vec<u8> {
    Packet::udp4([10, 211, 0, 1], [10, 211, 0, 2], 10_000, 9000, 18).build()
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
