//! `edgeflow watch` and real TCP connections between two test namespaces: each connection's
//! outcome is reported decided exactly once (a closed port: refused; FIN both ways: closed;
//! SO_LINGER 0 after data: reset), IPv4 and IPv6, at XDP and TC ingress with TC egress, on
//! the server's side (connections the box accepts) and the client's (connections it makes).
//! When the senders' `nstat` says nothing was retransmitted, nothing may be counted.

use serde_json::Value;
use std::{
    collections::BTreeMap,
    io::{ErrorKind, Read, Write},
    net::{IpAddr, Shutdown, TcpListener, TcpStream},
    time::Duration,
};
use testkit::{nstat, watch::Watch, TestNet, A4, A6, B4, B6};

const BIN: &str = env!("CARGO_BIN_EXE_edgeflow");

/// SO_LINGER {on, 0}: close sends RST instead of FIN.
fn linger_zero(s: &TcpStream) {
    use std::os::fd::AsRawFd;
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid socket fd and a linger struct of the right size.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&l as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "SO_LINGER: {}", std::io::Error::last_os_error());
}

/// Outcomes reported with `decided` set, per client port.
fn decided(flows: &[&Value]) -> BTreeMap<u64, Vec<String>> {
    let mut m: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    for f in flows {
        let t = &f["tcp"];
        if t["decided"] == true {
            m.entry(f["src_port"].as_u64().unwrap())
                .or_default()
                .push(t["outcome"].as_str().unwrap().to_string());
        }
    }
    m
}

