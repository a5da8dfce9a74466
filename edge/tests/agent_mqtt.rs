//! `edgeflow run` against a real Mosquitto, with known UDP traffic between two test
//! namespaces: what a QoS 1 subscriber receives adds up exactly to what was sent, also across
//! a broker outage and an agent restart with a spool file.

use shared::wire::{self, Count, Summary};
use std::{
    collections::{BTreeMap, HashMap, HashSet},
    net::{Ipv4Addr, UdpSocket},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};
use testkit::{agent::Agent, mosquitto::Mosquitto, subscriber::Subscriber, TestNet, A4, B4};

const BIN: &str = env!("CARGO_BIN_EXE_edgeflow");
const FLOWS: &str = "edgeflow/v1/+/+/flows";
/// UDP + IPv4 headers: what each datagram adds to the IP length.
const HDR: u64 = 28;

/// `n` UDP flows from A to B: senders in ns_a, bound receivers in ns_b.
struct Flows {
    tx: Vec<UdpSocket>,
    rx: Vec<UdpSocket>,
    /// (packets, bytes) sent per flow, keyed by (src port, dst port).
    sent: BTreeMap<(u16, u16), Count>,
}

impl Flows {
    fn new(net: &TestNet, n: usize) -> Flows {
        Flows::between(net, n, A4, B4)
    }

    /// `n` flows from `a` (in ns_a) to `b` (in ns_b).
    fn between(net: &TestNet, n: usize, a: Ipv4Addr, b: Ipv4Addr) -> Flows {
        let rx = net.udp_sockets(&net.ns_b, b.into(), n);
        let tx = net.udp_sockets(&net.ns_a, a.into(), n);
        Flows {
            tx,
            rx,
            sent: BTreeMap::new(),
        }
    }

    /// One datagram of `len` payload bytes on flow `i`.
    fn send(&mut self, i: usize, len: usize) {
        let to = self.rx[i].local_addr().unwrap();
        self.tx[i].send_to(&vec![0x5a; len], to).unwrap();
        let key = (self.tx[i].local_addr().unwrap().port(), to.port());
        let c = self.sent.entry(key).or_default();
        c.add(&Count {
            packets: 1,
            bytes: len as u64 + HDR,
        });
    }

    fn total(&self) -> Count {
        let mut t = Count::default();
        for c in self.sent.values() {
            t.add(c);
        }
        t
    }
}

/// What the summaries of one device add up to.
#[derive(Default)]
struct Sums {
    per_flow: BTreeMap<(u16, u16), Count>,
    /// Sum of the window totals (part 0 of each window).
    totals: Count,
    /// Sum of every record, other and overflow: must equal `totals`.
    accounted: Count,
    /// seq numbers per boot.
    seqs: HashMap<u64, Vec<u64>>,
}

fn add_up(all: &[Summary]) -> Sums {
    let mut s = Sums::default();
    for m in all {
        if m.part == 0 {
            s.totals.add(&m.totals);
            s.seqs.entry(m.boot_id).or_default().push(m.seq);
        }
        s.accounted.add(&m.other);
        s.accounted.add(&m.overflow);
        for f in &m.flows {
            s.accounted.add(&f.fwd);
            s.accounted.add(&f.rev);
            let c = s.per_flow.entry((f.src_port, f.dst_port)).or_default();
            c.add(&f.fwd);
            c.add(&f.rev);
        }
    }
    s
}

/// Every window of every boot, none missing, every part there, first arrivals in order.
fn assert_complete_and_ordered(all: &[Summary]) {
    let mut parts: HashMap<(u64, u64), (u16, HashSet<u16>)> = HashMap::new();
    let mut last: HashMap<u64, (u64, u16)> = HashMap::new();
    for m in all {
        let e = parts
            .entry((m.boot_id, m.seq))
            .or_insert((m.parts, HashSet::new()));
        e.1.insert(m.part);
        if let Some(prev) = last.insert(m.boot_id, (m.seq, m.part)) {
            assert!(
                (m.seq, m.part) > prev,
                "boot {:x}: ({}, {}) arrived after ({}, {})",
                m.boot_id,
                m.seq,
                m.part,
                prev.0,
                prev.1
            );
        }
    }
    let boots: HashSet<u64> = all.iter().map(|m| m.boot_id).collect();
    for b in boots {
        let max = all
            .iter()
            .filter(|m| m.boot_id == b)
            .map(|m| m.seq)
            .max()
            .unwrap();
        for seq in 0..=max {
            let (n, got) = parts
                .get(&(b, seq))
                .unwrap_or_else(|| panic!("boot {b:x}: window {seq} missing"));
            assert_eq!(got.len(), *n as usize, "boot {b:x}: window {seq} parts");
        }
    }
}

fn agent_args<'a>(net: &'a TestNet, broker: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    agent_args_every(net, broker, "1", extra)
}

