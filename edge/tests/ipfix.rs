//! IPFIX against collectors no one here wrote: Debian's nfcapd (nfdump), nfacctd (pmacct)
//! and tshark. One scenario, known UDP, TCP and ICMP over IPv4 and IPv6 and VLAN-tagged UDP
//! between the two namespaces of a [`TestNet`]:
//!
//! - `edgeflow run` on veth_a (in ns_a) exports RFC 5103 biflows to nfcapd #1, and publishes
//!   the same windows over MQTT (Mosquitto) to an `edgeflow-collector` that re-exports
//!   what it stores as uniflow records to nfcapd #2, which repeats them to nfacctd;
//! - `edgeflow watch --json` on veth_b (ns_b, the same frames from the other end) is the
//!   reference: per flow, the packets and bytes each way that every collector must show;
//! - tcpdump on ns_a's loopback keeps every IPFIX packet, and tshark decodes each of them
//!   (templates included) with no malformed packet and no expert warning.
//!
//! Every server listens on 127.0.0.1 of ns_a, never on the host; [`Daemon`] and [`TestNet`]
//! remove processes and namespaces on drop. The collector binary comes from the workspace
//! build (`cargo test --workspace` builds it; alone: `cargo build -p edgeflow-collector`).

use serde_json::Value;
use shared::craft::{Packet, TPID_8021AD, TPID_8021Q};
use std::{
    collections::BTreeMap,
    io::{Read, Write},
    net::{IpAddr, SocketAddr, TcpListener, TcpStream},
    path::Path,
    process::Command,
    time::{Duration, Instant},
};
use testkit::{
    agent::Agent, daemon::Daemon, raw, traffic::udp_exchange, watch::Watch, TestNet, A4, A6, B4, B6,
};

const BIN: &str = env!("CARGO_BIN_EXE_edgeflow");
const NFCAPD_AGENT: u16 = 4739;
const NFCAPD_COLLECTOR: u16 = 4740;
const NFACCTD: u16 = 4741;
const BROKER: u16 = 1883;

