//! `edgeflow watch` against real UDP traffic between two test namespaces: exact counts.

use std::net::IpAddr;
use testkit::{
    traffic::{udp_exchange as exchange, udp_overhead},
    watch::Watch,
    TestNet, A4, A6, B4, B6,
};

const BIN: &str = env!("CARGO_BIN_EXE_edgeflow");

/// 50 datagrams of known sizes each way, over IPv4 and then IPv6, one agent watching both.
fn udp_exact(attach: &str) {
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
    let pairs = [(IpAddr::from(A4), IpAddr::from(B4)), (A6.into(), B6.into())];
    let ports: Vec<(u16, u16)> = pairs
        .iter()
        .map(|&(a, b)| exchange(&net, a, b, &sizes, 100))
        .collect();
    let got = w.stop();
    got.assert_conserved();
    for ((a, b), (sport, dport)) in pairs.into_iter().zip(ports) {
        let s = got.sum(|f| {
            f["proto"] == 17
                && f["src"] == a.to_string()
                && f["dst"] == b.to_string()
                && f["src_port"] == sport
                && f["dst_port"] == dport
        });
        let want_fwd: u64 = sizes.iter().map(|&n| n as u64 + udp_overhead(a)).sum();
        assert_eq!(
            (s.packets_fwd, s.bytes_fwd, s.packets_rev, s.bytes_rev),
            (50, want_fwd, 50, 50 * (100 + udp_overhead(a))),
            "{a} → {b}\n{}",
            got.stderr
        );
    }
}

#[test]
fn udp_ipv4_ipv6_exact_tc() {
    udp_exact("tc");
}

#[test]
fn udp_ipv4_ipv6_exact_xdp() {
    udp_exact("xdp");
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
    // The start-up line tells the operator what the table costs in kernel memory.
    let line = got
        .stderr
        .lines()
        .find(|l| l.contains("flow table of 32768 slots for 16384 flows (IPv4 and IPv6)"))
        .unwrap_or_else(|| panic!("no table line in:\n{}", got.stderr));
    assert!(line.ends_with("MiB of kernel memory"), "{line}");
}

/// Two agents on one interface (TC, ingress and egress): both count every datagram. The
/// programs return no verdict (TC_ACT_UNSPEC), so a program attached after ours still runs:
/// with TC_ACT_OK the first agent's programs would end the TCX chain and the second — or an
/// operator's firewall attached after edgeflow — would see nothing.
#[test]
fn a_program_attached_after_ours_still_runs() {
    let net = TestNet::new();
    net.static_neighbours();
    let args = ["--iface", &net.veth_b, "--interval", "1", "--attach", "tc"];
    let first = Watch::start(BIN, &net.ns_b, &args);
    let second = Watch::start(BIN, &net.ns_b, &args);
    let (sport, dport) = exchange(&net, A4.into(), B4.into(), &[100, 200, 300], 50);
    for got in [second.stop(), first.stop()] {
        got.assert_conserved();
        let s = got.sum(|f| f["src_port"] == sport && f["dst_port"] == dport);
        assert_eq!(
            (s.packets_fwd, s.bytes_fwd, s.packets_rev, s.bytes_rev),
            (3, 600 + 3 * 28, 3, 3 * (50 + 28)),
            "{}",
            got.stderr
        );
    }
}
