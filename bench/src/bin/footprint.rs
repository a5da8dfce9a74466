//! Footprint benchmark (run by `bench/bench footprint` through bench/footprint.sh, as root): the agent with N active flows.
//!
//! 1. In this process: the table filled with N real flows (UDP through a test veth), then the
//!    time of `Drainer::drain` and of building + encoding the summary, over several windows.
//! 2. `edgeflow run` as a process against a local Mosquitto, the same traffic every window:
//!    its RSS and CPU per interval from /proc, and the bytes per flow record on the wire as a
//!    QoS 1 subscriber receives them.
//!
//! Step 1 also encodes each window's summary as IPFIX (biflow and uniflow, 1400-byte MTU) for
//! the bytes per flow record of the two exports side by side (docs/ipfix.md).
//!
//! Usage: footprint EDGEFLOW_BIN [FLOWS] [WINDOWS] [TABLE]  (defaults: 16000 flows, 5 windows,
//! the default table, sized for 16384 flows)

use edge::{
    probe::{attach::AttachMode, drain::Expiry, ProbeOptions, Session},
    report::summary::{self, Identity},
};
use shared::{
    ipfix::{Encoder, Mode},
    wire::{self, Health, Id},
};
use std::{
    net::{SocketAddr, UdpSocket},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};
use testkit::{agent::Agent, mosquitto::Mosquitto, subscriber::Subscriber, TestNet, A4, B4};

const INTERVAL_SECS: u64 = 2;

/// Destination ports per source socket: a flow is (source port, destination port), and one
/// source port reaches at most this many destinations.
const PORTS_PER_SOCKET: u32 = 50_000;

/// One datagram per flow: flow i goes from socket i / PORTS_PER_SOCKET to a port of its own.
fn round(socks: &[UdpSocket], flows: u32) {
    for i in 0..flows {
        let port = 10_000 + (i % PORTS_PER_SOCKET) as u16;
        let sock = &socks[(i / PORTS_PER_SOCKET) as usize];
        let _ = sock.send_to(b"edgeflow", SocketAddr::new(B4.into(), port));
    }
}

fn proc_field(pid: i32, file: &str, key: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/{file}")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Resident KiB of the BPF maps mapped into a process (the flow table): kernel memory, not
/// the agent's own.
fn bpf_mapped_kib(pid: i32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let mut mapped = false;
    let mut kib = 0;
    for l in s.lines() {
        if l.split_whitespace()
            .next()
            .is_some_and(|r| r.contains('-') && !r.ends_with(':'))
        {
            mapped = l.ends_with("anon_inode:bpf-map");
        } else if let Some(v) = l.strip_prefix("Rss:").filter(|_| mapped) {
            kib += v
                .split_whitespace()
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
        }
    }
    kib
}

/// utime + stime of a process, in milliseconds.
fn cpu_ms(pid: i32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces): state is field 3.
    let rest = &s[s.rfind(')').map_or(0, |i| i + 2)..];
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // SAFETY: sysconf has no preconditions.
    let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    (f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0)) * 1000 / tick
}

