//! Reading the kernel flow table: thousands of real IPv4 and IPv6 flows each come out once
//! with exactly their packets, and are found and freed by key as the programs find them; the
//! entries' tick stamps convert back to the time their packets passed; and drains over such
//! a table give every flow exactly its packets of the window, as flows come, go and return.

use edge::probe::{attach::AttachMode, clock::monotonic_ns, drain::Expiry, ProbeOptions, Session};
use shared::{wire::Addr, FlowKey};
use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr, UdpSocket},
    time::Duration,
};
use testkit::{TestNet, A4, A6, B4, B6};

/// Sends `per_port` datagrams from A's port 40000 to each of `ports` at B (IPv4 or IPv6): the
/// same flows every time.
fn send(net: &TestNet, v6: bool, ports: std::ops::Range<u16>, per_port: usize) {
    let (from, to): (IpAddr, IpAddr) = if v6 {
        (A6.into(), B6.into())
    } else {
        (A4.into(), B4.into())
    };
    net.in_ns(&net.ns_a, || {
        let s = UdpSocket::bind(SocketAddr::new(from, 40_000)).unwrap();
        for _ in 0..per_port {
            for port in ports.clone() {
                s.send_to(b"x", SocketAddr::new(to, port)).unwrap();
            }
        }
    });
    // veth delivers asynchronously: let the last packets land before the table is read.
    std::thread::sleep(Duration::from_millis(300));
}

/// The programs loaded with a table of `max_flows` and attached (TC) to B's end of `net`.
fn load_on(net: &TestNet, max_flows: u32, expiry: Expiry) -> Session {
    net.static_neighbours();
    Session::start(&ProbeOptions {
        ifaces: vec![net.veth_b.clone()],
        netns: Some(net.ns_b.clone()),
        max_flows,
        attach: AttachMode::Tc,
        sample_every: 1,
        rtt: None,
        expiry,
        tcp_health: true,
        owner: None,
        dns: true,
    })
    .unwrap()
}

#[test]
fn every_flow_once_with_its_packets_and_found_by_key() {
    let net = TestNet::new();
    let session = load_on(&net, 4096, Expiry::default());
    let table = &session.maps().table;
    // 3000 IPv4 and 500 IPv6 flows, two packets each, from one port to many.
    send(&net, false, 20_000..23_000, 2);
    send(&net, true, 30_000..30_500, 2);
    let mut flows = Vec::new();
    table.read_flows(&mut flows);
    let udp_to = |k: &FlowKey, ports: std::ops::Range<u16>| {
        k.proto == 17 && (ports.contains(&k.port_a) || ports.contains(&k.port_b))
    };
    // The kernel's own IPv6 traffic (duplicate address detection, MLD reports) adds flows at
    // any moment: the test's flows are looked at.
    let ours = |k: &FlowKey| udp_to(k, 20_000..23_000) || udp_to(k, 30_000..30_500);
    let read = flows.len();
    let flows: BTreeMap<_, _> = flows.into_iter().collect();
    assert_eq!(flows.len(), read, "a flow came twice");
    let flows: BTreeMap<_, _> = flows.into_iter().filter(|(k, _)| ours(k)).collect();
    let v4: Vec<FlowKey> = flows
        .keys()
        .filter(|k| udp_to(k, 20_000..23_000))
        .copied()
        .collect();
    let v6: Vec<FlowKey> = flows
        .keys()
        .filter(|k| udp_to(k, 30_000..30_500))
        .copied()
        .collect();
    assert_eq!((v4.len(), v6.len()), (3000, 500));
    let is_mapped = |a: &[u8; 16]| a[..12] == [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff];
    assert!(
        v4.iter()
            .all(|k| is_mapped(&k.addr_a) && is_mapped(&k.addr_b)),
        "IPv4 keys come out mapped"
    );
    assert!(v6.iter().all(|k| !is_mapped(&k.addr_a)));
    for (k, v) in &flows {
        assert_eq!(v.packets()[0] + v.packets()[1], 2, "{k:?}");
    }

    // Found by key where the read found them; freed, gone; freed again, no error.
    for k in v4.iter().chain(&v6).step_by(7) {
        assert_eq!(table.get(k), Some(flows[k]));
    }
    // The programs count the slots they claim, the agent the ones it frees: the same as
    // the bitmap holds (the table's pressure is judged by it, `shared::table`).
    let held =
        |t: &edge::probe::table::FlowTable| (t.slots().fill_count(), t.slots().held() as u64);
    let (n, bits) = held(table);
    assert_eq!(n, bits);
    for k in [v4[0], v6[0]] {
        assert!(table.remove(&k));
        assert_eq!(table.get(&k), None);
        assert!(!table.remove(&k), "removing a gone flow");
    }
    let (m, bits) = held(table);
    assert_eq!((m, bits), (n - 2, bits));
    let mut after = Vec::new();
    table.read_flows(&mut after);
    assert_eq!(
        after.iter().filter(|(k, _)| ours(k)).count(),
        flows.len() - 2
    );
    // A freed flow's next packet puts it back, counted from one.
    let port = v4[0].port_a.min(v4[0].port_b);
    send(&net, false, port..port + 1, 1);
    let back = table.get(&v4[0]).expect("back in the table");
    assert_eq!(back.packets()[0] + back.packets()[1], 1);
    drop(session);
}

