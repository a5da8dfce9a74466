//! End to end with the real agent: known UDP traffic between two test namespaces →
//! `edgeflow run` (root namespace, `--netns`, its provisioned login over TLS) → Mosquitto (as
//! scripts/provision.sh sets it up) → collector → JSON API. Totals per
//! device and per flow equal what was sent; a collector killed mid-run loses nothing and
//! stores nothing twice.

use std::{
    collections::BTreeMap,
    net::{SocketAddr, UdpSocket},
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};
use testkit::{agent::Agent, TestNet, A4, B4};
use testkit::{collector::*, provision::*};

/// IPv4 + UDP headers.
const HDR: u64 = 28;

/// The agent binary of this workspace, built in the same profile as this test (cargo builds
/// only this package's binaries for its tests).
fn agent_bin() -> PathBuf {
    let profile_dir = testkit::profile_dir();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    // What cargo set for this test (CARGO_MANIFEST_DIR above all) would make the build see
    // a changed environment and rebuild dependencies.
    for (k, _) in std::env::vars() {
        if [
            "CARGO_PKG_",
            "CARGO_MANIFEST_",
            "CARGO_CRATE_",
            "CARGO_BIN_",
            "CARGO_PRIMARY_",
        ]
        .iter()
        .any(|p| k.starts_with(p))
            || k == "CARGO_TARGET_TMPDIR"
        {
            cmd.env_remove(k);
        }
    }
    cmd.args(["build", "--quiet", "-p", "edgeflow", "--bin", "edgeflow"]);
    if profile_dir.ends_with("release") {
        cmd.arg("--release");
    }
    let status = cmd.status().expect("running cargo build -p edgeflow");
    assert!(status.success(), "building the agent failed");
    profile_dir.join("edgeflow")
}