fn agent_args_every<'a>(
    net: &'a TestNet,
    broker: &'a str,
    interval: &'a str,
    extra: &[&'a str],
) -> Vec<&'a str> {
    let mut a = vec![
        "--iface",
        &net.veth_b,
        "--netns",
        &net.ns_b,
        "--broker",
        broker,
        "--device",
        "t1",
        "--site",
        "lab",
        "--interval",
        interval,
    ];
    a.extend_from_slice(extra);
    a
}

#[test]
fn summaries_add_up_exactly_per_flow_and_in_total() {
    let net = TestNet::quiet();
    let broker = Mosquitto::start();
    let sub = Subscriber::start(broker.port, "edgeflow/#");
    let url = broker.url();
    let agent = Agent::start(BIN, &agent_args(&net, &url, &[]));
    let mut flows = Flows::new(&net, 6);
    // Three windows' worth of traffic, of different sizes per flow.
    for round in 0..30 {
        for i in 0..6 {
            flows.send(i, 20 + 37 * i + round);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let exit = agent.stop();
    assert!(exit.status.success(), "{}", exit.stderr);
    assert!(
        sub.wait_for(Duration::from_secs(10), |m| m
            .iter()
            .any(|r| r.topic.ends_with("/status") && r.payload == b"offline")),
        "no offline status"
    );
    sub.wait_quiet(Duration::from_millis(300), Duration::from_secs(5));

    let all = sub.summaries();
    assert!(all.len() >= 3, "{} summaries\n{}", all.len(), exit.stderr);
    assert_complete_and_ordered(&all);
    assert!(all
        .iter()
        .all(|s| s.device == "t1" && s.site == "lab" && s.sample_every == 1));
    let sums = add_up(&all);
    assert_eq!(
        sums.accounted, sums.totals,
        "records + other + overflow == totals"
    );
    assert_eq!(sums.totals, flows.total(), "totals == what was sent");
    for (k, want) in &flows.sent {
        assert_eq!(sums.per_flow.get(k), Some(want), "flow {k:?}");
    }
    assert_eq!(sums.seqs.len(), 1, "one boot");
    let status: Vec<Vec<u8>> = sub
        .messages()
        .into_iter()
        .filter(|m| m.topic == "edgeflow/v1/lab/t1/status")
        .map(|m| m.payload)
        .collect();
    assert_eq!(status.first().map(Vec::as_slice), Some(&b"online"[..]));
    assert_eq!(status.last().map(Vec::as_slice), Some(&b"offline"[..]));
}

/// Sends round-robin over all flows every 50 ms until `stop`, bounded to `max`.
fn traffic(mut flows: Flows, stop: Arc<AtomicBool>, max: Duration) -> Flows {
    let start = Instant::now();
    let mut round = 0usize;
    while !stop.load(Ordering::SeqCst) && start.elapsed() < max {
        for i in 0..flows.tx.len() {
            flows.send(i, 30 + (round * 7 + i * 101) % 1200);
        }
        round += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
    flows
}

#[test]
fn broker_outage_of_30s_loses_nothing() {
    let net = TestNet::quiet();
    let mut broker = Mosquitto::start();
    let sub = Subscriber::start(broker.port, FLOWS);
    let url = broker.url();
    // top-k 2 of 5 flows: "other" carries the rest, totals must still be exact.
    let agent = Agent::start(BIN, &agent_args(&net, &url, &["--top-k", "2"]));
    let flows = Flows::new(&net, 5);
    let stop = Arc::new(AtomicBool::new(false));
    let sender = {
        let stop = stop.clone();
        std::thread::spawn(move || traffic(flows, stop, Duration::from_secs(90)))
    };
    std::thread::sleep(Duration::from_secs(3));
    broker.stop();
    std::thread::sleep(Duration::from_secs(32));
    // Pause the agent while the broker comes back, so the subscriber is subscribed again
    // before the agent can replay (the broker keeps no state across the restart).
    let subs = sub.subacks();
    agent.signal(libc::SIGSTOP);
    broker.resume();
    sub.wait_subscribed(subs);
    agent.signal(libc::SIGCONT);
    std::thread::sleep(Duration::from_secs(4));
    stop.store(true, Ordering::SeqCst);
    let flows = sender.join().unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let exit = agent.stop();
    assert!(exit.status.success(), "{}", exit.stderr);
    sub.wait_quiet(Duration::from_millis(500), Duration::from_secs(10));

    let all = sub.summaries();
    assert!(all.len() >= 35, "{} windows\n{}", all.len(), exit.stderr);
    assert_complete_and_ordered(&all);
    let sums = add_up(&all);
    assert_eq!(sums.accounted, sums.totals);
    assert_eq!(sums.totals, flows.total(), "{}", exit.stderr);
    assert!(
        all.iter().any(|s| s.other_flows > 0),
        "top-k folded nothing"
    );
    // The spool reported its depth while the broker was away.
    assert!(all.iter().any(|s| s.health.spool_depth >= 20));
    assert!(all.iter().all(|s| s.health.spool_dropped == 0));
}

#[test]
fn spool_file_carries_summaries_across_an_agent_restart() {
    let net = TestNet::quiet();
    let mut broker = Mosquitto::start();
    let sub = Subscriber::start(broker.port, FLOWS);
    let url = broker.url();
    let spool = std::env::temp_dir().join(testkit::unique("efspool"));
    let spool_s = spool.to_str().unwrap().to_string();
    broker.stop();
    // First run: the broker is away the whole time; everything goes to the spool file.
    let first = Agent::start(BIN, &agent_args(&net, &url, &["--spool-file", &spool_s]));
    let mut flows = Flows::new(&net, 3);
    for round in 0..25 {
        for i in 0..3 {
            flows.send(i, 100 + round * 3 + i);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let exit = first.stop();
    assert!(exit.status.success(), "{}", exit.stderr);
    assert!(
        exit.stderr.contains("stay in the spool file"),
        "{}",
        exit.stderr
    );
    assert!(std::fs::metadata(&spool).unwrap().len() > 0);

    let subs = sub.subacks();
    broker.resume();
    sub.wait_subscribed(subs);
    let second = Agent::start(BIN, &agent_args(&net, &url, &["--spool-file", &spool_s]));
    for i in 0..3 {
        flows.send(i, 500);
    }
    std::thread::sleep(Duration::from_millis(2500));
    let exit2 = second.stop();
    assert!(exit2.status.success(), "{}", exit2.stderr);
    assert!(
        exit2.stderr.contains("from the last run"),
        "{}",
        exit2.stderr
    );
    sub.wait_quiet(Duration::from_millis(300), Duration::from_secs(5));

    let all = sub.summaries();
    assert_complete_and_ordered(&all);
    let sums = add_up(&all);
    assert_eq!(sums.seqs.len(), 2, "windows of both runs arrived");
    assert_eq!(sums.accounted, sums.totals);
    assert_eq!(sums.totals, flows.total());
    for (k, want) in &flows.sent {
        assert_eq!(sums.per_flow.get(k), Some(want), "flow {k:?}");
    }
    // Everything was acknowledged: the file is empty again.
    assert_eq!(std::fs::metadata(&spool).unwrap().len(), 0);
    let _ = std::fs::remove_file(&spool);
}

#[test]
fn a_full_spool_drops_the_oldest_and_says_so() {
    let net = TestNet::quiet();
    let mut broker = Mosquitto::start();
    let sub = Subscriber::start(broker.port, FLOWS);
    let url = broker.url();
    broker.stop();
    // A spool of two small messages' worth, windows every 0.25 s: it must overflow.
    let agent = Agent::start(
        BIN,
        &agent_args_every(
            &net,
            &url,
            "0.25",
            &["--spool-bytes", "2048", "--max-message", "1024"],
        ),
    );
    let mut flows = Flows::new(&net, 3);
    for round in 0..40 {
        for i in 0..3 {
            flows.send(i, 50 + round + i);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let subs = sub.subacks();
    agent.signal(libc::SIGSTOP);
    broker.resume();
    sub.wait_subscribed(subs);
    agent.signal(libc::SIGCONT);
    // The agent reconnects after its backoff (at most 5 s), then replays.
    sub.wait_for(Duration::from_secs(15), |m| m.len() >= 3);
    std::thread::sleep(Duration::from_millis(500));
    let exit = agent.stop();
    assert!(exit.status.success(), "{}", exit.stderr);
    assert!(exit.stderr.contains("spool full"), "{}", exit.stderr);
    sub.wait_quiet(Duration::from_millis(300), Duration::from_secs(5));

    let all = sub.summaries();
    let seqs: Vec<u64> = all.iter().map(|s| s.seq).collect();
    // The oldest windows were dropped: the first to arrive is not window 0, the rest follow
    // without gaps, and the drops are counted in what arrived.
    assert!(seqs[0] > 0, "{seqs:?}");
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
    let dropped = all.iter().map(|s| s.health.spool_dropped).max().unwrap();
    assert!(dropped > 0);
    // Whatever arrived is still conserved, and the loss is exactly the dropped windows.
    let sums = add_up(&all);
    assert_eq!(sums.accounted, sums.totals);
    assert!(sums.totals.bytes < flows.total().bytes);
}

/// Runs openssl (Debian's `openssl` package, installed by scripts/setup.sh) in `dir`.
fn openssl(dir: &std::path::Path, args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("running openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, in `dir`.
fn make_certs(dir: &std::path::Path) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend_from_slice(&ec);
    ca.extend_from_slice(&[
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=edgeflow test CA",
    ]);
    openssl(dir, &ca);
    for (name, san) in [("server", "IP:127.0.0.1"), ("client", "DNS:edge-client")] {
        let mut req = vec!["req"];
        req.extend_from_slice(&ec);
        let (key, csr, pem, ext) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.pem"),
            format!("{name}.ext"),
        );
        let subj = format!("/CN={name}");
        req.extend_from_slice(&["-keyout", &key, "-out", &csr, "-subj", &subj]);
        openssl(dir, &req);
        std::fs::write(dir.join(&ext), format!("subjectAltName={san}\n")).unwrap();
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &pem,
                "-days",
                "2",
                "-extfile",
                &ext,
            ],
        );
    }
    // Mosquitto drops root for its own user before it reads the keys: test keys only.
    for f in ["server.key", "client.key"] {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.join(f), std::fs::Permissions::from_mode(0o644)).unwrap();
    }
}

#[test]
fn mqtts_with_a_client_certificate_from_the_config_file() {
    let net = TestNet::quiet();
    let certs = std::env::temp_dir().join(testkit::unique("efcerts"));
    std::fs::create_dir_all(&certs).unwrap();
    make_certs(&certs);
    let tls_port = testkit::mosquitto::free_port();
    let c = |f: &str| certs.join(f).display().to_string();
    // The plain listener is the test subscriber's; the agent must come in over TLS with a
    // certificate the broker checks.
    let broker = Mosquitto::with_config(&format!(
        "listener {tls_port} 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate true\n",
        c("ca.pem"),
        c("server.pem"),
        c("server.key")
    ));
    let sub = Subscriber::start(broker.port, FLOWS);
    let config = certs.join("edgeflow.toml");
    std::fs::write(
        &config,
        format!(
            "interfaces = [\"nonexistent0\"]\ndevice = \"tls1\"\nsite = \"lab\"\n\
             [mqtt]\nurl = \"mqtts://127.0.0.1:{tls_port}\"\nca_file = \"{}\"\n\
             cert_file = \"{}\"\nkey_file = \"{}\"\n",
            c("ca.pem"),
            c("client.pem"),
            c("client.key")
        ),
    )
    .unwrap();
    // Flags override the file: the interface, the namespace, the interval.
    let agent = Agent::start(
        BIN,
        &[
            "--config",
            config.to_str().unwrap(),
            "--iface",
            &net.veth_b,
            "--netns",
            &net.ns_b,
            "--interval",
            "0.5",
        ],
    );
    let mut flows = Flows::new(&net, 2);
    for i in 0..2 {
        flows.send(i, 300);
    }
    let arrived = sub.wait_for(Duration::from_secs(15), |m| {
        let all: Vec<Summary> = m
            .iter()
            .map(|r| wire::decode_summary(&r.payload).unwrap())
            .collect();
        add_up(&all).totals == flows.total()
    });
    let exit = agent.stop();
    let _ = std::fs::remove_dir_all(&certs);
    assert!(
        arrived,
        "summaries did not arrive over TLS:\n{}",
        exit.stderr
    );
    assert!(exit.status.success(), "{}", exit.stderr);
    assert!(sub.summaries().iter().all(|s| s.device == "tls1"));
}

#[test]
fn a_killed_agent_is_reported_offline_by_its_last_will() {
    let net = TestNet::quiet();
    let broker = Mosquitto::start();
    let sub = Subscriber::start(broker.port, "edgeflow/v1/lab/t1/status");
    let url = broker.url();
    let agent = Agent::start(BIN, &agent_args(&net, &url, &[]));
    let status = |m: &[testkit::subscriber::Received]| -> Vec<Vec<u8>> {
        m.iter().map(|r| r.payload.clone()).collect()
    };
    assert!(
        sub.wait_for(Duration::from_secs(10), |m| status(m)
            == [b"online".to_vec()]),
        "no online status"
    );
    // No clean shutdown: the broker publishes the will, retained.
    agent.signal(libc::SIGKILL);
    assert!(
        sub.wait_for(Duration::from_secs(10), |m| status(m).last()
            == Some(&b"offline".to_vec())),
        "no last will"
    );
    // Retained: a late subscriber still learns the device is offline.
    let late = Subscriber::start(broker.port, "edgeflow/v1/lab/t1/status");
    assert!(late.wait_for(Duration::from_secs(5), |m| m
        .iter()
        .any(|r| r.retain && r.payload == b"offline")));
    // Reaps the killed process (its TCX links went with it).
    drop(agent);
}

/// A spool file with a corrupted record in the middle and garbage at the end: the agent says
/// so, sets the bad bytes aside, sends every good summary of the last run, and runs on with
/// exact counts.
#[test]
fn corrupted_spool_file_is_set_aside_and_the_agent_keeps_running() {
    let net = TestNet::quiet();
    let mut broker = Mosquitto::start();
    let sub = Subscriber::start(broker.port, FLOWS);
    let url = broker.url();
    let spool = std::env::temp_dir().join(testkit::unique("efspool"));
    let spool_s = spool.to_str().unwrap().to_string();
    broker.stop();
    let first = Agent::start(BIN, &agent_args(&net, &url, &["--spool-file", &spool_s]));
    let mut before = Flows::new(&net, 2);
    for round in 0..30 {
        before.send(round % 2, 100 + round);
        std::thread::sleep(Duration::from_millis(100));
    }
    let exit = first.stop();
    assert!(exit.status.success(), "{}", exit.stderr);

    // Flip a payload byte of the second record and append bytes that are no record.
    let mut data = std::fs::read(&spool).unwrap();
    let first_len = u32::from_le_bytes(data[4..8].try_into().unwrap()) as usize;
    let second = 12 + first_len;
    let second_len = u32::from_le_bytes(data[second + 4..second + 8].try_into().unwrap()) as usize;
    assert!(
        data.len() > second + 12 + second_len,
        "at least three records spooled"
    );
    data[second + 12 + second_len / 2] ^= 0x55;
    data.extend_from_slice(b"EFS1 this is not a record");
    std::fs::write(&spool, &data).unwrap();

    let subs = sub.subacks();
    broker.resume();
    sub.wait_subscribed(subs);
    let second_run = Agent::start(BIN, &agent_args(&net, &url, &["--spool-file", &spool_s]));
    let mut after = Flows::new(&net, 2);
    for round in 0..20 {
        after.send(round % 2, 300 + round);
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(1500));
    let exit2 = second_run.stop();
    assert!(exit2.status.success(), "{}", exit2.stderr);
    let bad = (12 + second_len + 25) as u64;
    assert!(
        exit2
            .stderr
            .contains(&format!("{bad} bytes were not whole records")),
        "{}",
        exit2.stderr
    );
    let aside = exit2
        .stderr
        .lines()
        .find_map(|l| l.split("set aside in ").nth(1))
        .expect("says where the bytes went")
        .trim()
        .to_string();
    assert_eq!(std::fs::metadata(&aside).unwrap().len(), bad);
    sub.wait_quiet(Duration::from_millis(300), Duration::from_secs(5));

    let all = sub.summaries();
    let boots: Vec<u64> = all.iter().map(|s| s.boot_id).fold(Vec::new(), |mut v, b| {
        if !v.contains(&b) {
            v.push(b);
        }
        v
    });
    assert_eq!(boots.len(), 2, "both runs' summaries arrived");
    // The last run lost exactly its second window (the corrupted record).
    let mut old: Vec<u64> = all
        .iter()
        .filter(|s| s.boot_id == boots[0])
        .map(|s| s.seq)
        .collect();
    old.sort();
    assert_eq!(old[..2], [0, 2], "{old:?}");
    assert!(old.windows(2).skip(1).all(|w| w[1] == w[0] + 1), "{old:?}");
    // This run's windows are all there and add up to what was sent since.
    let new: Vec<Summary> = all.into_iter().filter(|s| s.boot_id == boots[1]).collect();
    assert_complete_and_ordered(&new);
    let sums = add_up(&new);
    assert_eq!(sums.accounted, sums.totals);
    assert_eq!(sums.totals, after.total());
    assert_eq!(std::fs::metadata(&spool).unwrap().len(), 0);
    let _ = std::fs::remove_file(&spool);
    let _ = std::fs::remove_file(&aside);
}

/// A broker that takes no anonymous clients, only users of its password file: the agent
/// with the right username and password (from its config file) publishes, one with a wrong
/// password gets nothing through and says why.
#[test]
fn username_and_password_against_a_password_file() {
    let net = TestNet::quiet();
    let dir = std::env::temp_dir().join(testkit::unique("efauth"));
    std::fs::create_dir_all(&dir).unwrap();
    let pw = dir.join("passwd");
    let out = std::process::Command::new("mosquitto_passwd")
        .args(["-b", "-c", pw.to_str().unwrap(), "edge-01", "s3cret pass"])
        .output()
        .expect("mosquitto_passwd (Debian's mosquitto package)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Mosquitto reads it after dropping root.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o644)).unwrap();
    let broker = Mosquitto::with_config(&format!(
        "allow_anonymous false\npassword_file {}\n",
        pw.display()
    ));
    let sub = Subscriber::start_as(broker.port, FLOWS, Some(("edge-01", "s3cret pass")));
    let config = |pass: &str| {
        let f = dir.join(format!("edgeflow-{}.toml", pass.len()));
        std::fs::write(
            &f,
            format!(
                "interfaces = [\"{}\"]\nnetns = \"{}\"\ndevice = \"auth1\"\nsite = \"lab\"\n\
                 interval_secs = 0.5\n[mqtt]\nurl = \"{}\"\nusername = \"edge-01\"\n\
                 password = \"{pass}\"\n",
                net.veth_b,
                net.ns_b,
                broker.url()
            ),
        )
        .unwrap();
        f
    };

    let wrong = config("wrong");
    let agent = Agent::start(BIN, &["--config", wrong.to_str().unwrap()]);
    std::thread::sleep(Duration::from_secs(2));
    let exit = agent.stop();
    assert!(exit.status.success(), "{}", exit.stderr);
    assert!(sub.summaries().is_empty(), "a wrong password got through");
    assert!(
        exit.stderr.to_lowercase().contains("not authorized")
            || exit.stderr.contains("NotAuthorized")
            || exit.stderr.contains("BadUserNamePassword"),
        "the refusal is not reported:\n{}",
        exit.stderr
    );

    let right = config("s3cret pass");
    let agent = Agent::start(BIN, &["--config", right.to_str().unwrap()]);
    let mut flows = Flows::new(&net, 2);
    for i in 0..2 {
        flows.send(i, 200);
    }
    let arrived = sub.wait_for(Duration::from_secs(15), |m| {
        let all: Vec<Summary> = m
            .iter()
            .map(|r| wire::decode_summary(&r.payload).unwrap())
            .collect();
        add_up(&all).totals == flows.total()
    });
    let exit = agent.stop();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(arrived, "summaries did not arrive:\n{}", exit.stderr);
    assert!(exit.status.success(), "{}", exit.stderr);
}

/// `edgeflow run` whose only interface is deleted: it says so, sends its last window, goes
/// offline cleanly and exits 1 (`edge/tests/ifaces.rs` covers down/up and partial loss).
#[test]
fn run_stops_with_an_error_when_its_interface_is_deleted() {
    let net = TestNet::quiet();
    for args in [
        vec![
            "ip", "link", "add", "efgone2", "type", "veth", "peer", "name", "efpeer2",
        ],
        vec!["ip", "link", "set", "efgone2", "up"],
        vec!["ip", "link", "set", "efpeer2", "up"],
    ] {
        let o = net.exec(&net.ns_b, &args);
        assert!(o.status.success(), "{args:?}");
    }
    let broker = Mosquitto::start();
    let sub = Subscriber::start(broker.port, "edgeflow/#");
    let url = broker.url();
    let mut agent = Agent::start(
        BIN,
        &[
            "--iface",
            "efgone2",
            "--netns",
            &net.ns_b,
            "--broker",
            &url,
            "--device",
            "t1",
            "--site",
            "lab",
            "--interval",
            "1",
            // Stop at once when the last interface is gone (no waiting for it to come back).
            "--gone-wait",
            "0",
        ],
    );
    std::thread::sleep(Duration::from_millis(1500));
    let o = net.exec(&net.ns_b, &["ip", "link", "del", "efgone2"]);
    assert!(o.status.success());
    let exit = agent.wait(Duration::from_secs(15));
    assert_eq!(exit.status.code(), Some(1), "{}", exit.stderr);
    assert!(
        exit.stderr.contains("efgone2 was deleted"),
        "{}",
        exit.stderr
    );
    assert!(
        exit.stderr
            .contains("every watched interface is gone (efgone2)"),
        "{}",
        exit.stderr
    );
    assert!(
        sub.wait_for(Duration::from_secs(5), |m| m
            .iter()
            .any(|r| r.topic.ends_with("/status") && r.payload == b"offline")),
        "no offline status"
    );
    let all = sub.summaries();
    assert!(!all.is_empty(), "{}", exit.stderr);
    assert_complete_and_ordered(&all);
}

/// `edgeflow run` across its interface going down and up: both reported, the summaries of
/// the whole run still add up exactly to what was sent before and after.
#[test]
fn run_counts_across_its_interface_going_down_and_up() {
    let net = TestNet::quiet();
    let broker = Mosquitto::start();
    let sub = Subscriber::start(broker.port, FLOWS);
    let url = broker.url();
    let agent = Agent::start(BIN, &agent_args(&net, &url, &[]));
    let mut flows = Flows::new(&net, 2);
    flows.send(0, 100);
    flows.send(1, 200);
    let link = |state: &str| {
        let o = net.exec(&net.ns_b, &["ip", "link", "set", &net.veth_b, state]);
        assert!(o.status.success());
    };
    link("down");
    std::thread::sleep(Duration::from_millis(2300));
    link("up");
    std::thread::sleep(Duration::from_millis(1300));
    // One way A → B: A's permanent entry for B survived B's link going down.
    flows.send(0, 300);
    flows.send(1, 400);
    std::thread::sleep(Duration::from_millis(1300));
    let exit = agent.stop();
    assert!(exit.status.success(), "{}", exit.stderr);
    let veth = &net.veth_b;
    assert!(
        exit.stderr.contains(&format!("{veth} is down")),
        "{}",
        exit.stderr
    );
    assert!(
        exit.stderr.contains(&format!("{veth} is up again")),
        "{}",
        exit.stderr
    );
    sub.wait_quiet(Duration::from_millis(300), Duration::from_secs(5));
    let all = sub.summaries();
    assert_complete_and_ordered(&all);
    let sums = add_up(&all);
    assert_eq!(sums.accounted, sums.totals);
    assert_eq!(sums.totals, flows.total(), "{}", exit.stderr);
}

/// A veth pair between the test's namespaces under fixed names, 10.198.0.1 (ns_a, `peer`) to
/// 10.198.0.2 (ns_b, `name`): up, static neighbours, no IPv6 (nothing but our traffic).
fn flap_pair(net: &TestNet, name: &str, peer: &str) {
    let sh = |args: &[&str]| {
        let o = std::process::Command::new(args[0])
            .args(&args[1..])
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    };
    sh(&[
        "ip", "link", "add", name, "netns", &net.ns_b, "type", "veth", "peer", "name", peer,
        "netns", &net.ns_a,
    ]);
    let mac = |ns: &str, dev: &str| {
        let o = net.exec(ns, &["cat", &format!("/sys/class/net/{dev}/address")]);
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };
    let (ma, mb) = (mac(&net.ns_a, peer), mac(&net.ns_b, name));
    for (ns, dev, me, other, m) in [
        (&net.ns_a, peer, "10.198.0.1", "10.198.0.2", &mb),
        (&net.ns_b, name, "10.198.0.2", "10.198.0.1", &ma),
    ] {
        sh(&[
            "ip",
            "-n",
            ns,
            "addr",
            "add",
            &format!("{me}/24"),
            "dev",
            dev,
        ]);
        sh(&[
            "ip",
            "-n",
            ns,
            "neigh",
            "replace",
            other,
            "lladdr",
            m,
            "dev",
            dev,
            "nud",
            "permanent",
        ]);
        sh(&["ip", "-n", ns, "link", "set", dev, "up"]);
    }
}

/// An interface deleted and made again under its name (a modem's `ppp0`, a VPN's `wg0`),
/// three times while the agent runs and traffic flows on another interface: each time the
/// agent attaches to the new one within a window, says so and counts the re-attachment; every
/// packet sent while attached is in the summaries, on both interfaces, exactly.
#[test]
fn an_interface_made_again_under_its_name_is_attached_to_and_counted_exactly() {
    let net = TestNet::quiet();
    // New interfaces in the test namespaces start without IPv6 (no MLD or RS to count).
    for ns in [&net.ns_a, &net.ns_b] {
        let path = "/proc/sys/net/ipv6/conf/default/disable_ipv6";
        net.in_ns(ns, || std::fs::write(path, "1")).unwrap();
    }
    let tag = std::process::id() % 100_000;
    let (name, peer) = (format!("efre{tag}"), format!("efrp{tag}"));
    flap_pair(&net, &name, &peer);
    let broker = Mosquitto::start();
    let sub = Subscriber::start(broker.port, FLOWS);
    let url = broker.url();
    let agent = Agent::start(
        BIN,
        &agent_args_every(&net, &url, "0.5", &["--iface", &name, "--attach", "tc"]),
    );
    let steady = Flows::new(&net, 2);
    let stop = Arc::new(AtomicBool::new(false));
    let sender = {
        let stop = stop.clone();
        std::thread::spawn(move || traffic(steady, stop, Duration::from_secs(60)))
    };
    let (a, b) = (Ipv4Addr::new(10, 198, 0, 1), Ipv4Addr::new(10, 198, 0, 2));
    let mut flapped = Vec::new();
    for round in 0..4 {
        if round > 0 {
            flap_pair(&net, &name, &peer);
            // Two windows: the agent looks at its interfaces once per window.
            std::thread::sleep(Duration::from_millis(1300));
        }
        let mut f = Flows::between(&net, 2, a, b);
        for i in 0..10 {
            f.send(i % 2, 100 + 10 * round + i);
            std::thread::sleep(Duration::from_millis(30));
        }
        flapped.push(f);
        // Counted before the interface (and its programs) go.
        std::thread::sleep(Duration::from_millis(1200));
        let o = net.exec(&net.ns_b, &["ip", "link", "del", &name]);
        assert!(o.status.success());
        std::thread::sleep(Duration::from_millis(300));
    }
    stop.store(true, Ordering::SeqCst);
    let steady = sender.join().unwrap();
    std::thread::sleep(Duration::from_millis(1200));
    let exit = agent.stop();
    assert!(exit.status.success(), "{}", exit.stderr);
    let err = &exit.stderr;
    assert_eq!(err.matches(&format!("{name} is back")).count(), 3, "{err}");
    assert!(err.contains("(3 re-attachments since start)"), "{err}");
    assert!(!err.contains("attaching failed"), "{err}");
    sub.wait_quiet(Duration::from_millis(300), Duration::from_secs(5));

    let all = sub.summaries();
    assert_complete_and_ordered(&all);
    let sums = add_up(&all);
    assert_eq!(sums.accounted, sums.totals);
    let mut sent = steady.total();
    for f in &flapped {
        sent.add(&f.total());
        for (k, want) in &f.sent {
            assert_eq!(sums.per_flow.get(k), Some(want), "flow {k:?}\n{err}");
        }
    }
    for (k, want) in &steady.sent {
        assert_eq!(sums.per_flow.get(k), Some(want), "flow {k:?}");
    }
    assert_eq!(sums.totals, sent, "{err}");
    // And in the health: 0 at first, 3 once the last re-attachment is past.
    let re: Vec<u32> = all.iter().map(|s| s.health.reattached).collect();
    assert_eq!(
        (re.first(), re.iter().max()),
        (Some(&0), Some(&3)),
        "{re:?}"
    );
}

/// A shared object that, preloaded into one process, moves that process's CLOCK_REALTIME by
/// the milliseconds written in the file named by `EF_WALL_OFFSET_FILE` (read at every call):
/// what an NTP step or `date -s` does to the wall clock, for the agent alone and not for the
/// machine the other tests share. CLOCK_MONOTONIC and CLOCK_BOOTTIME are left alone, as a step
/// leaves them.
const WALL_STEP_SHIM: &str = r#"
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
int clock_gettime(clockid_t id, struct timespec *ts) {
    static int (*real)(clockid_t, struct timespec *);
    if (!real) real = dlsym(RTLD_NEXT, "clock_gettime");
    int r = real(id, ts);
    const char *path = getenv("EF_WALL_OFFSET_FILE");
    if (r != 0 || (id != CLOCK_REALTIME && id != CLOCK_REALTIME_COARSE) || !path) return r;
    char buf[32] = {0};
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return r;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return r;
    long long ns = ts->tv_sec * 1000000000LL + ts->tv_nsec + atoll(buf) * 1000000LL;
    ts->tv_sec = ns / 1000000000LL;
    ts->tv_nsec = ns % 1000000000LL;
    return r;
}
"#;

/// The agent's wall clock stepped an hour forward, then 30 s behind where it started, while
/// it runs (`WALL_STEP_SHIM`): every window is still as long as the interval (CLOCK_BOOTTIME),
/// the two steps are reported in the windows they happened in and counted, and the counts
/// stay exact.
#[test]
fn wall_clock_steps_do_not_change_window_lengths_and_are_reported() {
    let net = TestNet::quiet();
    let dir = std::env::temp_dir().join(testkit::unique("efclock"));
    std::fs::create_dir_all(&dir).unwrap();
    let (src, so, offset) = (dir.join("shim.c"), dir.join("shim.so"), dir.join("offset"));
    std::fs::write(&src, WALL_STEP_SHIM).unwrap();
    let cc = std::process::Command::new("cc")
        .args(["-shared", "-fPIC", "-O2", "-o"])
        .args([&so, &src])
        .arg("-ldl")
        .output()
        .expect("cc (Debian's gcc)");
    assert!(
        cc.status.success(),
        "{}",
        String::from_utf8_lossy(&cc.stderr)
    );
    std::fs::write(&offset, "0").unwrap();
    let broker = Mosquitto::start();
    let sub = Subscriber::start(broker.port, FLOWS);
    let url = broker.url();
    let mut cmd = std::process::Command::new(BIN);
    cmd.arg("run")
        .args(agent_args_every(&net, &url, "0.5", &[]))
        .env("LD_PRELOAD", &so)
        .env("EF_WALL_OFFSET_FILE", &offset);
    let agent = Agent::start_command(cmd);
    let mut flows = Flows::new(&net, 2);
    let mut run = |ms: u64| {
        let end = Instant::now() + Duration::from_millis(ms);
        let mut i = 0;
        while Instant::now() < end {
            flows.send(i % 2, 100 + i % 50);
            i += 1;
            std::thread::sleep(Duration::from_millis(40));
        }
    };
    run(1600);
    std::fs::write(&offset, "3600000").unwrap();
    run(1600);
    std::fs::write(&offset, "-30000").unwrap();
    run(1600);
    let exit = agent.stop();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(exit.status.success(), "{}", exit.stderr);
    sub.wait_quiet(Duration::from_millis(300), Duration::from_secs(5));
    let all = sub.summaries();
    assert_complete_and_ordered(&all);
    assert!(all.len() >= 8, "{} windows\n{}", all.len(), exit.stderr);
    // The last window is cut short by the stop, and the first starts at the baseline, before
    // attaching (it is longer by the start-up); every other one is an interval long.
    let last = all.iter().map(|s| s.seq).max().unwrap();
    for s in all.iter().filter(|s| s.seq != last && s.seq != 0) {
        assert!(
            (450..=650).contains(&s.window_len_ms),
            "window {}: {} ms\n{}",
            s.seq,
            s.window_len_ms,
            exit.stderr
        );
    }
    let sums = add_up(&all);
    assert_eq!(sums.totals, flows.total(), "{}", exit.stderr);
    let steps: Vec<&str> = exit
        .stderr
        .lines()
        .filter(|l| l.contains("the wall clock was stepped by"))
        .collect();
    assert_eq!(steps.len(), 2, "{}", exit.stderr);
    let by = |l: &str| -> i64 {
        let n = l.split("stepped by ").nth(1).unwrap();
        n.split_whitespace().next().unwrap().parse().unwrap()
    };
    assert!((by(steps[0]) - 3_600_000).abs() < 100, "{}", steps[0]);
    assert!((by(steps[1]) + 3_630_000).abs() < 100, "{}", steps[1]);
    // The health carries the same two steps, each in its window, and counts them.
    let stepped: Vec<i64> = all
        .iter()
        .map(|s| s.health.clock_step_ms)
        .filter(|ms| *ms != 0)
        .collect();
    assert_eq!(stepped, [by(steps[0]), by(steps[1])], "{}", exit.stderr);
    let counted = all.iter().map(|s| s.health.clock_steps).max();
    assert_eq!(counted, Some(2));
}
