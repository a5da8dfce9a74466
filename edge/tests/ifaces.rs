//! The watched interfaces change under a running agent: one goes down and up again, another
//! is deleted; the agent reports each, keeps counting what is left exactly, and stops with a
//! clear error (exit 1) once every watched interface is gone.

use std::{net::IpAddr, time::Duration};
use testkit::{traffic::udp_exchange, watch::Watch, TestNet, A4, B4};

const BIN: &str = env!("CARGO_BIN_EXE_edgeflow");

/// A veth pair of our own inside ns_b (both ends there, up), for an interface to delete.
fn extra_pair(net: &TestNet, name: &str) {
    for args in [
        vec![
            "ip", "link", "add", name, "type", "veth", "peer", "name", "efpeer0",
        ],
        vec!["ip", "link", "set", name, "up"],
        vec!["ip", "link", "set", "efpeer0", "up"],
    ] {
        let o = net.exec(&net.ns_b, &args);
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
}

fn sh_ok(net: &TestNet, args: &[&str]) {
    let o = net.exec(&net.ns_b, args);
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Sleeps through `n` one-second windows, so the agent has looked at its interfaces.
fn windows(n: u32) {
    std::thread::sleep(Duration::from_millis(1000 * n as u64 + 300));
}

#[test]
fn down_up_and_deleted_are_reported_and_the_rest_counted() {
    let net = TestNet::new();
    net.static_neighbours();
    extra_pair(&net, "efgone0");
    let w = Watch::start(
        BIN,
        &net.ns_b,
        &[
            "--iface",
            &net.veth_b,
            "--iface",
            "efgone0",
            "--interval",
            "1",
            "--attach",
            "tc",
        ],
    );
    let (a, b) = (IpAddr::from(A4), IpAddr::from(B4));
    let before = udp_exchange(&net, a, b, &[100, 200], 50);
    sh_ok(&net, &["ip", "link", "set", &net.veth_b, "down"]);
    windows(2);
    sh_ok(&net, &["ip", "link", "set", &net.veth_b, "up"]);
    // Carrier comes back once both ends are up (the peer stayed up); the neighbour entries
    // went with the link.
    windows(1);
    net.static_neighbours();
    let after = udp_exchange(&net, a, b, &[300, 400, 500], 60);
    sh_ok(&net, &["ip", "link", "del", "efgone0"]);
    windows(2);
    let got = w.stop();
    let err = &got.stderr;
    assert!(err.contains(&format!("{} is down", net.veth_b)), "{err}");
    assert!(
        err.contains(&format!("{} is up again", net.veth_b)),
        "{err}"
    );
    assert!(err.contains("efgone0 was deleted"), "{err}");
    assert!(!err.contains("every watched interface is gone"), "{err}");
    got.assert_conserved();
    for ((sport, dport), sizes, reply) in [
        (before, &[100u64, 200][..], 50u64),
        (after, &[300, 400, 500][..], 60),
    ] {
        let s = got.sum(|f| f["src_port"] == sport && f["dst_port"] == dport);
        let n = sizes.len() as u64;
        assert_eq!(
            (s.packets_fwd, s.bytes_fwd, s.packets_rev, s.bytes_rev),
            (n, sizes.iter().sum::<u64>() + n * 28, n, n * (reply + 28)),
            "{err}"
        );
    }
    // It kept printing windows after the deletion.
    let last_ms = got.windows.last().unwrap()["window_end_ms"]
        .as_u64()
        .unwrap();
    let first_ms = got.windows[0]["window_start_ms"].as_u64().unwrap();
    assert!(last_ms - first_ms >= 6000, "{} windows", got.windows.len());
}

#[test]
fn the_last_interface_deleted_is_a_clear_error() {
    let net = TestNet::new();
    extra_pair(&net, "efgone1");
    let w = Watch::start(
        BIN,
        &net.ns_b,
        &["--iface", "efgone1", "--interval", "1", "--attach", "tc"],
    );
    sh_ok(&net, &["ip", "link", "del", "efgone1"]);
    let (status, got) = w.exit_status();
    assert_eq!(status.code(), Some(1), "{}", got.stderr);
    assert!(got.stderr.contains("efgone1 was deleted"), "{}", got.stderr);
    assert!(
        got.stderr
            .contains("every watched interface is gone (efgone1); nothing left to count"),
        "{}",
        got.stderr
    );
    assert!(got.stderr.contains("edgeflow: detached"), "{}", got.stderr);
}