#[test]
fn known_traffic_through_agent_broker_and_collector() {
    let bin = agent_bin();
    let net = TestNet::new();
    net.static_neighbours();
    net.ipv4_only();
    // The broker as shipped: TLS, the device's own login, the ACL, persistence.
    let broker = provisioned_broker(&[("lab", "e2e-1")]);
    let mut c = secured_collector(&broker);
    c.wait_subscribed();
    let conf = broker.dir().join("devices/lab/e2e-1/edgeflow.toml");
    let agent = Agent::start(
        bin.to_str().unwrap(),
        &[
            "--config",
            conf.to_str().unwrap(),
            "--iface",
            &net.veth_b,
            "--netns",
            &net.ns_b,
            "--interval",
            "1",
        ],
    );

    // Four UDP flows A → B, different sizes; nobody reads, the hooks count before that.
    let rx: Vec<UdpSocket> = net.in_ns(&net.ns_b, || {
        (0..4)
            .map(|_| UdpSocket::bind(SocketAddr::new(B4.into(), 0)).unwrap())
            .collect()
    });
    let tx: Vec<UdpSocket> = net.in_ns(&net.ns_a, || {
        (0..4)
            .map(|_| UdpSocket::bind(SocketAddr::new(A4.into(), 0)).unwrap())
            .collect()
    });
    let mut sent: BTreeMap<(u16, u16), (u64, u64)> = BTreeMap::new();
    let start = Instant::now();
    let mut restarted = false;
    for round in 0..40usize {
        for i in 0..4 {
            let len = 40 + 113 * i + round % 17;
            let to = rx[i].local_addr().unwrap();
            tx[i].send_to(&vec![0x5a; len], to).unwrap();
            let e = sent
                .entry((tx[i].local_addr().unwrap().port(), to.port()))
                .or_default();
            e.0 += 1;
            e.1 += len as u64 + HDR;
        }
        std::thread::sleep(Duration::from_millis(100));
        if round == 20 {
            // Mid-run, hard: the broker keeps the session's messages for the next start.
            c.kill();
            std::thread::sleep(Duration::from_millis(1500));
            c.restart();
            restarted = true;
        }
    }
    assert!(restarted && start.elapsed() < Duration::from_secs(60));
    let exit = agent.stop();
    assert!(exit.status.success(), "{}", exit.stderr);

    let (packets, bytes) = sent.values().fold((0, 0), |a, v| (a.0 + v.0, a.1 + v.1));
    // The agent says "offline" after its last summary was acknowledged.
    let devices = c.wait_for("/api/devices", Duration::from_secs(30), |v| {
        v["devices"]
            .as_array()
            .and_then(|d| d.first())
            .is_some_and(|d| d["state"] == "offline" && d["totals"]["bytes"] == bytes)
    });
    std::thread::sleep(Duration::from_millis(500));
    let d = &c.json("/api/devices")["devices"][0];
    assert_eq!(d["id"], "lab/e2e-1");
    assert_eq!(d["gaps"], 0, "{d}");
    assert_eq!(d["totals"]["packets"], packets, "{devices}");
    assert_eq!(d["totals"]["bytes"], bytes);

    let flows = c.json("/api/flows?proto=udp&limit=100");
    assert_eq!(flows["matching"], sent.len() as u64, "{flows}");
    for ((sport, dport), (p, b)) in &sent {
        let f = flows["flows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["src_port"] == *sport && f["dst_port"] == *dport)
            .unwrap_or_else(|| panic!("flow {sport} -> {dport} missing: {flows}"));
        assert_eq!(f["src"], A4.to_string());
        assert_eq!(f["dst"], B4.to_string());
        assert_eq!(
            (&f["fwd"]["packets"], &f["fwd"]["bytes"]),
            (&(*p).into(), &(*b).into())
        );
        assert_eq!(f["rev"]["packets"], 0);
    }

    // Every window once: as many rows as distinct (device, boot, seq, part), seqs without gaps.
    let db = rusqlite::Connection::open(c.dir.join("collector.db")).unwrap();
    let (rows, distinct, max_seq): (i64, i64, i64) = db
        .query_row(
            "SELECT COUNT(*), (SELECT COUNT(*) FROM (SELECT DISTINCT device, boot_id, seq, part
                                                     FROM summaries)), MAX(seq)
             FROM summaries",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!(rows, distinct);
    let windows: i64 = db
        .query_row("SELECT COUNT(*) FROM summaries WHERE part = 0", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(windows, max_seq + 1, "no window missing");
    assert!(windows >= 4, "{windows} windows");
}

/// The collector's embedded broker (rumqttd) with a real agent: it takes the agent's client id
/// (`site:device`; rumqttd refused `lab/box-1` and then panicked its listener thread) and the
/// collector stores exactly what was sent.
#[test]
fn agent_through_the_embedded_broker() {
    let bin = agent_bin();
    let net = TestNet::new();
    net.static_neighbours();
    net.ipv4_only();
    let port = testkit::mosquitto::free_port();
    let listen = format!("127.0.0.1:{port}");
    let c = Collector::with_args(&["--embedded-broker", &listen]);
    c.wait_subscribed();
    let url = format!("mqtt://{listen}");
    let agent = Agent::start(
        bin.to_str().unwrap(),
        &[
            "--iface",
            &net.veth_b,
            "--netns",
            &net.ns_b,
            "--broker",
            &url,
            "--site",
            "lab",
            "--device",
            "box-1",
            "--interval",
            "1",
        ],
    );
    let rx = net.in_ns(&net.ns_b, || {
        UdpSocket::bind(SocketAddr::new(B4.into(), 0)).unwrap()
    });
    let tx = net.in_ns(&net.ns_a, || {
        UdpSocket::bind(SocketAddr::new(A4.into(), 0)).unwrap()
    });
    let (mut packets, mut bytes) = (0u64, 0u64);
    for round in 0..25usize {
        let len = 60 + 7 * round;
        tx.send_to(&vec![0xa5; len], rx.local_addr().unwrap())
            .unwrap();
        packets += 1;
        bytes += len as u64 + HDR;
        std::thread::sleep(Duration::from_millis(100));
    }
    let exit = agent.stop();
    assert!(exit.status.success(), "{}", exit.stderr);
    let devices = c.wait_for("/api/devices", Duration::from_secs(30), |v| {
        v["devices"]
            .as_array()
            .and_then(|d| d.first())
            .is_some_and(|d| d["state"] == "offline" && d["totals"]["bytes"] == bytes)
    });
    let d = &devices["devices"][0];
    assert_eq!(d["id"], "lab/box-1");
    assert_eq!(d["gaps"], 0, "{d}");
    assert_eq!(d["totals"]["packets"], packets, "{devices}");
    let log = c.log();
    assert!(
        !log.contains("Invalid client_id") && !log.contains("panicked"),
        "{log}"
    );
}