/// (proto, src, dst, src port, dst port, outer VLAN); ICMP ports are 0 (collectors differ in
/// where they put type and code).
type Key = (u8, IpAddr, IpAddr, u16, u16, u16);
/// VLAN tags outermost first as (TPID, id), client port, server port.
type Tagged = (&'static [(u16, u16)], u16, u16);
/// Packets and bytes forward, then reverse.
type Counts = [u64; 4];

fn key(proto: u8, src: IpAddr, dst: IpAddr, sp: u16, dp: u16, vlan: u16) -> Key {
    if proto == 1 || proto == 58 {
        (proto, src, dst, 0, 0, vlan)
    } else {
        (proto, src, dst, sp, dp, vlan)
    }
}

fn ours(a: IpAddr) -> bool {
    [IpAddr::from(A4), B4.into(), A6.into(), B6.into()].contains(&a)
}

fn wait_log(d: &mut Daemon, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !d.log_text().contains(needle) {
        d.assert_running();
        assert!(
            Instant::now() < deadline,
            "{} never said {needle:?}:\n{}",
            d.name,
            d.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A short TCP conversation from ns_a to ns_b: `up` bytes, then `down` back, both closed.
fn tcp_exchange(net: &TestNet, a: IpAddr, b: IpAddr, up: usize, down: usize) {
    let l = net.in_ns(&net.ns_b, || {
        TcpListener::bind(SocketAddr::new(b, 0)).unwrap()
    });
    let to = l.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap();
        assert_eq!(got.len(), up);
        s.write_all(&vec![5u8; down]).unwrap();
    });
    let mut c = net.in_ns(&net.ns_a, || {
        let s = socket2_free_connect(a, to);
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s
    });
    c.write_all(&vec![3u8; up]).unwrap();
    c.shutdown(std::net::Shutdown::Write).unwrap();
    let mut back = Vec::new();
    c.read_to_end(&mut back).unwrap();
    assert_eq!(back.len(), down);
    server.join().unwrap();
}

/// Connects from address `a` (the source the flow must carry).
fn socket2_free_connect(a: IpAddr, to: SocketAddr) -> TcpStream {
    // std cannot bind before connect; the route picks `a` anyway (one address per family).
    let s = TcpStream::connect_timeout(&to, Duration::from_secs(5)).unwrap();
    assert_eq!(s.local_addr().unwrap().ip(), a);
    s
}

/// What watch counted for our flows, summed over its windows.
fn reference(w: &testkit::watch::Windows) -> BTreeMap<Key, Counts> {
    let mut out = BTreeMap::<Key, Counts>::new();
    for f in w.flows() {
        let ip = |k: &str| f[k].as_str().unwrap().parse::<IpAddr>().unwrap();
        let (src, dst) = (ip("src"), ip("dst"));
        if !ours(src) || !ours(dst) {
            continue;
        }
        let n = |k: &str| f[k].as_u64().unwrap();
        let k = key(
            n("proto") as u8,
            src,
            dst,
            n("src_port") as u16,
            n("dst_port") as u16,
            n("vlan") as u16,
        );
        let c = out.entry(k).or_default();
        for (i, name) in ["packets_fwd", "bytes_fwd", "packets_rev", "bytes_rev"]
            .iter()
            .enumerate()
        {
            c[i] += n(name);
        }
    }
    out
}

/// Adds a uniflow record to the flow of `reference` it belongs to: its own key (forward) or
/// the swapped one (reverse). A record of ours that fits neither is kept under its own key.
fn add_uniflow(
    out: &mut BTreeMap<Key, Counts>,
    reference: &BTreeMap<Key, Counts>,
    k: Key,
    p: u64,
    b: u64,
) {
    let swapped = (k.0, k.2, k.1, k.4, k.3, k.5);
    if reference.contains_key(&k) || !reference.contains_key(&swapped) {
        let c = out.entry(k).or_default();
        c[0] += p;
        c[1] += b;
    } else {
        let c = out.entry(swapped).or_default();
        c[2] += p;
        c[3] += b;
    }
}

/// nfcapd's files in `dir` through `nfdump -o json`; `biflow`: in/out are the two directions.
fn nfdump(dir: &Path, reference: &BTreeMap<Key, Counts>, biflow: bool) -> BTreeMap<Key, Counts> {
    let out = Command::new("nfdump")
        .args(["-R", dir.to_str().unwrap(), "-o", "json"])
        .output()
        .expect("running nfdump");
    assert!(
        out.status.success(),
        "nfdump: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let flows: Vec<Value> =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("nfdump JSON: {e}:\n{text}"));
    let mut got = BTreeMap::<Key, Counts>::new();
    for f in flows {
        let ip = |k4: &str, k6: &str| {
            f.get(k4)
                .or(f.get(k6))
                .and_then(Value::as_str)
                .unwrap()
                .parse::<IpAddr>()
                .unwrap()
        };
        let (src, dst) = (ip("src4_addr", "src6_addr"), ip("dst4_addr", "dst6_addr"));
        if !ours(src) || !ours(dst) {
            continue;
        }
        let n = |k: &str| f.get(k).and_then(Value::as_u64).unwrap_or(0);
        let k = key(
            n("proto") as u8,
            src,
            dst,
            n("src_port") as u16,
            n("dst_port") as u16,
            n("src_vlan") as u16,
        );
        if biflow {
            let c = got.entry(k).or_default();
            c[0] += n("in_packets");
            c[1] += n("in_bytes");
            c[2] += n("out_packets");
            c[3] += n("out_bytes");
        } else {
            add_uniflow(&mut got, reference, k, n("in_packets"), n("in_bytes"));
        }
    }
    got
}

/// nfacctd's print plugin output (CSV, appended every second).
fn pmacct(file: &Path, reference: &BTreeMap<Key, Counts>) -> BTreeMap<Key, Counts> {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    let mut got = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with("VLAN"))
    {
        // VLAN,SRC_IP,DST_IP,SRC_PORT,DST_PORT,PROTOCOL,PACKETS,BYTES
        let c: Vec<&str> = line.split(',').collect();
        assert_eq!(c.len(), 8, "{line}");
        let (src, dst): (IpAddr, IpAddr) = (c[1].parse().unwrap(), c[2].parse().unwrap());
        if !ours(src) || !ours(dst) {
            continue;
        }
        let k = key(
            c[5].parse().unwrap(),
            src,
            dst,
            c[3].parse().unwrap(),
            c[4].parse().unwrap(),
            c[0].parse().unwrap(),
        );
        add_uniflow(
            &mut got,
            reference,
            k,
            c[6].parse().unwrap(),
            c[7].parse().unwrap(),
        );
    }
    got
}

fn tshark(pcap: &Path, filter: &str) -> Vec<String> {
    let mut args = vec!["-r".to_string(), pcap.to_str().unwrap().into()];
    for p in [NFCAPD_AGENT, NFCAPD_COLLECTOR, NFACCTD] {
        args.extend(["-d".into(), format!("udp.port=={p},cflow")]);
    }
    args.extend(["-Y".into(), filter.into()]);
    let out = Command::new("tshark")
        .args(&args)
        .output()
        .expect("running tshark");
    assert!(
        out.status.success(),
        "tshark {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn nfdump_pmacct_and_tshark_read_what_watch_counted() {
    let net = TestNet::new();
    net.static_neighbours();
    let dir = std::env::temp_dir().join(testkit::unique("efipfix"));
    let (nf1, nf2) = (dir.join("nfcapd-agent"), dir.join("nfcapd-collector"));
    for d in [&dir, &nf1, &nf2] {
        std::fs::create_dir_all(d).unwrap();
    }
    let ns = net.ns_a.clone();
    let s = |p: &Path| p.to_str().unwrap().to_string();

    let mut capture = Daemon::start_in(
        &ns,
        &[
            "tcpdump",
            "-i",
            "lo",
            "-n",
            "-U",
            "-s",
            "0",
            "-w",
            &s(&dir.join("ipfix.pcap")),
            "udp",
        ],
        &dir.join("tcpdump.log"),
    );
    wait_log(&mut capture, "listening on");
    let mut nfcapd1 = Daemon::start_in(
        &ns,
        &[
            "nfcapd",
            "-b",
            "127.0.0.1",
            "-p",
            &NFCAPD_AGENT.to_string(),
            "-w",
            &s(&nf1),
            "-t",
            "3600",
        ],
        &dir.join("nfcapd-agent.log"),
    );
    let pm_out = dir.join("nfacctd.csv");
    let pm_conf = dir.join("nfacctd.conf");
    std::fs::write(
        &pm_conf,
        format!(
            "daemonize: false\nnfacctd_ip: 127.0.0.1\nnfacctd_port: {NFACCTD}\nplugins: print\n\
             aggregate: vlan, src_host, dst_host, src_port, dst_port, proto\n\
             print_output: csv\nprint_output_file: {}\nprint_output_file_append: true\n\
             print_refresh_time: 1\nprint_num_protos: true\n",
            pm_out.display()
        ),
    )
    .unwrap();
    let mut nfacctd = Daemon::start_in(
        &ns,
        &["nfacctd", "-f", &s(&pm_conf)],
        &dir.join("nfacctd.log"),
    );
    let repeat = format!("127.0.0.1/{NFACCTD}");
    let mut nfcapd2 = Daemon::start_in(
        &ns,
        &[
            "nfcapd",
            "-b",
            "127.0.0.1",
            "-p",
            &NFCAPD_COLLECTOR.to_string(),
            "-w",
            &s(&nf2),
            "-t",
            "3600",
            "-R",
            &repeat,
        ],
        &dir.join("nfcapd-collector.log"),
    );
    wait_log(&mut nfcapd1, "Startup");
    wait_log(&mut nfcapd2, "Startup");
    wait_log(&mut nfacctd, "waiting for NetFlow/IPFIX data");
    // Mosquitto, as a fleet runs it (rumqttd, the collector's embedded broker, refuses the
    // agent's `site/device` client id).
    let mq_conf = dir.join("mosquitto.conf");
    std::fs::write(
        &mq_conf,
        format!(
            "listener {BROKER} 127.0.0.1\nallow_anonymous true\npersistence false\n\
             log_dest stderr\nuser root\n"
        ),
    )
    .unwrap();
    let mut mosquitto = Daemon::start_in(
        &ns,
        &["mosquitto", "-c", &s(&mq_conf)],
        &dir.join("mosquitto.log"),
    );
    wait_log(&mut mosquitto, "listen socket on port");
    let collector_bin = testkit::cargo_bin("edgeflow-collector");
    let mut collector = Daemon::start_in(
        &ns,
        &[
            collector_bin.to_str().unwrap(),
            "--db",
            &s(&dir.join("collector.db")),
            "--http",
            "127.0.0.1:0",
            "--broker",
            &format!("mqtt://127.0.0.1:{BROKER}"),
            "--ipfix-export",
            &format!("udp://127.0.0.1:{NFCAPD_COLLECTOR}"),
            "--ipfix-uniflow",
        ],
        &dir.join("collector.log"),
    );
    wait_log(&mut collector, "subscribed to");

    let watch = Watch::start(BIN, &net.ns_b, &["--iface", &net.veth_b, "--interval", "1"]);
    let agent = Agent::start_in(
        &ns,
        BIN,
        &[
            "--iface",
            &net.veth_a,
            "--interval",
            "1",
            "--device",
            "box-1",
            "--site",
            "lab",
            "--broker",
            &format!("mqtt://127.0.0.1:{BROKER}"),
            "--ipfix",
            &format!("udp://127.0.0.1:{NFCAPD_AGENT}"),
        ],
    );

    // The traffic: UDP, TCP and ICMP both families, and tagged UDP (802.1Q and QinQ).
    for (a, b) in [(IpAddr::from(A4), IpAddr::from(B4)), (A6.into(), B6.into())] {
        udp_exchange(&net, a, b, &[10, 300, 1200], 77);
        tcp_exchange(&net, a, b, 5000, 700);
        net.exec(
            &net.ns_a,
            &[
                "ping",
                "-q",
                "-c",
                "3",
                "-i",
                "0.05",
                "-W",
                "2",
                &b.to_string(),
            ],
        );
    }
    let tagged: [Tagged; 2] = [
        (&[(TPID_8021Q, 100)], 40_000, 5_000),
        (&[(TPID_8021AD, 200), (TPID_8021Q, 300)], 40_001, 5_001),
    ];
    for (tags, sport, dport) in tagged {
        let frame = |src, dst, sp, dp, payload| {
            let mut p = Packet::udp4(src, dst, sp, dp, payload);
            p.vlans = tags.to_vec();
            p.build()
        };
        let (a, b) = (A4.octets(), B4.octets());
        let req: Vec<Vec<u8>> = (0..4)
            .map(|i| frame(a, b, sport, dport, 20 + i * 100))
            .collect();
        let rep: Vec<Vec<u8>> = (0..3).map(|_| frame(b, a, dport, sport, 64)).collect();
        raw::send(&net.ns_a, &net.veth_a, &req);
        raw::send(&net.ns_b, &net.veth_b, &rep);
    }
    std::thread::sleep(Duration::from_millis(1500));
    let exit = agent.stop();
    assert!(exit.status.success(), "agent: {}", exit.stderr);
    let seen = watch.stop();
    seen.assert_conserved();
    let want = reference(&seen);
    assert!(want.len() >= 8, "the traffic's flows: {want:#?}");
    for proto in [1u8, 6, 17, 58] {
        assert!(
            want.keys().any(|k| k.0 == proto),
            "no flow of protocol {proto}: {want:#?}"
        );
    }
    assert!(want.keys().any(|k| k.5 == 100) && want.keys().any(|k| k.5 == 200));

    // The collector stores the last windows and re-exports them; nfacctd prints each second.
    let deadline = Instant::now() + Duration::from_secs(20);
    while pmacct(&pm_out, &want) != want && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_millis(500));
    let collector_log = collector.stop(libc::SIGTERM);
    let logs = [
        nfcapd1.stop(libc::SIGTERM),
        nfcapd2.stop(libc::SIGTERM),
        // nfacctd waits for its print plugin on SIGTERM; what it printed is on disk.
        nfacctd.stop(libc::SIGKILL),
    ];
    std::thread::sleep(Duration::from_millis(300));
    capture.stop(libc::SIGINT);
    let ctx = format!(
        "collector:\n{collector_log}\ncollectors:\n{}",
        logs.join("\n")
    );

    assert_eq!(
        nfdump(&nf1, &want, true),
        want,
        "nfcapd (agent, biflow)\n{ctx}"
    );
    assert_eq!(
        nfdump(&nf2, &want, false),
        want,
        "nfcapd (collector, uniflow)\n{ctx}"
    );
    assert_eq!(
        pmacct(&pm_out, &want),
        want,
        "nfacctd (collector, uniflow)\n{ctx}"
    );
    // nfcapd checks the sequence numbers (per observation domain) and reports gaps.
    for l in &logs[..2] {
        let errors: Vec<&str> = l
            .split("Sequence Errors: ")
            .skip(1)
            .map(|t| t.split(',').next().unwrap())
            .collect();
        assert!(
            !errors.is_empty() && errors.iter().all(|e| *e == "0"),
            "{ctx}"
        );
    }

    // tshark: every captured packet is IPFIX, none malformed, no expert warning; templates
    // and data from both exporters decoded.
    let pcap = dir.join("ipfix.pcap");
    let all = tshark(&pcap, "udp");
    assert!(!all.is_empty());
    assert_eq!(
        tshark(&pcap, "udp && !cflow"),
        Vec::<String>::new(),
        "not IPFIX"
    );
    assert_eq!(
        tshark(&pcap, "_ws.malformed || _ws.expert"),
        Vec::<String>::new(),
        "malformed or with expert info"
    );
    for port in [NFCAPD_AGENT, NFCAPD_COLLECTOR] {
        for what in ["cflow.template_id", "cflow.flowset_id >= 256"] {
            assert!(
                !tshark(&pcap, &format!("udp.dstport == {port} && {what}")).is_empty(),
                "{what} to port {port}"
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
