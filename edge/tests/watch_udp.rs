//! `edgeflow watch` against real UDP traffic between two test namespaces: exact counts.

use std::net::IpAddr;
use testkit::{traffic::udp_exchange as exchange, watch::Watch, TestNet, A4, A6, B4, B6};

const BIN: &str = env!("CARGO_BIN_EXE_edgeflow");

fn udp_exact(a: IpAddr, b: IpAddr, ip_hdr: u64, attach: &str) {
    let net = TestNet::new();
    net.static_neighbours();
    let w = Watch::start(
        BIN,
        &net.ns_b,
        &[
            "--iface",
            &net.veth_b,
            "--interval",
            "1",
            "--attach",
            attach,
        ],
    );
    let sizes: Vec<usize> = (0..50).map(|i| 10 + i * 23).collect();
    let (sport, dport) = exchange(&net, a, b, &sizes, 100);
    let got = w.stop();
    got.assert_conserved();
    let s = got.sum(|f| {
        f["proto"] == 17
            && f["src"] == a.to_string()
            && f["dst"] == b.to_string()
            && f["src_port"] == sport
            && f["dst_port"] == dport
    });
    let want_fwd: u64 = sizes.iter().map(|&n| n as u64 + 8 + ip_hdr).sum();
    assert_eq!(s.packets_fwd, 50, "{}", got.stderr);
    assert_eq!(s.bytes_fwd, want_fwd);
    assert_eq!(s.packets_rev, 50);
    assert_eq!(s.bytes_rev, 50 * (100 + 8 + ip_hdr));
}

#[test]
fn udp_ipv4_exact_tc() {
    udp_exact(A4.into(), B4.into(), 20, "tc");
}

#[test]
fn udp_ipv6_exact_tc() {
    udp_exact(A6.into(), B6.into(), 40, "tc");
}

#[test]
fn udp_ipv4_exact_xdp() {
    udp_exact(A4.into(), B4.into(), 20, "xdp");
}

#[test]
fn udp_ipv6_exact_xdp() {
    udp_exact(A6.into(), B6.into(), 40, "xdp");
}

/// The agent runs here and watches an interface inside a test namespace (`--netns`).
#[test]
fn udp_ipv4_exact_from_outside_the_namespace() {
    let net = TestNet::new();
    net.static_neighbours();
    let w = Watch::start_with_netns(BIN, &net.ns_b, &["--iface", &net.veth_b, "--interval", "1"]);
    let (sport, dport) = exchange(&net, A4.into(), B4.into(), &[100, 200, 300], 50);
    let got = w.stop();
    got.assert_conserved();
    let s = got.sum(|f| f["src_port"] == sport && f["dst_port"] == dport);
    assert_eq!((s.packets_fwd, s.bytes_fwd), (3, 600 + 3 * 28));
    assert_eq!((s.packets_rev, s.bytes_rev), (3, 3 * (50 + 28)));
}
