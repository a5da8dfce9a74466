//! Who sent it (docs/owners.md), on the real kernel:
//! - local flows: processes with distinct command names, each in a cgroup the test made,
//!   open known UDP and TCP flows from inside a test namespace; every flow carries the right
//!   pid, command and cgroup, also when the socket's maker handed it to a child that sent on
//!   it, and after every one of them has exited (short-lived processes);
//! - forwarded flows: a gateway namespace forwards two LAN namespaces to a WAN namespace;
//!   flows carry the LAN hosts' MACs, the one with a registered OUI its vendor, the one that
//!   sent a DHCP request with option 12 its host name;
//! - the socket map full: counted, every flow still counted exactly (owner without process),
//!   totals conserved.

use edge::{
    owner::OwnerConfig,
    probe::{attach::AttachMode, drain::Expiry, owner::OwnerOptions, ProbeOptions, Session},
    report::window::Window,
};
use shared::wire::{Device, Flow};
use std::{
    net::{Ipv4Addr, SocketAddrV4, TcpListener},
    process::{Command, Stdio},
    time::Duration,
};
use testkit::{
    cgroup::{fork_sender, Hand, Send, Server, TestCgroup},
    in_netns, sh, unique, TestNet, A4, B4,
};

fn probe(ifaces: Vec<String>, netns: &str, owner: OwnerConfig) -> ProbeOptions {
    ProbeOptions {
        ifaces,
        netns: Some(netns.into()),
        max_flows: 1024,
        attach: AttachMode::Tc,
        sample_every: 1,
        rtt: None,
        expiry: Expiry::default(),
        tcp_health: true,
        dns: true,
        owner: Some(owner),
    }
}

/// The window's one flow to `port`.
fn to_port(w: &Window, port: u16) -> Flow {
    let f: Vec<&Flow> = w.flows.iter().filter(|f| f.dst_port == port).collect();
    assert_eq!(f.len(), 1, "one flow to port {port}: {:?}", w.flows);
    *f[0]
}

/// `(pid, comm, service)` of a flow, names resolved.
fn process_of(w: &Window, f: &Flow) -> (Option<u32>, Option<String>, Option<String>) {
    let o = f.owner.unwrap_or_default();
    let name = |i: u32| w.names[i as usize].clone();
    (
        o.process.map(|p| p.pid),
        o.process.map(|p| name(p.comm)),
        o.service.map(name),
    )
}

/// A TCP server in `ns` at `addr` that reads each connection to its end, for `conns`
/// connections; returns once it listens.
fn serve(ns: &str, addr: SocketAddrV4, conns: usize) -> std::thread::JoinHandle<()> {
    let (tx, rx) = std::sync::mpsc::channel();
    let ns = ns.to_string();
    let h = std::thread::spawn(move || {
        in_netns(&ns, || {
            let l = TcpListener::bind(addr).unwrap();
            tx.send(()).unwrap();
            for _ in 0..conns {
                let (mut c, _) = l.accept().unwrap();
                std::io::copy(&mut c, &mut std::io::sink()).unwrap();
            }
        })
    });
    rx.recv_timeout(Duration::from_secs(5)).expect("server up");
    h
}

