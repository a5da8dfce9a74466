//! TCP round-trip times through a delay line (`testkit::delay`: client ─ relay ─ server, a set
//! one-way delay each way). The agent watches the client's or the server's veth; connections
//! go both ways (outbound: the watched side connects; inbound: the far side connects to it).
//!
//! Traffic is a request/response loop. The far side answers at once (on a real-time thread,
//! so a busy machine does not delay it), so an echo comes back one network round trip after
//! the segment it echoes, and the timestamp RTT is the path's RTT. The watched side waits
//! [`PACE`] before each of its own messages: its segments are what is timed, so waiting
//! before sending them changes no sample, and the loop never spins (even at zero delay).
//! Tolerance (from the issue): within ±10% + 1 ms of twice the one-way delay. Timing on a
//! shared machine can still be disturbed by load, so a test whose figures miss the tolerance
//! runs again (three attempts); structural failures fail at once.

use shared::wire::{self, Addr};
use std::{
    io::{Read, Write},
    net::{IpAddr, SocketAddr, TcpListener, TcpStream},
    thread::JoinHandle,
    time::{Duration, Instant},
};
use testkit::{
    agent::Agent,
    delay::{
        realtime, DelayNet, GatewayNet, CLIENT4, CLIENT6, GW_CLIENT4, GW_SERVER4, SERVER4, SERVER6,
    },
    mosquitto::Mosquitto,
    subscriber::Subscriber,
    watch::{Watch, Windows},
};

const BIN: &str = env!("CARGO_BIN_EXE_edgeflow");
const MSG: usize = 32;
const ATTEMPTS: usize = 3;
/// The watched side's wait before each message it sends.
const PACE: Duration = Duration::from_millis(1);

/// Where the agent runs.
#[derive(Clone, Copy, Debug)]
enum Side {
    Client,
    Server,
}

/// The agent's side of the line and the far side: (namespace, veth, address) each.
struct Ends<'a> {
    near_ns: &'a str,
    near_if: &'a str,
    near: IpAddr,
    far_ns: &'a str,
    far: IpAddr,
}

fn ends(net: &DelayNet, side: Side, v6: bool) -> Ends<'_> {
    let (c, s): (IpAddr, IpAddr) = if v6 {
        (CLIENT6.into(), SERVER6.into())
    } else {
        (CLIENT4.into(), SERVER4.into())
    };
    match side {
        Side::Client => Ends {
            near_ns: &net.ns_client,
            near_if: &net.veth_client,
            near: c,
            far_ns: &net.ns_server,
            far: s,
        },
        Side::Server => Ends {
            near_ns: &net.ns_server,
            near_if: &net.veth_server,
            near: s,
            far_ns: &net.ns_client,
            far: c,
        },
    }
}

/// An echo server in `ns` on `addr` for one connection: answers each message after `pace`
/// (zero: at once, on a real-time thread).
fn echo_server(net: &DelayNet, ns: &str, addr: IpAddr, pace: Duration) -> (u16, JoinHandle<()>) {
    let l = net.in_ns(ns, || TcpListener::bind(SocketAddr::new(addr, 0)).unwrap());
    let port = l.local_addr().unwrap().port();
    let t = std::thread::spawn(move || {
        if pace.is_zero() {
            realtime();
        }
        let (mut s, _) = l.accept().unwrap();
        s.set_nodelay(true).unwrap();
        let mut b = [0u8; MSG];
        while s.read_exact(&mut b).is_ok() {
            std::thread::sleep(pace);
            if s.write_all(&b).is_err() {
                break;
            }
        }
    });
    (port, t)
}

/// A connection from `ns` to `to`, then requests for `dur`, each `pace` after the last
/// answer (zero: at once, on a real-time thread). Returns the client's port and the number
/// of exchanges.
fn ping_pong(
    net: &DelayNet,
    ns: &str,
    to: SocketAddr,
    dur: Duration,
    pace: Duration,
) -> (u16, u64) {
    let c = net.in_ns(ns, || {
        TcpStream::connect_timeout(&to, Duration::from_secs(5)).unwrap()
    });
    std::thread::scope(|s| s.spawn(|| requests(c, dur, pace)).join().unwrap())
}

fn requests(mut c: TcpStream, dur: Duration, pace: Duration) -> (u16, u64) {
    if pace.is_zero() {
        realtime();
    }
    c.set_nodelay(true).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let port = c.local_addr().unwrap().port();
    let start = Instant::now();
    let mut b = [7u8; MSG];
    let mut n = 0;
    // Bounded in time and in count.
    while start.elapsed() < dur && n < 200_000 {
        std::thread::sleep(pace);
        c.write_all(&b).unwrap();
        c.read_exact(&mut b).unwrap();
        n += 1;
    }
    (port, n)
}

