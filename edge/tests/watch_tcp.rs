//! `edgeflow watch` against a real TCP transfer between two test namespaces: exact packets and
//! bytes per direction, handshake and close included, with offloads on and off, in both
//! attach modes.
//!
//! Offloads on, TC sees GSO aggregates on egress and (in `tc` mode) on ingress, and must count
//! each as its `gso_segs` wire segments. The truth is then the senders' own TCP segment
//! counters. Offloads off, every skb is a wire packet and the truth is a capture.

use std::{
    io::{Read, Write},
    net::{IpAddr, Shutdown, TcpListener, TcpStream},
    time::Duration,
};
use testkit::{capture::Capture, nstat, watch::Watch, TestNet, A4, B4};

const BIN: &str = env!("CARGO_BIN_EXE_edgeflow");

/// Client → server and server → client payload bytes.
const UP: usize = 1_000_000;
const DOWN: usize = 300_000;

/// Send buffer of both ends. It bounds what is in flight to a few dozen segments: native XDP
/// on a veth queues frames in a 256-entry ring and drops when it is full, and a drop before
/// the hook would be a segment the sender counted and the agent never saw.
const SNDBUF: libc::c_int = 64 * 1024;

fn small_sndbuf(s: &TcpStream) {
    use std::os::fd::AsRawFd;
    // SAFETY: a valid socket fd and a c_int option value of the right size.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            (&SNDBUF as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "SO_SNDBUF: {}", std::io::Error::last_os_error());
}

/// On a busy machine an ACK can be late by more than the tail-loss-probe timeout (about two
/// round trips, which on a veth is microseconds, floored at 10 ms), and the sender then
/// resends its last segment: a retransmission on a link that loses nothing. Turning TLP off
/// in the test namespaces (`tcp_early_retrans`, per namespace) leaves only the 200 ms RTO.
fn no_tail_loss_probes(net: &TestNet) {
    for ns in [&net.ns_a, &net.ns_b] {
        net.in_ns(ns, || {
            std::fs::write("/proc/sys/net/ipv4/tcp_early_retrans", "0")
        })
        .unwrap_or_else(|e| panic!("{ns}: tcp_early_retrans: {e}"));
    }
}

/// Segments a namespace's TCP stack sent: new ones and retransmissions.
fn segments_sent(ns: &str) -> (u64, u64) {
    (nstat(ns, "TcpOutSegs"), nstat(ns, "TcpRetransSegs"))
}

/// Client in ns_a sends `UP` bytes and half-closes; the server in ns_b reads to the end,
/// answers `DOWN` bytes and closes; the client reads to the end and closes. Returns the
/// client's port.
fn transfer(net: &TestNet, listener: TcpListener) -> u16 {
    let dport = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        small_sndbuf(&s);
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut buf = vec![0u8; 1 << 16];
        let mut got = 0;
        loop {
            match s.read(&mut buf).unwrap() {
                0 => break,
                n => got += n,
            }
        }
        assert_eq!(got, UP);
        s.write_all(&vec![9u8; DOWN]).unwrap();
        // Dropping the socket closes it: FIN.
    });
    let mut c = net.in_ns(&net.ns_a, || TcpStream::connect((B4, dport)).unwrap());
    small_sndbuf(&c);
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let sport = c.local_addr().unwrap().port();
    c.write_all(&vec![7u8; UP]).unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    let mut back = Vec::new();
    c.read_to_end(&mut back).unwrap();
    assert_eq!(back.len(), DOWN);
    drop(c);
    server.join().unwrap();
    sport
}

/// Runs the transfer and checks it, again (at most 3 times) only when a sender retransmitted:
/// a retransmission repeats payload by an amount no counter tells, so that run has no byte
/// truth. A count that disagrees with the truth fails at once.
fn tcp_exact(attach: &str, offloads: bool) {
    for attempt in 1..=3 {
        match tcp_attempt(attach, offloads) {
            Ok(()) => return,
            Err(retrans) => eprintln!(
                "{attach}, offloads {offloads}, attempt {attempt}: {retrans} retransmitted \
                 segments, running again"
            ),
        }
    }
    panic!("every attempt saw retransmissions");
}