fn outcomes(v6: bool, attach: &str, client_side: bool) {
    let net = TestNet::new();
    net.static_neighbours();
    let (a, b): (IpAddr, IpAddr) = if v6 {
        (A6.into(), B6.into())
    } else {
        (A4.into(), B4.into())
    };
    let (listener, gone_port) = net.in_ns(&net.ns_b, || {
        let l = TcpListener::bind((b, 0)).unwrap();
        // A port nobody listens on: bound once, then let go.
        let gone = TcpListener::bind((b, 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        (l, gone)
    });
    let port = listener.local_addr().unwrap().port();
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
    let retrans0 = nstat(&net.ns_a, "TcpRetransSegs") + nstat(&net.ns_b, "TcpRetransSegs");

    // Refused.
    net.in_ns(&net.ns_a, || {
        let s = TcpStream::connect_timeout(&(b, gone_port).into(), Duration::from_secs(5));
        assert_eq!(s.unwrap_err().kind(), ErrorKind::ConnectionRefused);
    });

    // Closed: data both ways, FIN both ways.
    let server = std::thread::spawn(move || {
        for reset in [false, true] {
            let (mut s, _) = listener.accept().unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut buf = [0u8; 1000];
            if reset {
                s.read_exact(&mut buf[..100]).unwrap();
                linger_zero(&s);
                drop(s);
            } else {
                let mut got = Vec::new();
                s.read_to_end(&mut got).unwrap();
                assert_eq!(got.len(), 1000);
                s.write_all(&buf).unwrap();
            }
        }
    });
    let closed_port = net.in_ns(&net.ns_a, || {
        let mut c = TcpStream::connect((b, port)).unwrap();
        c.write_all(&[1u8; 1000]).unwrap();
        c.shutdown(Shutdown::Write).unwrap();
        let mut back = Vec::new();
        c.read_to_end(&mut back).unwrap();
        assert_eq!(back.len(), 1000);
        c.local_addr().unwrap().port()
    });
    // Reset after data.
    let reset_port = net.in_ns(&net.ns_a, || {
        let mut c = TcpStream::connect((b, port)).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        c.write_all(&[2u8; 100]).unwrap();
        let mut x = [0u8; 1];
        let e = c.read(&mut x).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ConnectionReset);
        c.local_addr().unwrap().port()
    });
    server.join().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let got = w.stop();
    got.assert_conserved();
    let retrans =
        nstat(&net.ns_a, "TcpRetransSegs") + nstat(&net.ns_b, "TcpRetransSegs") - retrans0;

    let ours: Vec<&Value> = got
        .flows()
        .filter(|f| f["proto"] == 6 && f["src"] == a.to_string() && f["dst"] == b.to_string())
        .collect();
    let ctx = format!(
        "v6 {v6}, {attach}, client side {client_side}: {ours:#?}\n{}",
        got.stderr
    );
    assert!(ours.iter().all(|f| f["tcp"].is_object()), "{ctx}");
    let d = decided(&ours);
    // The refused attempt's own port: the one flow to the port nobody listens on.
    let to_gone: Vec<&&Value> = ours.iter().filter(|f| f["dst_port"] == gone_port).collect();
    assert!(!to_gone.is_empty(), "{ctx}");
    let refused_port = to_gone[0]["src_port"].as_u64().unwrap() as u16;
    assert!(
        to_gone.iter().all(|f| f["src_port"] == refused_port),
        "{ctx}"
    );
    let want = |o: &[&str]| Some(o.iter().map(|s| s.to_string()).collect::<Vec<_>>());
    assert_eq!(
        d.get(&(refused_port as u64)).cloned(),
        want(&["refused"]),
        "{ctx}"
    );
    // Established and closed: in one window or two, each once.
    let mut c = d.get(&(closed_port as u64)).cloned().unwrap_or_default();
    c.retain(|o| o != "established");
    assert_eq!(Some(c), want(&["closed"]), "{ctx}");
    let mut r = d.get(&(reset_port as u64)).cloned().unwrap_or_default();
    r.retain(|o| o != "established");
    assert_eq!(Some(r), want(&["reset"]), "{ctx}");
    for (p, os) in &d {
        assert!(
            os.iter().filter(|o| *o == "established").count() <= 1,
            "{p}: {ctx}"
        );
    }
    // Counts: one RST b → a on the refused and the reset flows, one FIN each way on the
    // closed one, one SYN each.
    let sum = |port: u16, f: &dyn Fn(&Value) -> u64| -> u64 {
        ours.iter()
            .filter(|x| x["src_port"] == port)
            .map(|x| f(&x["tcp"]))
            .sum()
    };
    let n = |v: &Value| v.as_u64().unwrap();
    assert_eq!(sum(refused_port, &|t| n(&t["rev"]["rst"])), 1, "{ctx}");
    assert_eq!(sum(reset_port, &|t| n(&t["rev"]["rst"])), 1, "{ctx}");
    assert_eq!(sum(reset_port, &|t| n(&t["fwd"]["rst"])), 0, "{ctx}");
    assert_eq!(
        (
            sum(closed_port, &|t| n(&t["fwd"]["fin"])),
            sum(closed_port, &|t| n(&t["rev"]["fin"]))
        ),
        (1, 1),
        "{ctx}"
    );
    for p in [refused_port, closed_port, reset_port] {
        assert_eq!(sum(p, &|t| n(&t["syn_retries"])), 0, "{ctx}");
    }
    if retrans == 0 {
        let rtx: u64 = ours
            .iter()
            .map(|f| {
                n(&f["tcp"]["fwd"]["retrans"]["packets"])
                    + n(&f["tcp"]["rev"]["retrans"]["packets"])
            })
            .sum();
        assert_eq!(rtx, 0, "no retransmission sent, none counted: {ctx}");
    }
}

#[test]
fn outcomes_ipv4_xdp_accepted() {
    outcomes(false, "xdp", false);
}

#[test]
fn outcomes_ipv6_tc_accepted() {
    outcomes(true, "tc", false);
}

#[test]
fn outcomes_ipv4_tc_made() {
    outcomes(false, "tc", true);
}

#[test]
fn outcomes_ipv6_xdp_made() {
    outcomes(true, "xdp", true);
}

/// `--no-tcp-health`: TCP flows carry no block and windows do not claim it.
#[test]
fn off_on_the_command_line() {
    let net = TestNet::new();
    let gone = net.in_ns(&net.ns_b, || {
        TcpListener::bind((B4, 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    });
    let w = Watch::start(
        BIN,
        &net.ns_b,
        &["--iface", &net.veth_b, "--interval", "1", "--no-tcp-health"],
    );
    net.in_ns(&net.ns_a, || {
        let e = TcpStream::connect_timeout(&(B4, gone).into(), Duration::from_secs(5));
        assert_eq!(e.unwrap_err().kind(), ErrorKind::ConnectionRefused);
    });
    std::thread::sleep(Duration::from_millis(300));
    let got = w.stop();
    let tcp: Vec<&Value> = got.flows().filter(|f| f["proto"] == 6).collect();
    assert!(!tcp.is_empty(), "the refused connect was counted");
    assert!(tcp.iter().all(|f| f.get("tcp").is_none()), "{tcp:?}");
    assert!(got.windows.iter().all(|w| w.get("tcp_health").is_none()));
}