/// What the windows say about one flow's RTT.
#[derive(Debug, Default)]
struct FlowRtt {
    handshake: Option<u64>,
    min: u64,
    avg: u64,
    max: u64,
    /// Summed over windows.
    samples: u64,
    /// Per window the flow was in.
    per_window: Vec<u64>,
}

fn flow_rtt(got: &Windows, src: IpAddr, dst: IpAddr, src_port: u16, dst_port: u16) -> FlowRtt {
    flow_rtt_at(got, src, dst, src_port, dst_port, None)
}

/// [`flow_rtt`] of the record kept for interface `ifindex` (a gateway has one per interface).
fn flow_rtt_at(
    got: &Windows,
    src: IpAddr,
    dst: IpAddr,
    src_port: u16,
    dst_port: u16,
    ifindex: Option<u32>,
) -> FlowRtt {
    let mut r = FlowRtt::default();
    let mut found = false;
    for f in got.flows().filter(|f| {
        f["proto"] == 6
            && f["src"] == src.to_string()
            && f["dst"] == dst.to_string()
            && f["src_port"] == src_port
            && f["dst_port"] == dst_port
            && ifindex.is_none_or(|i| f["ifindex"] == i)
    }) {
        found = true;
        let Some(rtt) = f.get("rtt_us") else {
            r.per_window.push(0);
            continue;
        };
        let u = |k: &str| rtt[k].as_u64().unwrap();
        r.handshake = rtt["handshake"].as_u64();
        (r.min, r.avg, r.max) = (u("min"), u("avg"), u("max"));
        r.samples += u("samples");
        r.per_window.push(u("samples"));
    }
    assert!(
        found,
        "no record of {src}:{src_port} → {dst}:{dst_port}\n{}",
        got.stderr
    );
    r
}

fn within(us: u64, one_way: Duration) -> bool {
    let want = 2.0 * one_way.as_micros() as f64;
    (us as f64 - want).abs() <= 0.1 * want + 1000.0
}

/// Sum of the windows' RTT histograms.
fn hist_total(got: &Windows) -> u64 {
    got.windows
        .iter()
        .flat_map(|w| w["rtt_hist"].as_array().unwrap().iter())
        .map(|v| v.as_u64().unwrap())
        .sum()
}

/// One connection each way through a line of `one_way` delay, the agent on `side`.
/// `Err` names a figure out of tolerance; anything else wrong panics.
fn both_directions(
    one_way: Duration,
    side: Side,
    attach: &str,
    v6: bool,
    timestamps: bool,
) -> Result<(), String> {
    let net = DelayNet::new(one_way);
    if !timestamps {
        net.sysctl_ends("net.ipv4.tcp_timestamps", "0");
    }
    let e = ends(&net, side, v6);
    let w = Watch::start(
        BIN,
        e.near_ns,
        &["--iface", e.near_if, "--interval", "1", "--attach", attach],
    );
    let dur = Duration::from_millis(1500);
    // Outbound: the watched side connects out.
    let (out_port, srv) = echo_server(&net, e.far_ns, e.far, Duration::ZERO);
    let to = SocketAddr::new(e.far, out_port);
    let (out_cport, out_n) = ping_pong(&net, e.near_ns, to, dur, PACE);
    srv.join().unwrap();
    // Inbound: the far side connects in.
    let (in_port, srv) = echo_server(&net, e.near_ns, e.near, PACE);
    let to = SocketAddr::new(e.near, in_port);
    let (in_cport, in_n) = ping_pong(&net, e.far_ns, to, dur, Duration::ZERO);
    srv.join().unwrap();
    net.settle();
    let got = w.stop();
    got.assert_conserved();

    let out = flow_rtt(&got, e.near, e.far, out_cport, out_port);
    let inb = flow_rtt(&got, e.far, e.near, in_cport, in_port);
    eprintln!(
        "{one_way:?} {side:?} {attach} v6={v6} ts={timestamps}: outbound ({out_n} exchanges) \
         {out:?}\ninbound ({in_n} exchanges) {inb:?}\nrelay late max {} µs",
        net.relay_stats()
            .max_late_us
            .load(std::sync::atomic::Ordering::Relaxed)
    );
    assert_eq!(got.stat("rtt_pending_full").0, 0);
    // Every sample is in exactly one window's histogram (no other flow has any here).
    assert_eq!(hist_total(&got), out.samples + inb.samples);
    for (what, r) in [("outbound", &out), ("inbound", &inb)] {
        let hs = r
            .handshake
            .unwrap_or_else(|| panic!("{what}: no handshake RTT"));
        if !within(hs, one_way) {
            return Err(format!("{what}: handshake {hs} µs for {one_way:?} one way"));
        }
        if timestamps {
            // ~1.5 s at one sample per 100 ms at most, plus the handshake.
            assert!(
                (5..=17).contains(&r.samples),
                "{what}: {} samples",
                r.samples
            );
            for (k, v) in [("min", r.min), ("avg", r.avg)] {
                if !within(v, one_way) {
                    return Err(format!("{what}: {k} {v} µs for {one_way:?} one way"));
                }
            }
        } else {
            assert_eq!(r.samples, 1, "{what}: the handshake is the only sample");
            assert_eq!((r.min, r.max), (hs, hs));
        }
    }
    Ok(())
}

