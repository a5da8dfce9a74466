//! A spoofed-source SYN scan of many times the flow table per interval while real TCP and UDP
//! conversations start and run beside it (issue 24): every real conversation is reported
//! exactly, the scan is in flow records or the overflow record, and totals conserve.
//!
//! The table is small (`--max-flows 64`: 128 slots) and the scan sends 8 table-fulls a
//! second from random 172.16.0.0/12 sources to one port. Before the programs reclaimed
//! one-packet flows, the scan kept every slot taken and each conversation that started after
//! it was counted only in the overflow record.

use std::{
    io::{Read, Write},
    net::{IpAddr, Shutdown, TcpListener, TcpStream},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};
use testkit::{
    capture::Capture,
    raw,
    rng::Rng,
    traffic::{udp_exchange, udp_overhead},
    watch::Watch,
    TestNet, A4, B4,
};

const BIN: &str = env!("CARGO_BIN_EXE_edgeflow");
/// Scan frames per 50 ms burst: 1,000 a second, 8 times the 128 slots.
const BURST: usize = 50;
const SCAN_PORT: u16 = 80;

/// A TCP SYN from a random source in 172.16.0.0/12, addressed to a MAC nobody has: the
/// programs see it, the stack drops it (no answer, no flow of its own making).
fn scan_frame(r: &mut Rng) -> Vec<u8> {
    let src = [
        172,
        16 + r.below(16) as u8,
        r.below(256) as u8,
        1 + r.below(254) as u8,
    ];
    let sport = 1024 + r.below(60_000) as u16;
    let mut p = shared::craft::Packet::tcp4(src, B4.octets(), sport, SCAN_PORT, 0x02);
    p.payload = 0;
    let mut f = p.build();
    f[..6].copy_from_slice(&[0x02, 0xee, 0, 0, 0, 0x99]);
    f
}

/// One TCP conversation from ns_a to ns_b: 3000 bytes up, 1000 down, closed. The client port.
fn tcp_conversation(net: &TestNet, listener: &TcpListener) -> u16 {
    let dport = listener.local_addr().unwrap().port();
    let mut c = net.in_ns(&net.ns_a, || TcpStream::connect((B4, dport)).unwrap());
    let (mut s, _) = listener.accept().unwrap();
    for x in [&c, &s] {
        x.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    }
    c.write_all(&[7u8; 3000]).unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    let mut up = Vec::new();
    s.read_to_end(&mut up).unwrap();
    assert_eq!(up.len(), 3000);
    s.write_all(&[9u8; 1000]).unwrap();
    drop(s);
    let mut down = Vec::new();
    c.read_to_end(&mut down).unwrap();
    assert_eq!(down.len(), 1000);
    c.local_addr().unwrap().port()
}

