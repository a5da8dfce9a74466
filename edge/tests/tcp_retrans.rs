//! Retransmissions counted exactly against the sender's own count: a client sends through the
//! delay line (`testkit::delay`), which loses chosen data segments once; the agent on the
//! client's interface (TC egress sees every segment it sends) reports as many retransmitted
//! segments as the client's `nstat` TcpRetransSegs, and, when each lost segment went again
//! once, their payload bytes; the agent on the server's side counts the retransmissions that
//! fill a hole behind later data. IPv4 and IPv6. And a blackholed connect: unanswered once,
//! with the SYN retries the client made.

use std::{
    io::{Read, Write},
    net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream},
    sync::atomic::Ordering::Relaxed,
    time::Duration,
};
use testkit::{
    delay::{DelayNet, GatewayNet, CLIENT4, CLIENT6, GW_CLIENT4, GW_SERVER4, SERVER4, SERVER6},
    nstat,
    watch::Watch,
};

const BIN: &str = env!("CARGO_BIN_EXE_edgeflow");
const UP: usize = 300_000;

fn retransmissions(v6: bool, attach: &str) {
    let net = DelayNet::new(Duration::from_millis(2));
    let (c, s): (IpAddr, IpAddr) = if v6 {
        (CLIENT6.into(), SERVER6.into())
    } else {
        (CLIENT4.into(), SERVER4.into())
    };
    let listener = net.in_ns(&net.ns_server, || TcpListener::bind((s, 0)).unwrap());
    let port = listener.local_addr().unwrap().port();
    let near = Watch::start(
        BIN,
        &net.ns_client,
        &[
            "--iface",
            &net.veth_client,
            "--interval",
            "1",
            "--attach",
            attach,
        ],
    );
    let far = Watch::start(
        BIN,
        &net.ns_server,
        &[
            "--iface",
            &net.veth_server,
            "--interval",
            "1",
            "--attach",
            attach,
        ],
    );
    let server = receive_all(listener);
    // Lose the 5th and the 20th data segment: each has later segments behind it, so SACK
    // or the RTO sends it again, once.
    net.client_drops().set(&[5, 20]);
    let r0 = nstat(&net.ns_client, "TcpRetransSegs");
    let cport = net.in_ns(&net.ns_client, || {
        let mut t = TcpStream::connect(SocketAddr::new(s, port)).unwrap();
        t.write_all(&vec![3u8; UP]).unwrap();
        t.shutdown(Shutdown::Write).unwrap();
        let mut rest = Vec::new();
        t.read_to_end(&mut rest).unwrap();
        t.local_addr().unwrap().port()
    });
    server.join().unwrap();
    net.settle();
    let sent = nstat(&net.ns_client, "TcpRetransSegs") - r0;
    let (near, far) = (near.stop(), far.stop());
    near.assert_conserved();
    far.assert_conserved();
    let drops = net.client_drops();
    let (lost, lost_bytes) = (
        drops.dropped.load(Relaxed),
        drops.dropped_bytes.load(Relaxed),
    );
    assert_eq!(lost, 2, "the line lost its two segments");

    let retrans = |w: &testkit::watch::Windows, dir: &str, what: &str| -> u64 {
        w.flows()
            .filter(|f| {
                f["proto"] == 6
                    && f["src"] == c.to_string()
                    && f["src_port"] == cport
                    && f["dst_port"] == port
            })
            .map(|f| f["tcp"][dir]["retrans"][what].as_u64().unwrap())
            .sum()
    };
    let ctx = format!("v6 {v6} {attach}: client sent {sent} again, the line lost {lost}");
    eprintln!("{ctx}");
    assert!(sent >= lost, "{ctx}");
    assert_eq!(
        retrans(&near, "fwd", "packets"),
        sent,
        "sender's side: {ctx}"
    );
    assert_eq!(retrans(&near, "rev", "packets"), 0, "{ctx}");
    if sent == lost {
        assert_eq!(retrans(&near, "fwd", "bytes"), lost_bytes, "{ctx}");
        // Behind later data at the receiver too.
        assert_eq!(
            retrans(&far, "fwd", "packets"),
            lost,
            "receiver's side: {ctx}"
        );
        assert_eq!(retrans(&far, "fwd", "bytes"), lost_bytes, "{ctx}");
    }
}