/// CPU time of this process, in milliseconds: what a drain costs (its table reader thread
/// included) without the time spent waiting for a CPU on a busy machine. Nothing else in the
/// process runs while it drains.
fn process_cpu_ms() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid timespec pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 * 1000.0 + ts.tv_nsec as f64 / 1e6
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let bin = args
        .get(1)
        .expect("usage: footprint EDGEFLOW_BIN [FLOWS] [WINDOWS]");
    let flows: u32 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(16_000);
    let windows: u32 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(5);
    let table_size: u32 = args
        .get(4)
        .and_then(|s| s.parse().ok())
        .unwrap_or(shared::flow::DEFAULT_MAX_FLOWS);
    assert!(
        flows < table_size,
        "the table must hold every flow (and a few more)"
    );

    let net = TestNet::new();
    net.static_neighbours();
    net.ipv4_only();
    let socks: Vec<UdpSocket> = net.in_ns(&net.ns_a, || {
        (0..flows.div_ceil(PORTS_PER_SOCKET))
            .map(|_| UdpSocket::bind(SocketAddr::new(A4.into(), 0)).unwrap())
            .collect()
    });

    // 1. Drain and encode, in this process. wire_cmp: summary bytes, IPFIX biflow and
    // uniflow bytes, records, IPFIX biflow and uniflow messages.
    let mut wire_cmp = (0usize, 0usize, 0usize, 0usize, 0usize, 0usize);
    let (drain_ms, build_ms, read_ms, drain_cpu_ms, drained) = {
        let mut session = Session::start(&ProbeOptions {
            ifaces: vec![net.veth_b.clone()],
            netns: Some(net.ns_b.clone()),
            max_flows: table_size,
            attach: AttachMode::Tc,
            sample_every: 1,
            rtt: None,
            expiry: Expiry::default(),
            tcp_health: true,
            // As the agent runs by default: flows named with their owners.
            owner: Some(Default::default()),
            dns: true,
        })
        .expect("loading and attaching the programs (run as root)");
        let ident = Identity {
            device: Id::try_from("bench").unwrap(),
            site: Id::try_from("lab").unwrap(),
            boot_id: 1,
            sample_every: 1,
        };
        let (mut d, mut b, mut r, mut c) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut scratch = Vec::new();
        let mut drained = 0;
        let mut bi = Encoder::new(1, Mode::Biflow, shared::ipfix::DEFAULT_MTU, 1);
        let mut uni = Encoder::new(1, Mode::Uniflow, shared::ipfix::DEFAULT_MTU, 1);
        for seq in 0..windows + 1 {
            round(&socks, flows);
            std::thread::sleep(Duration::from_millis(200));
            let t = Instant::now();
            session.maps().table.read_flows(&mut scratch);
            let rt = t.elapsed();
            let t = Instant::now();
            let c0 = process_cpu_ms();
            let w = session.next_window().unwrap();
            let ct = process_cpu_ms() - c0;
            let dt = t.elapsed();
            let t = Instant::now();
            let s = summary::summarize(&ident, seq as u64, &w, Health::default(), flows as usize);
            let flows_of: Vec<wire::Flow> = s.to_flows().collect();
            let parts = summary::encode_parts(s, wire::DEFAULT_MAX_MESSAGE).unwrap();
            let bt = t.elapsed();
            // The same window both ways: summary payloads, and IPFIX messages each with
            // its IPv4 + UDP header (28 bytes); templates (one message a minute) left out.
            let (bm, um) = (bi.data(&flows_of, 0), uni.data(&flows_of, 0));
            let ipfix = |ms: &[Vec<u8>]| ms.iter().map(|m| m.len() + 28).sum::<usize>();
            wire_cmp.0 += parts.iter().map(Vec::len).sum::<usize>();
            wire_cmp.1 += ipfix(&bm);
            wire_cmp.2 += ipfix(&um);
            wire_cmp.3 += flows_of.len();
            wire_cmp.4 += bm.len();
            wire_cmp.5 += um.len();
            std::hint::black_box(parts);
            // The first drain also pays for first-touching its buffers.
            if seq > 0 {
                d.push(dt.as_secs_f64() * 1000.0);
                b.push(bt.as_secs_f64() * 1000.0);
                r.push(rt.as_secs_f64() * 1000.0);
                c.push(ct);
                drained = w.flows.len();
            }
        }
        drop(session);
        drop(scratch);
        (d, b, r, c, drained)
    };

    // 2. The agent as a process.
    let broker = Mosquitto::start();
    let sub = Subscriber::start(broker.port, "edgeflow/v1/+/+/flows");
    let url = broker.url();
    let interval = INTERVAL_SECS.to_string();
    let flows_s = flows.to_string();
    let table_s = table_size.to_string();
    let agent = Agent::start(
        bin,
        &[
            "--iface",
            &net.veth_b,
            "--netns",
            &net.ns_b,
            "--broker",
            &url,
            "--device",
            "bench",
            "--interval",
            &interval,
            "--top-k",
            &flows_s,
            "--max-flows",
            &table_s,
            "--attach",
            "tc",
        ],
    );
    let pid = agent.pid();
    // The high-water mark before any traffic: loading the programs (BTF parsing) sets it.
    let hwm_start_kib = proc_field(pid, "status", "VmHWM:");
    let stop = Arc::new(AtomicBool::new(false));
    let sender = {
        let stop = stop.clone();
        let socks: Vec<UdpSocket> = socks.iter().map(|s| s.try_clone().unwrap()).collect();
        std::thread::spawn(move || {
            // Every flow gets a packet every 0.5 s: all of them are active in every window.
            let end = Instant::now() + Duration::from_secs(300);
            while !stop.load(Ordering::SeqCst) && Instant::now() < end {
                round(&socks, flows);
                std::thread::sleep(Duration::from_millis(500));
            }
        })
    };
    // Warm-up: one full window, then measure `windows` windows.
    std::thread::sleep(Duration::from_secs(INTERVAL_SECS) + Duration::from_millis(300));
    let cpu0 = cpu_ms(pid);
    std::thread::sleep(Duration::from_secs(INTERVAL_SECS * windows as u64));
    let cpu1 = cpu_ms(pid);
    let rss_kib = proc_field(pid, "status", "VmRSS:");
    let hwm_kib = proc_field(pid, "status", "VmHWM:");
    let mapped_kib = bpf_mapped_kib(pid);
    stop.store(true, Ordering::SeqCst);
    sender.join().unwrap();
    let exit = agent.stop();
    assert!(exit.status.success(), "{}", exit.stderr);
    sub.wait_quiet(Duration::from_millis(500), Duration::from_secs(10));

    let msgs = sub.messages();
    let (mut bytes, mut records, mut parts_max, mut health_cpu) =
        (0usize, 0usize, 0u16, Vec::new());
    let mut big_windows = 0;
    for m in &msgs {
        let s = wire::decode_summary(&m.payload).unwrap();
        // Only windows that held (almost) every flow; the first and last are partial.
        if s.part == 0 && s.flows.len() + s.other_flows as usize >= flows as usize * 9 / 10 {
            health_cpu.push(s.health.cpu_ms as f64);
            big_windows += 1;
        }
        parts_max = parts_max.max(s.parts);
        bytes += m.payload.len();
        records += s.flows.len();
    }
    let per_record = bytes as f64 / records.max(1) as f64;
    let mut d = drain_ms.clone();
    let mut b = build_ms.clone();
    let dmax = drain_ms.iter().cloned().fold(0.0, f64::max);

    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "edgeflow footprint: {flows} active flows, table sized for {table_size} flows, {INTERVAL_SECS} s windows, {} CPUs, load average {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    );
    // The targets are for 64k flows (drain) and 16k flows (RSS); 20 ms is our own
    // for a 16k drain.
    let (drain_target, rss_target) = if flows >= 64_000 {
        ("≤ 50 ms", "")
    } else {
        ("≤ 20 ms", "≤ 16 MiB")
    };
    println!("| measure | value | target |");
    println!("| --- | --- | --- |");
    println!(
        "| drain of {drained} flows (table read + deltas), wall time, median / max of {} | {:.1} / {:.1} ms | {drain_target} |",
        drain_ms.len(),
        median(&mut d),
        dmax
    );
    let mut c = drain_cpu_ms.clone();
    println!(
        "| drain of {drained} flows, CPU time (both threads), median | {:.1} ms | |",
        median(&mut c)
    );
    let mut r = read_ms.clone();
    println!(
        "| of which the table read alone, median | {:.1} ms | |",
        median(&mut r)
    );
    println!(
        "| summary build + encode ({drained} records), median | {:.1} ms | |",
        median(&mut b)
    );
    println!(
        "| agent CPU per interval (/proc/PID/stat, {windows} windows) | {:.0} ms | |",
        (cpu1 - cpu0) as f64 / windows as f64
    );
    if !health_cpu.is_empty() {
        println!(
            "| agent CPU per interval (summary health.cpu_ms, median of {big_windows}) | {:.0} ms | |",
            median(&mut health_cpu)
        );
    }
    println!(
        "| agent RSS at the end, without the mapped flow table (VmRSS less mapped BPF maps) | {:.1} MiB | {rss_target} |",
        rss_kib.saturating_sub(mapped_kib) as f64 / 1024.0
    );
    println!(
        "| agent VmRSS at the end, the kernel's flow table mapped in it included | {:.1} MiB | |",
        rss_kib as f64 / 1024.0
    );
    println!(
        "| agent peak RSS (VmHWM): when ready, before traffic / at the end | {:.1} / {:.1} MiB | |",
        hwm_start_kib as f64 / 1024.0,
        hwm_kib as f64 / 1024.0
    );
    println!(
        "| payload bytes per flow record ({records} records in {} messages) | {per_record:.1} | ≤ 32 |",
        msgs.len()
    );
    println!(
        "| parts per full window ({} KiB max message) | {parts_max} | |",
        wire::DEFAULT_MAX_MESSAGE / 1024
    );
    let (sb, bb, ub, n, bm, um) = wire_cmp;
    let per = |b: usize| b as f64 / n.max(1) as f64;
    println!(
        "| bytes per flow record, the same {n} records (step 1): MQTT summary payload | {:.1} | |",
        per(sb)
    );
    println!(
        "| IPFIX biflow (RFC 5103), messages + IPv4/UDP headers, {bm} messages | {:.1} | |",
        per(bb)
    );
    println!(
        "| IPFIX uniflow (two records per two-way flow), {um} messages | {:.1} | |",
        per(ub)
    );
}