#[test]
fn real_flows_stay_exact_under_a_spoofed_scan() {
    let net = TestNet::new();
    net.static_neighbours();
    // No IPv6 (its neighbour discovery would be flows of its own in the overflow record).
    net.ipv4_only();
    // Every skb a wire packet: the capture is then the truth for TCP.
    net.set_offloads(false);
    let listener = net.in_ns(&net.ns_b, || TcpListener::bind((B4, 0)).unwrap());
    let dport = listener.local_addr().unwrap().port();
    let w = Watch::start(
        BIN,
        &net.ns_b,
        &[
            "--iface",
            &net.veth_b,
            "--interval",
            "1",
            "--attach",
            "tc",
            "--max-flows",
            "64",
        ],
    );
    let cap = Capture::start(&net.ns_a, &net.veth_a, &format!("tcp port {dport}"));

    let stop = Arc::new(AtomicBool::new(false));
    let scan = {
        let (stop, ns, dev) = (stop.clone(), net.ns_a.clone(), net.veth_a.clone());
        std::thread::spawn(move || {
            let mut r = Rng(0x5ca7);
            let mut sent = 0u64;
            // Bounded: at most 6 s of scan.
            for _ in 0..120 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let frames: Vec<Vec<u8>> = (0..BURST).map(|_| scan_frame(&mut r)).collect();
                raw::send(&ns, &dev, &frames);
                sent += BURST as u64;
                std::thread::sleep(Duration::from_millis(50));
            }
            sent
        })
    };
    // The scan fills the table first; then conversations start, one after another.
    std::thread::sleep(Duration::from_millis(1500));
    let (a, b): (IpAddr, IpAddr) = (A4.into(), B4.into());
    let sizes = [100, 300, 700];
    let mut udp = Vec::new();
    let mut tcp = Vec::new();
    for _ in 0..6 {
        udp.push(udp_exchange(&net, a, b, &sizes, 50));
        tcp.push(tcp_conversation(&net, &listener));
        std::thread::sleep(Duration::from_millis(200));
    }
    stop.store(true, Ordering::Relaxed);
    let scanned = scan.join().unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let cap = cap.stop();
    let got = w.stop();
    got.assert_conserved();

    let ctx = &got.stderr;
    for (sport, port) in &udp {
        // Client → server as sent; a record may be oriented the other way (a drain between a
        // request and its answer frees the request's flow, and both ports are ephemeral, so
        // the answer's record names the server as the one that spoke first).
        let there =
            got.sum(|f| f["proto"] == 17 && f["src_port"] == *sport && f["dst_port"] == *port);
        let back =
            got.sum(|f| f["proto"] == 17 && f["src_port"] == *port && f["dst_port"] == *sport);
        let up: u64 = sizes.iter().map(|&n| n as u64 + udp_overhead(a)).sum();
        assert_eq!(
            (
                there.packets_fwd + back.packets_rev,
                there.bytes_fwd + back.bytes_rev,
                there.packets_rev + back.packets_fwd,
                there.bytes_rev + back.bytes_fwd
            ),
            (3, up, 3, 3 * (50 + udp_overhead(a))),
            "UDP {sport} → {port}\n{ctx}"
        );
    }
    // TCP: the capture holds all six conversations (one server port). A packet is counted
    // once, into its flow or elsewhere, so the six sums matching the capture in total means
    // each is exact; each must also have been tracked from its SYN to its FIN.
    let mut sum = ((0, 0), (0, 0));
    for sport in &tcp {
        let ours = |f: &serde_json::Value| {
            f["proto"] == 6 && f["src_port"] == *sport && f["dst_port"] == dport
        };
        let s = got.sum(ours);
        let flags = got
            .flows()
            .filter(|f| ours(f))
            .fold(0, |a, f| a | f["tcp_flags"].as_u64().unwrap_or(0));
        assert_eq!(flags & 0x13, 0x13, "TCP {sport}: SYN, ACK, FIN\n{ctx}");
        assert!(
            s.packets_fwd >= 4 && s.packets_rev >= 3,
            "TCP {sport}: {s:?}\n{ctx}"
        );
        sum.0 .0 += s.packets_fwd;
        sum.0 .1 += s.bytes_fwd;
        sum.1 .0 += s.packets_rev;
        sum.1 .1 += s.bytes_rev;
    }
    assert_eq!(
        sum,
        (cap.count(a, b), cap.count(b, a)),
        "TCP, all six\n{ctx}"
    );
    // The scan: in records of its own or in the overflow record, nothing lost.
    let in_records = got.sum(|f| f["proto"] == 6 && f["dst_port"] == SCAN_PORT);
    let overflow = got.counter("overflow");
    assert_eq!(
        in_records.packets_fwd + in_records.packets_rev + overflow.0,
        scanned,
        "scan frames: {in_records:?} in records, {overflow:?} overflow\n{ctx}"
    );
    // It went through the table many times over: slots were reclaimed, and the drains let
    // reclaimable flows go.
    let reclaimed = got.stat("reclaimed").0;
    assert!(
        reclaimed > scanned / 4,
        "reclaimed {reclaimed} of {scanned}\n{ctx}"
    );
    eprintln!(
        "flood: {scanned} scan frames; {} in records, {} overflow ({reclaimed} reclaimed); \
         6 UDP and 6 TCP conversations exact",
        in_records.packets_fwd + in_records.packets_rev,
        overflow.0
    );
}