fn retried(f: impl Fn() -> Result<(), String>) {
    let mut errs = Vec::new();
    for _ in 0..ATTEMPTS {
        match f() {
            Ok(()) => return,
            Err(e) => {
                eprintln!("out of tolerance, again: {e}");
                errs.push(e);
            }
        }
    }
    panic!("out of tolerance in every attempt: {errs:#?}");
}

#[test]
fn no_delay_client_side_tc() {
    retried(|| both_directions(Duration::ZERO, Side::Client, "tc", false, true));
}

#[test]
fn ten_ms_client_side_xdp_ipv6() {
    retried(|| both_directions(Duration::from_millis(10), Side::Client, "xdp", true, true));
}

#[test]
fn fifty_ms_server_side_tc() {
    retried(|| both_directions(Duration::from_millis(50), Side::Server, "tc", false, true));
}

#[test]
fn fifty_ms_server_side_xdp() {
    retried(|| both_directions(Duration::from_millis(50), Side::Server, "xdp", false, true));
}

/// Without the timestamp option the handshake still gives one sample per connection, the
/// timestamp logic none, and the counts are as exact as ever.
#[test]
fn without_timestamps_only_the_handshake() {
    retried(|| both_directions(Duration::from_millis(10), Side::Client, "tc", false, false));
}

/// A gateway forwarding between two delay lines measures each half of the path on the
/// interface facing it: the client's side on one, the server's on the other.
#[test]
fn gateway_measures_both_halves() {
    retried(gateway_attempt);
}

fn gateway_attempt() -> Result<(), String> {
    let (client_delay, server_delay) = (Duration::from_millis(5), Duration::from_millis(20));
    let net = GatewayNet::new(client_delay, server_delay);
    let w = Watch::start(
        BIN,
        &net.ns_gw,
        &[
            "--iface",
            &net.gw_client,
            "--iface",
            &net.gw_server,
            "--interval",
            "1",
            "--attach",
            "tc",
        ],
    );
    let l = net.in_ns(&net.ns_server, || {
        TcpListener::bind((GW_SERVER4, 0)).unwrap()
    });
    let port = l.local_addr().unwrap().port();
    let srv = std::thread::spawn(move || {
        realtime();
        let (mut s, _) = l.accept().unwrap();
        s.set_nodelay(true).unwrap();
        let mut b = [0u8; MSG];
        while s.read_exact(&mut b).is_ok() && s.write_all(&b).is_ok() {}
    });
    let c = net.in_ns(&net.ns_client, || {
        TcpStream::connect_timeout(&(GW_SERVER4, port).into(), Duration::from_secs(5)).unwrap()
    });
    let (cport, _) = std::thread::scope(|s| {
        // Both ends are timed on a gateway: neither waits (the delays keep it from spinning).
        s.spawn(|| requests(c, Duration::from_millis(1500), Duration::ZERO))
            .join()
            .unwrap()
    });
    srv.join().unwrap();
    net.settle();
    let got = w.stop();
    got.assert_conserved();
    eprintln!("relays late by up to {} µs", net.relays_late_us());
    let (src, dst) = (GW_CLIENT4.into(), GW_SERVER4.into());
    for (what, dev, one_way) in [
        ("client half", &net.gw_client, client_delay),
        ("server half", &net.gw_server, server_delay),
    ] {
        let i = net.ifindex(&net.ns_gw, dev);
        let r = flow_rtt_at(&got, src, dst, cport, port, Some(i));
        eprintln!("{what} ({dev}, {one_way:?} one way): {r:?}");
        let hs = r
            .handshake
            .unwrap_or_else(|| panic!("{what}: no handshake RTT"));
        assert!(r.samples >= 5, "{what}: {} samples", r.samples);
        for (k, v) in [("handshake", hs), ("min", r.min), ("avg", r.avg)] {
            if !within(v, one_way) {
                return Err(format!("{what}: {k} {v} µs for {one_way:?} one way"));
            }
        }
    }
    Ok(())
}