/// A connect whose SYNs the line loses: the client gives up after its SYN and two retries,
/// and once the flow leaves the table the agent reports it unanswered, once, with as many
/// SYN retries as the client's `nstat` TcpRetransSegs (which counts resent SYNs).
fn unanswered(v6: bool) {
    let net = DelayNet::new(Duration::from_millis(1));
    let s: IpAddr = if v6 { SERVER6.into() } else { SERVER4.into() };
    let listener = net.in_ns(&net.ns_server, || TcpListener::bind((s, 0)).unwrap());
    let port = listener.local_addr().unwrap().port();
    let w = Watch::start(
        BIN,
        &net.ns_client,
        &[
            "--iface",
            &net.veth_client,
            "--interval",
            "1",
            "--inactive-timeout",
            "2",
        ],
    );
    net.client_drops().syns.store(true, Relaxed);
    let r0 = nstat(&net.ns_client, "TcpRetransSegs");
    // SYNs leave at 0, 1 and 3 s (initial RTO 1 s, doubling); give up at 4 s.
    let e = net.in_ns(&net.ns_client, || {
        TcpStream::connect_timeout(&SocketAddr::new(s, port), Duration::from_millis(4000))
    });
    assert!(e.is_err(), "the SYNs were lost");
    let resent = nstat(&net.ns_client, "TcpRetransSegs") - r0;
    // Idle 2 s after the last SYN, then the next drain removes it.
    std::thread::sleep(Duration::from_millis(3500));
    let got = w.stop();
    got.assert_conserved();
    drop(listener);
    let ours: Vec<&serde_json::Value> = got
        .flows()
        .filter(|f| f["proto"] == 6 && f["dst_port"] == port)
        .collect();
    let ctx = format!("v6 {v6}: {resent} SYNs resent: {ours:#?}");
    let decided: Vec<&str> = ours
        .iter()
        .filter(|f| f["tcp"]["decided"] == true)
        .map(|f| f["tcp"]["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(decided, ["unanswered"], "{ctx}");
    let last = ours.last().unwrap();
    assert_eq!(last["tcp"]["syn_retries"], resent, "{ctx}");
    assert!(resent >= 2, "{ctx}");
    let packets: u64 = ours
        .iter()
        .map(|f| f["packets_fwd"].as_u64().unwrap())
        .sum();
    assert_eq!(packets, resent + 1, "every SYN counted once: {ctx}");
}

/// Accepts one connection and reads it to its end: all `UP` bytes must arrive.
fn receive_all(listener: TcpListener) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap();
        assert_eq!(got.len(), UP);
    })
}

/// Connections a gateway forwards: on each of its two interfaces (each its own flow) a
/// connect to a closed port is refused once, and the two segments the client's line loses
/// are counted as retransmitted once each, with their bytes (at the interface facing the
/// client they fill a hole behind later data; the one facing the server sends them out).
#[test]
fn forwarded_refusals_and_retransmissions() {
    let net = GatewayNet::new(Duration::from_millis(1), Duration::from_millis(1));
    let listener = net.in_ns(&net.ns_server, || {
        TcpListener::bind((GW_SERVER4, 0)).unwrap()
    });
    let port = listener.local_addr().unwrap().port();
    let gone = net.in_ns(&net.ns_server, || {
        TcpListener::bind((GW_SERVER4, 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    });
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
    let e = net.in_ns(&net.ns_client, || {
        TcpStream::connect_timeout(
            &SocketAddr::new(GW_SERVER4.into(), gone),
            Duration::from_secs(5),
        )
    });
    assert_eq!(e.unwrap_err().kind(), std::io::ErrorKind::ConnectionRefused);
    let server = receive_all(listener);
    net.client_drops().set(&[5, 20]);
    let r0 = nstat(&net.ns_client, "TcpRetransSegs");
    let cport = net.in_ns(&net.ns_client, || {
        let mut t = TcpStream::connect(SocketAddr::new(GW_SERVER4.into(), port)).unwrap();
        t.write_all(&vec![4u8; UP]).unwrap();
        t.shutdown(Shutdown::Write).unwrap();
        let mut rest = Vec::new();
        t.read_to_end(&mut rest).unwrap();
        t.local_addr().unwrap().port()
    });
    server.join().unwrap();
    net.settle();
    let sent = nstat(&net.ns_client, "TcpRetransSegs") - r0;
    let got = w.stop();
    got.assert_conserved();
    let drops = net.client_drops();
    let (lost, lost_bytes) = (
        drops.dropped.load(Relaxed),
        drops.dropped_bytes.load(Relaxed),
    );
    let ifindex = |dev: &str| net.ifindex(&net.ns_gw, dev) as u64;
    let ctx = format!("client resent {sent}, line lost {lost}\n{}", got.stderr);
    assert_eq!(lost, 2, "{ctx}");
    for dev in [&net.gw_client, &net.gw_server] {
        let on = |f: &&serde_json::Value| {
            f["proto"] == 6 && f["src"] == GW_CLIENT4.to_string() && f["ifindex"] == ifindex(dev)
        };
        let refused: Vec<&str> = got
            .flows()
            .filter(on)
            .filter(|f| f["dst_port"] == gone && f["tcp"]["decided"] == true)
            .map(|f| f["tcp"]["outcome"].as_str().unwrap())
            .collect();
        assert_eq!(refused, ["refused"], "{dev}: {ctx}");
        let rtx = |what: &str| -> u64 {
            got.flows()
                .filter(on)
                .filter(|f| f["src_port"] == cport && f["dst_port"] == port)
                .map(|f| f["tcp"]["fwd"]["retrans"][what].as_u64().unwrap())
                .sum()
        };
        if sent == lost {
            assert_eq!(
                (rtx("packets"), rtx("bytes")),
                (lost, lost_bytes),
                "{dev}: {ctx}"
            );
        } else {
            assert!(rtx("packets") >= lost, "{dev}: {ctx}");
        }
    }
}

#[test]
fn unanswered_ipv4() {
    unanswered(false);
}

#[test]
fn unanswered_ipv6() {
    unanswered(true);
}

#[test]
fn retransmissions_ipv4_tc() {
    retransmissions(false, "tc");
}

#[test]
fn retransmissions_ipv6_xdp() {
    retransmissions(true, "xdp");
}
