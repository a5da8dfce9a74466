//! The in-kernel cost of RTT tracking: the same bounded TCP traffic through the programs with
//! RTT tracking off and on, and each program's run time per run (BPF_ENABLE_STATS, read back
//! from the kernel's program info). Run by `bench/bench rtt-cost`; prints a table.
//!
//! Traffic, between two test namespaces over a veth with offloads off (one packet per run):
//! a request/response loop (every segment carries a new TSval or TSecr at most once per ms),
//! a bulk transfer, and short connections (handshakes). The agent side is ns_a.

use anyhow::Context;
use aya::sys::{enable_stats, Stats};
use edge::probe::{attach::AttachMode, bpf::RttOptions, drain::Expiry, ProbeOptions, Session};
use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    time::{Duration, Instant},
};
use testkit::{TestNet, B4};

const EXCHANGES: u64 = 20_000;
const BULK_BYTES: usize = 32 << 20;
const SHORT_CONNS: u32 = 300;
const ROUNDS: usize = 4;

struct Row {
    attach: &'static str,
    rtt: bool,
    program: &'static str,
    runs: u64,
    ns: u64,
}

fn main() -> anyhow::Result<()> {
    // Counting run time costs a little itself; on while this fd lives.
    let _stats = enable_stats(Stats::RunTime).context("BPF_ENABLE_STATS (needs root)")?;
    let mut rows: Vec<Row> = Vec::new();
    for _ in 0..ROUNDS {
        for (attach, mode) in [("tc", AttachMode::Tc), ("xdp", AttachMode::Xdp)] {
            for rtt in [false, true] {
                rows.extend(measure(attach, mode, rtt)?);
            }
        }
    }
    println!(
        "{:<5} {:<4} {:<11} {:>10} {:>12} {:>12} {:>12}",
        "hook", "rtt", "program", "runs", "ns/run", "best round", "worst round"
    );
    // Over all rounds, per (attach, rtt, program); the best round is the least disturbed
    // by whatever else the machine runs.
    let mut keys: Vec<(&str, bool, &str)> =
        rows.iter().map(|r| (r.attach, r.rtt, r.program)).collect();
    keys.sort();
    keys.dedup();
    for (a, rtt, p) in keys {
        let mine: Vec<&Row> = rows
            .iter()
            .filter(|r| (r.attach, r.rtt, r.program) == (a, rtt, p))
            .collect();
        let per = |r: &Row| r.ns as f64 / r.runs.max(1) as f64;
        let (runs, ns) = mine.iter().fold((0, 0), |(n, t), r| (n + r.runs, t + r.ns));
        let best = mine.iter().map(|r| per(r)).fold(f64::MAX, f64::min);
        let worst = mine.iter().map(|r| per(r)).fold(0.0, f64::max);
        println!(
            "{:<5} {:<4} {:<11} {:>10} {:>12.1} {:>12.1} {:>12.1}",
            a,
            if rtt { "on" } else { "off" },
            p,
            runs,
            ns as f64 / runs.max(1) as f64,
            best,
            worst
        );
    }
    Ok(())
}

fn measure(attach: &'static str, mode: AttachMode, rtt: bool) -> anyhow::Result<Vec<Row>> {
    let net = TestNet::new();
    net.set_offloads(false);
    net.static_neighbours();
    let mut session = Session::start(&ProbeOptions {
        ifaces: vec![net.veth_a.clone()],
        netns: Some(net.ns_a.clone()),
        max_flows: 16_384,
        attach: mode,
        sample_every: 1,
        rtt: rtt.then(RttOptions::default),
        expiry: Expiry::default(),
        tcp_health: false,
        owner: None,
        dns: true,
    })?;
    let t = Instant::now();
    traffic(&net);
    let took = t.elapsed();
    let progs = session.program_stats()?;
    eprintln!("{attach} rtt {rtt}: traffic took {took:.1?}");
    drop(session);
    Ok(progs
        .into_iter()
        .filter(|(_, i)| i.run_count() > 0)
        .map(|(program, i)| Row {
            attach,
            rtt,
            program,
            runs: i.run_count(),
            ns: i.run_time().as_nanos() as u64,
        })
        .collect())
}

/// The same bounded traffic every time.
fn traffic(net: &TestNet) {
    let listener = net.in_ns(&net.ns_b, || TcpListener::bind((B4, 0)).unwrap());
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        // 1: the request/response loop; 2: bulk; then the short connections.
        let (mut s, _) = listener.accept().unwrap();
        s.set_nodelay(true).unwrap();
        let mut b = [0u8; 64];
        while s.read_exact(&mut b).is_ok() {
            s.write_all(&b).unwrap();
        }
        let (mut s, _) = listener.accept().unwrap();
        let mut sink = vec![0u8; 1 << 16];
        while s.read(&mut sink).is_ok_and(|n| n > 0) {}
        for _ in 0..SHORT_CONNS {
            let (mut s, _) = listener.accept().unwrap();
            let _ = s.read(&mut b);
        }
    });
    let dst = SocketAddr::new(B4.into(), port);
    let connect = || {
        net.in_ns(&net.ns_a, || {
            TcpStream::connect_timeout(&dst, Duration::from_secs(5)).unwrap()
        })
    };
    let mut c = connect();
    c.set_nodelay(true).unwrap();
    let mut b = [1u8; 64];
    for _ in 0..EXCHANGES {
        c.write_all(&b).unwrap();
        c.read_exact(&mut b).unwrap();
    }
    drop(c);
    let mut c = connect();
    let chunk = vec![2u8; 1 << 16];
    let mut sent = 0;
    while sent < BULK_BYTES {
        c.write_all(&chunk).unwrap();
        sent += chunk.len();
    }
    drop(c);
    for _ in 0..SHORT_CONNS {
        let mut c = connect();
        c.write_all(b"bye").unwrap();
    }
    server.join().unwrap();
}