/// `Err(n)`: the senders retransmitted `n` segments; nothing was checked.
fn tcp_attempt(attach: &str, offloads: bool) -> Result<(), u64> {
    let net = TestNet::new();
    net.static_neighbours();
    net.set_offloads(offloads);
    no_tail_loss_probes(&net);
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
            attach,
        ],
    );
    // Offloads off: the capture on the client's veth is the wire. On: a capture where the
    // agent's hooks are shows the skbs they were given (aggregates).
    let filter = format!("tcp port {dport}");
    let cap = if offloads {
        Capture::start(&net.ns_b, &net.veth_b, &filter)
    } else {
        Capture::start(&net.ns_a, &net.veth_a, &filter)
    };
    let (a0, b0) = (segments_sent(&net.ns_a), segments_sent(&net.ns_b));
    let sport = transfer(&net, listener);
    // The client's last ACK answers the server's FIN at once; leave it time to cross.
    std::thread::sleep(Duration::from_millis(300));
    let (a1, b1) = (segments_sent(&net.ns_a), segments_sent(&net.ns_b));
    let cap = cap.stop();
    let got = w.stop();
    got.assert_conserved();

    let (a, b): (IpAddr, IpAddr) = (A4.into(), B4.into());
    let ours = |f: &serde_json::Value| {
        f["proto"] == 6
            && f["src"] == a.to_string()
            && f["dst"] == b.to_string()
            && f["src_port"] == sport
            && f["dst_port"] == dport
    };
    let s = got.sum(ours);
    // The flags seen since the flow began: handshake, data and close.
    let flags = got.flows().filter(|f| ours(f)).last().unwrap()["tcp_flags"]
        .as_u64()
        .unwrap();
    let (syn, ack, fin) = (0x02, 0x10, 0x01);
    assert_eq!(
        flags & (syn | ack | fin),
        syn | ack | fin,
        "tcp_flags {flags:#x}"
    );
    let ctx = format!(
        "attach {attach}, offloads {offloads}: {s:?}\n{}",
        got.stderr
    );

    let retrans = (a1.1 - a0.1) + (b1.1 - b0.1);
    if retrans > 0 {
        return Err(retrans);
    }
    // Packets: every segment each sender's stack put out, handshake and close included.
    let sent_fwd = (a1.0 - a0.0) + (a1.1 - a0.1);
    let sent_rev = (b1.0 - b0.0) + (b1.1 - b0.1);
    assert_eq!(
        (s.packets_fwd, s.packets_rev),
        (sent_fwd, sent_rev),
        "{ctx}"
    );

    // Bytes from the segment counts: each segment is 20 bytes of IPv4 header plus a TCP header of
    // 20 bytes and options. Linux puts MSS (4), SACK-permitted (2), timestamps (10), window
    // scale (3) and a NOP (1) into SYN and SYN-ACK: 40 bytes of TCP header; every later
    // segment carries the timestamp option only (12 with two NOPs): 32. No loss on a veth,
    // so no SACK blocks, and payload is sent once: bytes = payload + 52 per segment + 8 for
    // the SYN (or SYN-ACK) of each direction.
    let want_fwd = UP as u64 + 52 * sent_fwd + 8;
    let want_rev = DOWN as u64 + 52 * sent_rev + 8;
    assert_eq!((s.bytes_fwd, s.bytes_rev), (want_fwd, want_rev), "{ctx}");

    let (cf, cr) = (cap.count(a, b), cap.count(b, a));
    if offloads {
        // The transfer must really have crossed the hooks in aggregates, or this would not
        // prove segment counting: fewer skbs than segments, in each direction TC saw. (In xdp
        // mode ingress is native XDP, which sees frames before GRO, and turns GSO off on the
        // peer: one frame a segment.)
        assert!(
            cr.0 < s.packets_rev,
            "no aggregates b→a: capture {cr:?}; {ctx}"
        );
        if attach == "tc" {
            assert!(
                cf.0 < s.packets_fwd,
                "no aggregates a→b: capture {cf:?}; {ctx}"
            );
        }
    } else {
        assert_eq!(
            (s.packets_fwd, s.bytes_fwd),
            cf,
            "capture a→b; {ctx}\n{}",
            cap.report
        );
        assert_eq!(
            (s.packets_rev, s.bytes_rev),
            cr,
            "capture b→a; {ctx}\n{}",
            cap.report
        );
    }
    Ok(())
}

#[test]
fn tcp_exact_tc_offloads_on() {
    tcp_exact("tc", true);
}

#[test]
fn tcp_exact_xdp_offloads_on() {
    tcp_exact("xdp", true);
}

#[test]
fn tcp_exact_tc_offloads_off() {
    tcp_exact("tc", false);
}

#[test]
fn tcp_exact_xdp_offloads_off() {
    tcp_exact("xdp", false);
}
