//! Known traffic between the two namespaces of a [`TestNet`], with what was sent returned so
//! tests can compare it to what the agent counted.

use crate::TestNet;
use std::{
    net::{IpAddr, SocketAddr, UdpSocket},
    time::Duration,
};

/// IP + UDP header bytes for an address family.
pub fn udp_overhead(a: IpAddr) -> u64 {
    match a {
        IpAddr::V4(_) => 20 + 8,
        IpAddr::V6(_) => 40 + 8,
    }
}

/// Sends one datagram of each size from `a` (in ns_a) to `b` (in ns_b); b answers each with
/// `reply` bytes before the next goes out. Returns (client port, server port).
pub fn udp_exchange(
    net: &TestNet,
    a: IpAddr,
    b: IpAddr,
    sizes: &[usize],
    reply: usize,
) -> (u16, u16) {
    let server = net.in_ns(&net.ns_b, || {
        UdpSocket::bind(SocketAddr::new(b, 0)).unwrap()
    });
    let client = net.in_ns(&net.ns_a, || {
        UdpSocket::bind(SocketAddr::new(a, 0)).unwrap()
    });
    let to = server.local_addr().unwrap();
    for s in [&server, &client] {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    }
    let mut buf = vec![0u8; 65536];
    for &n in sizes {
        client.send_to(&vec![7u8; n], to).unwrap();
        let (got, from) = server.recv_from(&mut buf).unwrap();
        assert_eq!(got, n);
        server.send_to(&vec![9u8; reply], from).unwrap();
        client.recv_from(&mut buf).unwrap();
    }
    (client.local_addr().unwrap().port(), to.port())
}

/// One UDP flow sent by [`udp_flows`]: client port, datagrams and IP bytes sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SentFlow {
    pub client_port: u16,
    pub packets: u64,
    pub bytes: u64,
}

/// `flows` one-way UDP flows from ns_a (IPv4 `a`, client ports `first_port..`) to one port
/// of `b` in ns_b: flow i sends `1 + i % 3` datagrams of `i % 200` payload bytes. Nobody
/// reads the server socket: once its buffer is full the kernel drops datagrams there,
/// after the agent's hooks have counted them, and without an ICMP error that would add a
/// flow. Returns the server port and what each flow sent.
pub fn udp_flows(
    net: &TestNet,
    a: IpAddr,
    b: IpAddr,
    first_port: u16,
    flows: u16,
) -> (u16, Vec<SentFlow>) {
    let server = net.in_ns(&net.ns_b, || {
        UdpSocket::bind(SocketAddr::new(b, 0)).unwrap()
    });
    let to = server.local_addr().unwrap();
    let mut sent = Vec::with_capacity(flows as usize);
    // A batch of sockets at a time keeps the number of open files small; the ports are
    // explicit, so no two flows share one.
    for batch in (0..flows).collect::<Vec<_>>().chunks(200) {
        let socks: Vec<(u16, UdpSocket)> = net.in_ns(&net.ns_a, || {
            batch
                .iter()
                .map(|i| {
                    (
                        *i,
                        UdpSocket::bind(SocketAddr::new(a, first_port + i)).unwrap(),
                    )
                })
                .collect()
        });
        for (i, s) in &socks {
            let (count, payload) = (1 + (*i as u64 % 3), *i as usize % 200);
            for _ in 0..count {
                s.send_to(&vec![1u8; payload], to).unwrap();
            }
            sent.push(SentFlow {
                client_port: first_port + i,
                packets: count,
                bytes: count * (payload as u64 + udp_overhead(a)),
            });
        }
    }
    drop(server);
    (to.port(), sent)
}