/// A packet sent at a known monotonic time gets first/last-seen stamps that the agent's
/// `TickClock` converts to within a tick of it.
#[test]
fn tick_stamps_convert_to_the_time_the_packet_passed() {
    let net = TestNet::new();
    let session = load_on(&net, 1024, Expiry::default());
    let (table, ticks) = (&session.maps().table, &session.maps().ticks);
    let tick_ns = ticks.tick_ns();
    assert!(
        [1_000_000, 3_333_333, 4_000_000, 10_000_000].contains(&tick_ns),
        "{tick_ns} ns per tick"
    );
    let sock = net.in_ns(&net.ns_a, || {
        UdpSocket::bind(SocketAddr::new(A4.into(), 0)).unwrap()
    });
    let to = SocketAddr::new(B4.into(), 31_000);
    let first_at = monotonic_ns();
    sock.send_to(b"first", to).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let last_at = monotonic_ns();
    sock.send_to(b"last", to).unwrap();
    std::thread::sleep(Duration::from_millis(100));

    let mut flows = Vec::new();
    table.read_flows(&mut flows);
    let (_, v) = flows
        .iter()
        .find(|(k, _)| k.port_a == 31_000 || k.port_b == 31_000)
        .expect("the flow is in the table");
    assert_eq!(v.packets()[0] + v.packets()[1], 2);
    let now = ticks.now().unwrap();
    // A stamp is the tick the packet passed in: up to one tick before it, never after the
    // packet's own tick ends.
    let slack = tick_ns + 2_000_000;
    for (what, stamp, at) in [
        ("first", v.first_seen, first_at),
        ("last", v.last_seen(), last_at),
    ] {
        let got = now.to_mono_ns(stamp);
        assert!(
            got + slack >= at && got <= at + slack + 50_000_000,
            "{what}: stamp {got} ns, sent at {at} ns (tick {tick_ns} ns)"
        );
    }
    drop(session);
}

/// Thousands of flows over four drains: each window reports every flow with exactly the
/// packets it carried in that window — flows that go on, new ones, quiet ones (absent), and
/// flows expired by a drain that come back (counted from zero again, not against what they
/// had before).
#[test]
fn drains_give_every_flow_exactly_its_packets_of_the_window() {
    let net = TestNet::new();
    let expiry = Expiry {
        inactive: Duration::from_millis(1500),
        ..Expiry::default()
    };
    let mut session = load_on(&net, 8192, expiry);
    // Sends `sends` of (IPv6, ports at B, packets each), drains, and checks that the window
    // has exactly those packets for those flows and none for our other flows; a mismatch
    // shows the first few flows that differ. Returns the flows the drain expired.
    type Sends<'a> = &'a [(bool, std::ops::Range<u16>, u64)];
    let window = |session: &mut Session, sends: Sends| {
        let mut want = BTreeMap::new();
        for (v6, ports, n) in sends {
            send(&net, *v6, ports.clone(), *n as usize);
            for p in ports.clone() {
                want.insert((*v6, p), *n);
            }
        }
        let w = session.next_window().unwrap();
        assert!(w.is_conserved());
        let mut got = BTreeMap::new();
        for f in w.flows.iter().filter(|f| f.proto == 17) {
            let (v6, port) = (matches!(f.dst, Addr::V6(_)), f.dst_port);
            if (20_000..24_000).contains(&port) || (30_000..31_000).contains(&port) {
                assert!(
                    got.insert((v6, port), f.total().packets).is_none(),
                    "{port} twice"
                );
            }
        }
        let keys: std::collections::BTreeSet<_> = got.keys().chain(want.keys()).collect();
        let wrong: Vec<_> = keys
            .into_iter()
            .filter(|k| got.get(k) != want.get(k))
            .map(|k| (k, got.get(k), want.get(k)))
            .collect();
        assert!(
            wrong.is_empty(),
            "{} flows differ (flow, got, want), first: {:?}",
            wrong.len(),
            &wrong[..wrong.len().min(5)]
        );
        w.expired_flows
    };

    window(
        &mut session,
        &[(false, 20_000..23_000, 1), (true, 30_000..30_500, 1)],
    );
    // Some go on, some are new, some are quiet.
    window(
        &mut session,
        &[
            (false, 20_000..22_000, 2),
            (false, 23_000..23_500, 1),
            (true, 30_000..30_500, 3),
        ],
    );
    // Everything goes quiet past the inactivity limit: the next drain removes what the last
    // one did not.
    std::thread::sleep(Duration::from_millis(1600));
    assert!(window(&mut session, &[]) > 0);
    let mut left = Vec::new();
    session.maps().table.read_flows(&mut left);
    assert_eq!(left.iter().filter(|(k, _)| k.proto == 17).count(), 0);
    // Expired flows come back.
    window(
        &mut session,
        &[(false, 20_000..20_700, 1), (true, 30_000..30_100, 2)],
    );
    drop(session);
}