/// `edgeflow run` publishes each flow's RTT and the window's histogram in its summaries.
#[test]
fn summaries_carry_rtt() {
    retried(summaries_attempt);
}

fn summaries_attempt() -> Result<(), String> {
    let one_way = Duration::from_millis(10);
    let net = DelayNet::new(one_way);
    let broker = Mosquitto::start();
    let sub = Subscriber::start(broker.port, "edgeflow/v1/+/+/flows");
    let url = broker.url();
    let agent = Agent::start(
        BIN,
        &[
            "--iface",
            &net.veth_client,
            "--netns",
            &net.ns_client,
            "--broker",
            &url,
            "--device",
            "rtt1",
            "--interval",
            "1",
            "--attach",
            "tc",
        ],
    );
    let (port, srv) = echo_server(&net, &net.ns_server, SERVER4.into(), Duration::ZERO);
    let to = SocketAddr::new(SERVER4.into(), port);
    let (cport, n) = ping_pong(&net, &net.ns_client, to, Duration::from_millis(1500), PACE);
    srv.join().unwrap();
    let exit = agent.stop();
    assert!(exit.status.success(), "{}", exit.stderr);
    sub.wait_quiet(Duration::from_millis(300), Duration::from_secs(5));

    let mut seen = std::collections::HashSet::new();
    let (mut samples, mut hist, mut last) = (0u64, 0u64, None);
    for m in sub.messages() {
        let s = wire::decode_summary(&m.payload).expect("a valid summary");
        if !seen.insert((s.boot_id, s.seq, s.part)) {
            continue;
        }
        hist += s.rtt_hist.iter().map(|&c| c as u64).sum::<u64>();
        for f in &s.flows {
            let ours = f.proto == 6
                && (f.src_port, f.dst_port) == (cport, port)
                && s.addrs[f.src as usize] == Addr::V4(CLIENT4.octets());
            if let (true, Some(r)) = (ours, f.rtt) {
                samples += r.samples as u64;
                last = Some(r);
            }
        }
    }
    let r = last.unwrap_or_else(|| {
        panic!(
            "no RTT for our flow in any summary
{}",
            exit.stderr
        )
    });
    eprintln!("{n} exchanges: {samples} samples, last {r:?}");
    assert!((5..=17).contains(&samples), "{samples} samples");
    assert_eq!(hist, samples, "the histograms hold every sample");
    for (k, v) in [("min", r.min_us), ("avg", r.avg_us)] {
        if !within(v as u64, one_way) {
            return Err(format!("summary {k} {v} µs for {one_way:?} one way"));
        }
    }
    Ok(())
}

/// A 60-second connection keeps producing samples in every window, at most one per flow per
/// 100 ms.
#[test]
fn long_flow_keeps_sampling() {
    let one_way = Duration::from_millis(10);
    let net = DelayNet::new(one_way);
    let e = ends(&net, Side::Client, false);
    let w = Watch::start(
        BIN,
        e.near_ns,
        &["--iface", e.near_if, "--interval", "5", "--attach", "tc"],
    );
    let (port, srv) = echo_server(&net, e.far_ns, e.far, Duration::ZERO);
    let to = SocketAddr::new(e.far, port);
    let (cport, n) = ping_pong(&net, e.near_ns, to, Duration::from_secs(60), PACE);
    srv.join().unwrap();
    net.settle();
    let got = w.stop();
    got.assert_conserved();
    let r = flow_rtt(&got, e.near, e.far, cport, port);
    eprintln!("{n} exchanges: {r:?}");
    // The first and last windows hold the start and end of the flow only in part.
    let full = &r.per_window[1..r.per_window.len() - 1];
    assert!(full.len() >= 10, "{:?}", r.per_window);
    for (i, s) in full.iter().enumerate() {
        // A 5 s window: at most 50 samples at one per 100 ms (51: a window is not exactly
        // 5 s). At least half of that: every exchange takes ~20 ms and carries a new TSval.
        assert!((25..=51).contains(s), "window {}: {s} samples", i + 1);
    }
    assert!(r.samples >= 400, "{} samples in 60 s", r.samples);
    assert!(within(r.min, one_way), "min {} µs", r.min);
    assert!(within(r.avg, one_way), "avg {} µs", r.avg);
}