#[test]
fn local_flows_carry_their_process_and_cgroup() {
    let net = TestNet::new();
    net.static_neighbours();
    let (cg_a, cg_b) = (TestCgroup::new("a"), TestCgroup::new("b"));
    let mut session = Session::start(&probe(
        vec![net.veth_a.clone()],
        &net.ns_a,
        OwnerConfig::default(),
    ))
    .unwrap();
    let at = |p: u16| SocketAddrV4::new(A4, p);
    let to = |p: u16| SocketAddrV4::new(B4, p);
    let server = serve(&net.ns_b, to(5002), 1);
    let udp = fork_sender(
        &cg_a,
        &net.ns_a,
        "ef-udp-a",
        Send::Udp {
            from: at(41_001),
            to: to(5001),
            count: 3,
        },
        Hand::Own,
    );
    let tcp = fork_sender(
        &cg_b,
        &net.ns_a,
        "ef-tcp-b",
        Send::Tcp {
            from: at(41_002),
            to: to(5002),
            bytes: 10_000,
        },
        Hand::Own,
    );
    // The maker forks a child (another name) that sends on the inherited socket: the flow is
    // the maker's.
    let maker = fork_sender(
        &cg_b,
        &net.ns_a,
        "ef-maker",
        Send::Udp {
            from: at(41_003),
            to: to(5003),
            count: 2,
        },
        Hand::ToChild,
    );
    server.join().unwrap();
    // A server in ns_a accepts a connection from ns_b: the accepted socket is the kernel's
    // making, named after the process that bound the listening port.
    let srv = Server::fork(&cg_a, &net.ns_a, "ef-server", at(5004));
    in_netns(&net.ns_b, || {
        use std::io::{Read, Write};
        let mut c = std::net::TcpStream::connect(at(5004)).unwrap();
        c.write_all(&[7u8; 3000]).unwrap();
        c.shutdown(std::net::Shutdown::Write).unwrap();
        let mut back = Vec::new();
        c.read_to_end(&mut back).unwrap();
        assert_eq!(back, b"bye");
    });
    let server_pid = srv.pid;
    srv.wait();
    // Every sender has exited: the flows are drained after their processes are gone.
    std::thread::sleep(Duration::from_millis(300));
    let w = session.next_window().unwrap();
    assert!(w.is_conserved());
    let f = to_port(&w, 5001);
    assert_eq!(f.fwd.packets, 3);
    assert_eq!(
        process_of(&w, &f),
        (Some(udp), Some("ef-udp-a".into()), Some(cg_a.rel.clone()))
    );
    let f = to_port(&w, 5002);
    assert!(f.fwd.bytes > 10_000 && f.rev.packets > 0, "{f:?}");
    assert_eq!(
        process_of(&w, &f),
        (Some(tcp), Some("ef-tcp-b".into()), Some(cg_b.rel.clone()))
    );
    let f = to_port(&w, 5003);
    assert_eq!(f.fwd.packets, 2);
    assert_eq!(
        process_of(&w, &f),
        (Some(maker), Some("ef-maker".into()), Some(cg_b.rel.clone()))
    );
    let f = to_port(&w, 5004);
    assert!(f.fwd.bytes > 3000 && f.rev.bytes > 0, "{f:?}");
    assert_eq!(
        process_of(&w, &f),
        (
            Some(server_pid),
            Some("ef-server".into()),
            Some(cg_a.rel.clone())
        )
    );
    // Flows the test's senders did not make (the kernel's own ICMPv6) have no process.
    let stats = w
        .owner_stats
        .as_ref()
        .expect("owner counters with owners on");
    assert!(stats["owner_flows_owned"] >= 3, "{stats:?}");
    assert!(stats["owner_flows_by_port"] >= 1, "{stats:?}");
    assert!(stats["owner_sockets"] >= 3 && stats["owner_released"] >= 3);
    // The same in watch's JSON: the owner's indices into the window's names.
    let json: serde_json::Value = serde_json::from_str(&w.to_json()).unwrap();
    let flow = json["flows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["dst_port"] == 5001)
        .unwrap();
    assert_eq!(flow["owner"]["process"]["pid"], udp);
    let comm = flow["owner"]["process"]["comm"].as_u64().unwrap() as usize;
    assert_eq!(json["names"][comm], "ef-udp-a");
}

/// Off (`--no-owner`): no owner maps to read, no flow with an owner, no names, no counters.
#[test]
fn off_records_nothing() {
    let net = TestNet::new();
    net.static_neighbours();
    let cg = TestCgroup::new("off");
    let mut opts = probe(vec![net.veth_a.clone()], &net.ns_a, OwnerConfig::default());
    opts.owner = None;
    let mut session = Session::start(&opts).unwrap();
    assert!(session.maps().owner.is_none());
    fork_sender(
        &cg,
        &net.ns_a,
        "ef-off",
        Send::Udp {
            from: SocketAddrV4::new(A4, 41_201),
            to: SocketAddrV4::new(B4, 5201),
            count: 2,
        },
        Hand::Own,
    );
    std::thread::sleep(Duration::from_millis(300));
    let w = session.next_window().unwrap();
    assert_eq!(to_port(&w, 5201).fwd.packets, 2);
    assert!(w.flows.iter().all(|f| f.owner.is_none()));
    assert!(w.names.is_empty() && w.devices.is_empty() && w.owner_stats.is_none());
}

#[test]
fn a_full_socket_map_is_counted_and_loses_no_packet() {
    let net = TestNet::new();
    net.static_neighbours();
    let cg = TestCgroup::new("full");
    let owner = OwnerConfig {
        kernel: OwnerOptions { max_sockets: 8 },
        ..OwnerConfig::default()
    };
    let mut session = Session::start(&probe(vec![net.veth_a.clone()], &net.ns_a, owner)).unwrap();
    // 64 sockets held open: the map of 8 is full whatever else the machine does.
    let held: Vec<std::net::UdpSocket> = (0..64)
        .map(|_| std::net::UdpSocket::bind("127.0.0.1:0").unwrap())
        .collect();
    let ports = 5101..5105u16;
    for port in ports.clone() {
        fork_sender(
            &cg,
            &net.ns_a,
            "ef-full",
            Send::Udp {
                // Not bound: a bound port would name the flow (by port) all the same.
                from: SocketAddrV4::new(A4, 0),
                to: SocketAddrV4::new(B4, port),
                count: 5,
            },
            Hand::Own,
        );
    }
    std::thread::sleep(Duration::from_millis(300));
    let w = session.next_window().unwrap();
    drop(held);
    assert!(w.is_conserved());
    let stats = w.owner_stats.as_ref().unwrap();
    assert!(stats["owner_sockets_full"] >= 56, "{stats:?}");
    let mut without_process = 0;
    for port in ports {
        let f = to_port(&w, port);
        assert_eq!((f.fwd.packets, f.fwd.bytes), (5, 5 * 92), "port {port}");
        let (pid, comm, service) = process_of(&w, &f);
        // Not recorded: no process, but the socket's cgroup (from the packet) still names
        // the service.
        assert_eq!(service.as_deref(), Some(cg.rel.as_str()));
        if pid.is_none() {
            without_process += 1;
        } else {
            assert_eq!(comm.as_deref(), Some("ef-full"));
        }
    }
    assert!(
        without_process >= 1,
        "the senders' sockets found the map full"
    );
    assert!(stats["owner_flows_unknown_socket"] >= without_process);
}

/// A gateway between two LAN namespaces and a WAN namespace, IPv4:
/// `lan1 (10.201.1.2) ─ g1 [gw] g2 ─ lan2 (10.201.2.2)`, and `gw ─ wan (10.201.3.2)`.
struct Gateway {
    ns: [String; 4],
    /// The gateway's LAN interfaces (the agent's).
    g1: String,
    g2: String,
    lan2_dev: String,
}

const LAN1_MAC: &str = "f4:bd:9e:00:00:01";
const LAN2_MAC: [u8; 6] = [0x02, 0x00, 0x5e, 0x00, 0x02, 0x02];
const WAN: Ipv4Addr = Ipv4Addr::new(10, 201, 3, 2);

impl Gateway {
    fn new() -> Gateway {
        let t = unique("efo");
        let g = Gateway {
            ns: [
                format!("{t}-gw"),
                format!("{t}-l1"),
                format!("{t}-l2"),
                format!("{t}-wan"),
            ],
            g1: format!("{t}g1"),
            g2: format!("{t}g2"),
            lan2_dev: format!("{t}l2"),
        };
        for ns in &g.ns {
            sh(&["ip", "netns", "add", ns]);
        }
        let [gw, l1, l2, wan] = &g.ns;
        let w0 = format!("{t}w0");
        let wd = format!("{t}wd");
        let l1d = format!("{t}l1");
        for (a, ans, b, bns) in [
            (&g.g1, gw, &l1d, l1),
            (&g.g2, gw, &g.lan2_dev, l2),
            (&w0, gw, &wd, wan),
        ] {
            sh(&[
                "ip", "link", "add", a, "netns", ans, "type", "veth", "peer", "name", b, "netns",
                bns,
            ]);
        }
        let mac2 = LAN2_MAC.map(|b| format!("{b:02x}")).join(":");
        sh(&["ip", "-n", l1, "link", "set", &l1d, "address", LAN1_MAC]);
        sh(&["ip", "-n", l2, "link", "set", &g.lan2_dev, "address", &mac2]);
        let ends = [
            (gw, &g.g1, "10.201.1.1/24"),
            (gw, &g.g2, "10.201.2.1/24"),
            (gw, &w0, "10.201.3.1/24"),
            (l1, &l1d, "10.201.1.2/24"),
            (l2, &g.lan2_dev, "10.201.2.2/24"),
            (wan, &wd, "10.201.3.2/24"),
        ];
        for (ns, dev, addr) in ends {
            sh(&["ip", "-n", ns, "addr", "add", addr, "dev", dev]);
            sh(&["ip", "-n", ns, "link", "set", dev, "up"]);
        }
        for (ns, dev, _) in ends {
            testkit::wait_oper_up(ns, dev);
        }
        for (ns, via) in [(l1, "10.201.1.1"), (l2, "10.201.2.1"), (wan, "10.201.3.1")] {
            sh(&["ip", "-n", ns, "route", "add", "10.201.0.0/16", "via", via]);
        }
        in_netns(gw, || std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")).unwrap();
        g
    }

    /// `count` datagrams from `ns` to the WAN host's `port`.
    fn send(&self, ns: &str, port: u16, count: usize) {
        in_netns(ns, || {
            let s = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
            for _ in 0..count {
                s.send_to(b"hello", (WAN, port)).unwrap();
            }
        });
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        for ns in &self.ns {
            let _ = Command::new("ip")
                .args(["netns", "del", ns])
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// Sends one raw Ethernet frame out of `dev` in `ns`.
fn send_frame(ns: &str, dev: &str, frame: &[u8]) {
    in_netns(ns, || {
        let ifindex = edge::probe::netdev::ifindex(dev).unwrap();
        // SAFETY: a packet socket, a zeroed address with the fields sendto reads, our buffer.
        unsafe {
            let s = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0);
            assert!(s >= 0);
            let mut sll: libc::sockaddr_ll = std::mem::zeroed();
            sll.sll_family = libc::AF_PACKET as u16;
            sll.sll_ifindex = ifindex as i32;
            sll.sll_halen = 6;
            let n = libc::sendto(
                s,
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&raw const sll).cast(),
                size_of::<libc::sockaddr_ll>() as u32,
            );
            libc::close(s);
            assert_eq!(
                n,
                frame.len() as isize,
                "{}",
                std::io::Error::last_os_error()
            );
        }
    });
}

fn device(w: &Window, i: Option<u32>) -> &Device {
    &w.devices[i.expect("a device") as usize]
}

#[test]
fn forwarded_flows_carry_the_lan_devices() {
    let g = Gateway::new();
    let mut session = Session::start(&probe(
        vec![g.g1.clone(), g.g2.clone()],
        &g.ns[0],
        OwnerConfig::default(),
    ))
    .unwrap();
    // lan2 asks for an address, naming itself.
    let dhcp = edge::owner::dhcp::craft_request(LAN2_MAC, Some("printer-2"));
    send_frame(&g.ns[2], &g.lan2_dev, &dhcp);
    std::thread::sleep(Duration::from_millis(100));
    g.send(&g.ns[1], 6001, 4);
    g.send(&g.ns[2], 6002, 3);
    std::thread::sleep(Duration::from_millis(300));
    let w = session.next_window().unwrap();
    assert!(w.is_conserved());
    let mac1 = [0xf4, 0xbd, 0x9e, 0, 0, 1];
    let name = |i: Option<u32>| i.map(|i| w.names[i as usize].as_str());
    // On the gateway's interface towards lan1: lan1's MAC, its vendor from the registry.
    let f = to_port(&w, 6001);
    assert_eq!(f.fwd.packets, 4);
    let o = f.owner.expect("an owner");
    assert_eq!(o.process, None, "forwarded: no local socket");
    let d = device(&w, o.initiator);
    assert_eq!(d.mac, mac1);
    assert_eq!(name(d.vendor), Some("Cisco Systems, Inc"));
    assert_eq!(name(d.host_name), None);
    // The responder as seen there: the gateway's own interface.
    assert_ne!(device(&w, o.responder).mac, mac1);
    // Towards lan2: its MAC, no vendor (locally administered), the DHCP host name and id.
    let f = to_port(&w, 6002);
    assert_eq!(f.fwd.packets, 3);
    let d = device(&w, f.owner.unwrap().initiator);
    assert_eq!(d.mac, LAN2_MAC);
    assert_eq!(name(d.vendor), None);
    assert_eq!(name(d.host_name), Some("printer-2"));
    assert_eq!(name(d.client_id), Some("01:02:00:5e:00:02:02"));
    let stats = w.owner_stats.as_ref().unwrap();
    assert_eq!(stats["dhcp_requests"], 1, "{stats:?}");
    // The DHCP request itself is a flow too, from lan2's MAC.
    assert!(w.flows.iter().any(|f| f.dst_port == 67));
}
