//! A delay line for tests (the kernel here has no netem or fq qdisc):
//!
//! ```text
//! ns_client ─ veth_client ══ mid_client ─ [ns_mid: relay, delay each way] ─ mid_server ══ veth_server ─ ns_server
//! ```
//!
//! The middle namespace has no addresses and no IPv6; a [`Relay`] there reads every frame
//! arriving on one interface with an AF_PACKET socket and writes it out of the other once the
//! one-way delay has passed. Client (10.199.0.1, fd99::1) and server (10.199.0.2, fd99::2) share
//! one Ethernet segment through it, so ARP and neighbour discovery cross the delay too.
//!
//! An AF_PACKET socket sees an skb as the stack holds it, so the client and server veths have
//! segmentation offloads (TSO/GSO) and checksum offload off: every frame is one wire packet
//! with a complete checksum, which the far side can receive as is.

use crate::{in_netns, sh, unique, A4, A6, B4, B6};
use std::{
    collections::VecDeque,
    ffi::CString,
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    process::{Command, Stdio},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

/// Frames held at once per direction; more are dropped (and counted): bounds memory.
const MAX_QUEUE: usize = 100_000;
/// Longest sleep of an idle relay thread, so it notices `stop`.
const IDLE: Duration = Duration::from_millis(20);
const ETH_P_ALL: u16 = 0x0003;

/// What a relay did, both directions together.
#[derive(Debug, Default)]
pub struct RelayStats {
    /// Frames read from either interface.
    pub received: AtomicU64,
    pub relayed: AtomicU64,
    /// Dropped: queue full, or the send failed (e.g. a frame larger than the MTU).
    pub dropped: AtomicU64,
    /// Largest lateness of a frame past its due time, in µs.
    pub max_late_us: AtomicU64,
}

/// Copies frames between two interfaces of a namespace, each after `delay`. Stops on drop.
pub struct Relay {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    pub stats: Arc<RelayStats>,
}

impl Relay {
    /// Starts relaying between `if_a` and `if_b` of namespace `ns`, `delay` each way.
    pub fn start(ns: &str, if_a: &str, if_b: &str, delay: Duration) -> Relay {
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(RelayStats::default());
        // Open every socket before returning, so no frame sent after `start` is missed.
        let (a_in, a_out, b_in, b_out) = in_netns(ns, || {
            (
                PacketSocket::open(if_a, true).expect("AF_PACKET socket"),
                PacketSocket::open(if_a, false).expect("AF_PACKET socket"),
                PacketSocket::open(if_b, true).expect("AF_PACKET socket"),
                PacketSocket::open(if_b, false).expect("AF_PACKET socket"),
            )
        });
        let mut threads = Vec::new();
        for (rx, tx) in [(a_in, b_out), (b_in, a_out)] {
            let (stop, stats) = (stop.clone(), stats.clone());
            threads.push(std::thread::spawn(move || {
                relay_loop(&rx, &tx, delay, &stop, &stats)
            }));
        }
        Relay {
            stop,
            threads,
            stats,
        }
    }
}

impl RelayStats {
    /// Frames read and not yet sent or dropped.
    fn in_flight(&self) -> u64 {
        let done = self.relayed.load(Ordering::Relaxed) + self.dropped.load(Ordering::Relaxed);
        self.received.load(Ordering::Relaxed) - done
    }

    fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }
}

/// Waits until no frame has been held or read by any of `relays` for `QUIET` (bounded by
/// `SETTLE_LIMIT`): a connection's closing segments cross a delay line after both sockets
/// are closed, and a test that stops the monitor before they arrive sees them counted by the
/// kernel but never reported.
fn settle(relays: &[&RelayStats]) {
    const QUIET: Duration = Duration::from_millis(150);
    const SETTLE_LIMIT: Duration = Duration::from_secs(10);
    let start = Instant::now();
    let seen = || relays.iter().map(|r| r.received()).sum::<u64>();
    let (mut last, mut since) = (seen(), Instant::now());
    while start.elapsed() < SETTLE_LIMIT {
        std::thread::sleep(Duration::from_millis(10));
        let now = seen();
        if now != last || relays.iter().any(|r| r.in_flight() > 0) {
            (last, since) = (now, Instant::now());
        } else if since.elapsed() >= QUIET {
            return;
        }
    }
    panic!("the delay lines never went quiet in {SETTLE_LIMIT:?}");
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn relay_loop(
    rx: &PacketSocket,
    tx: &PacketSocket,
    delay: Duration,
    stop: &AtomicBool,
    stats: &RelayStats,
) {
    realtime();
    let mut queue: VecDeque<(Instant, Vec<u8>)> = VecDeque::new();
    let mut buf = vec![0u8; 1 << 16];
    while !stop.load(Ordering::Relaxed) {
        let wait = queue
            .front()
            .map(|(due, _)| due.saturating_duration_since(Instant::now()))
            .unwrap_or(IDLE)
            .min(IDLE);
        rx.wait_readable(wait);
        while let Some(n) = rx.recv(&mut buf) {
            stats.received.fetch_add(1, Ordering::Relaxed);
            if queue.len() >= MAX_QUEUE {
                stats.dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            queue.push_back((Instant::now() + delay, buf[..n].to_vec()));
        }
        let now = Instant::now();
        while queue.front().is_some_and(|(due, _)| *due <= now) {
            let (due, frame) = queue.pop_front().unwrap();
            if tx.send(&frame) {
                stats.relayed.fetch_add(1, Ordering::Relaxed);
            } else {
                stats.dropped.fetch_add(1, Ordering::Relaxed);
            }
            let late = now.saturating_duration_since(due).as_micros() as u64;
            stats.max_late_us.fetch_max(late, Ordering::Relaxed);
        }
    }
}

/// Makes the calling thread real-time (SCHED_FIFO), best effort: it then runs as soon as it
/// wakes even when the machine is busy, so a delay line and the peers that answer through it
/// keep their timing. Only for threads that block between short bursts of work. (Traffic
/// through a [`Relay`], whose threads are real-time, should not run flat out.)
pub fn realtime() {
    // Zeroed, then the one field: musl's sched_param has more fields than glibc's.
    // SAFETY: all-zero is a valid sched_param.
    let mut param: libc::sched_param = unsafe { std::mem::zeroed() };
    param.sched_priority = 10;
    // SAFETY: valid parameters; 0 is the calling thread.
    unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) };
}

/// An AF_PACKET raw socket bound to one interface: for receiving (every protocol, incoming
/// frames only) or for sending.
struct PacketSocket {
    fd: OwnedFd,
}

impl PacketSocket {
    fn open(iface: &str, receive: bool) -> io::Result<PacketSocket> {
        let name = CString::new(iface).unwrap();
        // SAFETY: a NUL-terminated name.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
        if ifindex == 0 {
            return Err(io::Error::last_os_error());
        }
        // A sending socket binds with protocol 0: it then receives nothing.
        let proto = if receive { ETH_P_ALL.to_be() } else { 0 };
        // SAFETY: plain socket(2) call.
        let fd = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                proto as i32,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh fd we own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        if receive {
            // Our own sends on this interface must not come back as input.
            let one: libc::c_int = 1;
            // SAFETY: valid fd and option value.
            let rc = unsafe {
                libc::setsockopt(
                    fd.as_raw_fd(),
                    libc::SOL_PACKET,
                    libc::PACKET_IGNORE_OUTGOING,
                    &one as *const _ as *const libc::c_void,
                    std::mem::size_of_val(&one) as libc::socklen_t,
                )
            };
            if rc != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        // SAFETY: zeroed sockaddr_ll is valid; then the fields bind needs.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = proto;
        sll.sll_ifindex = ifindex as i32;
        // SAFETY: valid fd and address of the right length.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                &sll as *const _ as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(PacketSocket { fd })
    }

    /// Waits up to `timeout` for a frame (ppoll: sub-millisecond timeouts).
    fn wait_readable(&self, timeout: Duration) {
        let mut pfd = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ts = libc::timespec {
            // `as _`: time_t's width differs between glibc and musl targets.
            tv_sec: timeout.as_secs() as _,
            tv_nsec: timeout.subsec_nanos() as _,
        };
        // SAFETY: one valid pollfd, a valid timespec, no signal mask.
        unsafe { libc::ppoll(&mut pfd, 1, &ts, std::ptr::null()) };
    }

    /// One frame if there is one (non-blocking).
    fn recv(&self, buf: &mut [u8]) -> Option<usize> {
        // SAFETY: writes at most buf.len() bytes into buf.
        let n = unsafe {
            libc::recv(
                self.fd.as_raw_fd(),
                buf.as_mut_ptr() as *mut libc::c_void,
                buf.len(),
                libc::MSG_DONTWAIT | libc::MSG_TRUNC,
            )
        };
        // MSG_TRUNC returns the real length: a frame larger than the buffer is dropped.
        (n > 0 && (n as usize) <= buf.len()).then_some(n as usize)
    }

    fn send(&self, frame: &[u8]) -> bool {
        // SAFETY: reads frame.len() bytes from frame.
        let n = unsafe {
            libc::send(
                self.fd.as_raw_fd(),
                frame.as_ptr() as *const libc::c_void,
                frame.len(),
                0,
            )
        };
        n == frame.len() as isize
    }
}

/// Three namespaces: client and server joined through a [`Relay`] in the middle one. Deleted
/// (with their veths) on drop, after the relay stopped.
pub struct DelayNet {
    pub ns_client: String,
    pub ns_mid: String,
    pub ns_server: String,
    /// In `ns_client`: 10.199.0.1/24, fd99::1/64.
    pub veth_client: String,
    /// In `ns_server`: 10.199.0.2/24, fd99::2/64.
    pub veth_server: String,
    pub mid_client: String,
    pub mid_server: String,
    /// One-way delay, each direction.
    pub delay: Duration,
    relay: Option<Relay>,
}

pub const CLIENT4: std::net::Ipv4Addr = A4;
pub const SERVER4: std::net::Ipv4Addr = B4;
pub const CLIENT6: std::net::Ipv6Addr = A6;
pub const SERVER6: std::net::Ipv6Addr = B6;

impl DelayNet {
    pub fn new(delay: Duration) -> DelayNet {
        let tag = unique("ed");
        let mut net = DelayNet {
            ns_client: format!("{tag}-c"),
            ns_mid: format!("{tag}-m"),
            ns_server: format!("{tag}-s"),
            veth_client: format!("{tag}c"),
            veth_server: format!("{tag}s"),
            mid_client: format!("{tag}mc"),
            mid_server: format!("{tag}ms"),
            delay,
            relay: None,
        };
        assert!(
            net.mid_client.len() <= 15,
            "name too long: {}",
            net.mid_client
        );
        // From the first namespace on, Drop cleans up whatever was made.
        for ns in [&net.ns_client, &net.ns_mid, &net.ns_server] {
            sh(&["ip", "netns", "add", ns]);
        }
        no_ipv6(&net.ns_mid);
        mid_pair(
            &net.ns_client,
            &net.veth_client,
            &net.ns_mid,
            &net.mid_client,
        );
        mid_pair(
            &net.ns_server,
            &net.veth_server,
            &net.ns_mid,
            &net.mid_server,
        );
        end_up(
            &net.ns_client,
            &net.veth_client,
            &[&format!("{A4}/24"), &format!("{A6}/64")],
        );
        end_up(
            &net.ns_server,
            &net.veth_server,
            &[&format!("{B4}/24"), &format!("{B6}/64")],
        );
        net.relay = Some(Relay::start(
            &net.ns_mid,
            &net.mid_client,
            &net.mid_server,
            delay,
        ));
        net
    }

    /// Runs a command inside namespace `ns` (panics if it fails).
    pub fn exec(&self, ns: &str, args: &[&str]) -> std::process::Output {
        let mut full = vec!["ip", "netns", "exec", ns];
        full.extend_from_slice(args);
        sh(&full)
    }

    /// Runs `f` on a thread that has entered namespace `ns`: sockets it opens live there.
    pub fn in_ns<T: Send>(&self, ns: &str, f: impl FnOnce() -> T + Send) -> T {
        in_netns(ns, f)
    }

    /// Sets a sysctl in the client and server namespaces (e.g. `net.ipv4.tcp_timestamps`).
    pub fn sysctl_ends(&self, key: &str, value: &str) {
        for ns in [&self.ns_client, &self.ns_server] {
            sysctl(ns, key, value);
        }
    }

    pub fn relay_stats(&self) -> &RelayStats {
        &self.relay.as_ref().expect("relay runs").stats
    }

    /// Returns once the line has carried nothing for a while (see [`settle`]).
    pub fn settle(&self) {
        settle(&[self.relay_stats()]);
    }
}

/// No IPv6 in namespace `ns` (no link-local address, no router solicitations, no MLD
/// reports): for the middle namespace, which only relays, and for the IPv4-only gateway
/// network, whose tests count every packet and must see only their own.
fn no_ipv6(ns: &str) {
    for key in ["all", "default"] {
        sysctl(ns, &format!("net.ipv6.conf.{key}.disable_ipv6"), "1");
    }
}

/// A veth pair: `dev` in `ns`, `mid` in `ns_mid`, where it is up and hands the relay frames as
/// they arrived (no GRO).
fn mid_pair(ns: &str, dev: &str, ns_mid: &str, mid: &str) {
    sh(&[
        "ip", "link", "add", dev, "netns", ns, "type", "veth", "peer", "name", mid, "netns", ns_mid,
    ]);
    sh(&[
        "ip", "-n", ns_mid, "link", "set", mid, "promisc", "on", "up",
    ]);
    sh(&[
        "ip", "netns", "exec", ns_mid, "ethtool", "-K", mid, "gro", "off",
    ]);
}

/// An interface that talks through a relay: its addresses, offloads off, up.
fn end_up(ns: &str, dev: &str, addrs: &[&str]) {
    sh(&["ip", "-n", ns, "link", "set", "lo", "up"]);
    for a in addrs {
        let mut cmd = vec!["ip", "-n", ns, "addr", "add", a, "dev", dev];
        if a.contains(':') {
            cmd.push("nodad");
        }
        sh(&cmd);
    }
    // One wire packet per skb and complete checksums: what a relay can pass on as is.
    sh(&[
        "ip", "netns", "exec", ns, "ethtool", "-K", dev, "tso", "off", "gso", "off", "gro", "off",
        "tx", "off",
    ]);
    sh(&["ip", "-n", ns, "link", "set", dev, "up"]);
}

fn del_netns(names: &[&String]) {
    for ns in names {
        let _ = Command::new("ip")
            .args(["netns", "del", ns])
            .stderr(Stdio::null())
            .status();
    }
}

/// Writes sysctl `key` (dotted) in namespace `ns`: /proc/sys/net belongs to the namespace of
/// whoever opens it, and this needs no procps.
fn sysctl(ns: &str, key: &str, value: &str) {
    let path = format!("/proc/sys/{}", key.replace('.', "/"));
    in_netns(ns, || std::fs::write(&path, value)).unwrap_or_else(|e| panic!("{ns}: {path}: {e}"));
}

impl Drop for DelayNet {
    fn drop(&mut self) {
        self.relay.take();
        del_netns(&[&self.ns_client, &self.ns_mid, &self.ns_server]);
    }
}

/// Client 10.199.1.1 on the client side of a [`GatewayNet`]; its gateway is .254 there.
pub const GW_CLIENT4: std::net::Ipv4Addr = std::net::Ipv4Addr::new(10, 199, 1, 1);
/// Server 10.199.2.1 on the server side; its gateway is .254 there.
pub const GW_SERVER4: std::net::Ipv4Addr = std::net::Ipv4Addr::new(10, 199, 2, 1);

/// A router between two delay lines (IPv4 only):
///
/// ```text
/// ns_client ─ [relay, client_delay] ─ gw_client (ns_gw, forwarding) gw_server ─ [relay, server_delay] ─ ns_server
/// ```
///
/// Both relays run in one middle namespace. Deleted on drop, after the relays stopped.
pub struct GatewayNet {
    pub ns_client: String,
    pub ns_gw: String,
    pub ns_mid: String,
    pub ns_server: String,
    pub veth_client: String,
    pub veth_server: String,
    /// The gateway's interface towards the client (10.199.1.254/24) and the server
    /// (10.199.2.254/24).
    pub gw_client: String,
    pub gw_server: String,
    relays: Vec<Relay>,
}

impl GatewayNet {
    pub fn new(client_delay: Duration, server_delay: Duration) -> GatewayNet {
        let tag = unique("eg");
        let mut net = GatewayNet {
            ns_client: format!("{tag}-c"),
            ns_gw: format!("{tag}-g"),
            ns_mid: format!("{tag}-m"),
            ns_server: format!("{tag}-s"),
            veth_client: format!("{tag}c"),
            veth_server: format!("{tag}s"),
            gw_client: format!("{tag}gc"),
            gw_server: format!("{tag}gs"),
            relays: Vec::new(),
        };
        let m = |s: &str| format!("{tag}m{s}");
        let (m_c, m_gc, m_gs, m_s) = (m("c"), m("gc"), m("gs"), m("s"));
        assert!(m_gc.len() <= 15, "name too long: {m_gc}");
        for ns in [&net.ns_client, &net.ns_gw, &net.ns_mid, &net.ns_server] {
            sh(&["ip", "netns", "add", ns]);
        }
        for ns in [&net.ns_client, &net.ns_gw, &net.ns_mid, &net.ns_server] {
            no_ipv6(ns);
        }
        mid_pair(&net.ns_client, &net.veth_client, &net.ns_mid, &m_c);
        mid_pair(&net.ns_gw, &net.gw_client, &net.ns_mid, &m_gc);
        mid_pair(&net.ns_gw, &net.gw_server, &net.ns_mid, &m_gs);
        mid_pair(&net.ns_server, &net.veth_server, &net.ns_mid, &m_s);
        end_up(
            &net.ns_client,
            &net.veth_client,
            &[&format!("{GW_CLIENT4}/24")],
        );
        end_up(&net.ns_gw, &net.gw_client, &["10.199.1.254/24"]);
        end_up(&net.ns_gw, &net.gw_server, &["10.199.2.254/24"]);
        end_up(
            &net.ns_server,
            &net.veth_server,
            &[&format!("{GW_SERVER4}/24")],
        );
        sysctl(&net.ns_gw, "net.ipv4.ip_forward", "1");
        for (ns, via) in [
            (&net.ns_client, "10.199.1.254"),
            (&net.ns_server, "10.199.2.254"),
        ] {
            sh(&["ip", "-n", ns, "route", "add", "default", "via", via]);
        }
        net.relays
            .push(Relay::start(&net.ns_mid, &m_c, &m_gc, client_delay));
        net.relays
            .push(Relay::start(&net.ns_mid, &m_gs, &m_s, server_delay));
        net
    }

    /// Runs `f` on a thread that has entered namespace `ns`: sockets it opens live there.
    pub fn in_ns<T: Send>(&self, ns: &str, f: impl FnOnce() -> T + Send) -> T {
        in_netns(ns, f)
    }

    /// The most any frame was sent after its due time, over both relays, in µs.
    pub fn relays_late_us(&self) -> u64 {
        self.relays
            .iter()
            .map(|r| r.stats.max_late_us.load(Ordering::Relaxed))
            .max()
            .unwrap_or(0)
    }

    /// Returns once both lines have carried nothing for a while (see [`settle`]).
    pub fn settle(&self) {
        settle(&self.relays.iter().map(|r| &*r.stats).collect::<Vec<_>>());
    }

    /// The index of interface `dev` in namespace `ns`.
    pub fn ifindex(&self, ns: &str, dev: &str) -> u32 {
        let path = format!("/sys/class/net/{dev}/ifindex");
        let out = sh(&["ip", "netns", "exec", ns, "cat", &path]);
        String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
    }
}

impl Drop for GatewayNet {
    fn drop(&mut self) {
        self.relays.clear();
        del_netns(&[&self.ns_client, &self.ns_gw, &self.ns_mid, &self.ns_server]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};

    /// Round trips through the line take twice the delay (and not much more), and the
    /// namespaces are gone afterwards.
    #[test]
    fn delays_both_ways_and_cleans_up() {
        let names;
        {
            let net = DelayNet::new(Duration::from_millis(15));
            names = [
                net.ns_client.clone(),
                net.ns_mid.clone(),
                net.ns_server.clone(),
            ];
            let listener = net.in_ns(&net.ns_server, || TcpListener::bind((SERVER4, 0)).unwrap());
            let port = listener.local_addr().unwrap().port();
            let echo = std::thread::spawn(move || {
                let (mut s, _) = listener.accept().unwrap();
                let mut b = [0u8; 8];
                while s.read_exact(&mut b).is_ok() {
                    s.write_all(&b).unwrap();
                }
            });
            let t0 = Instant::now();
            let mut c = net.in_ns(&net.ns_client, || {
                TcpStream::connect((SERVER4, port)).unwrap()
            });
            // ARP (one round trip) and the handshake (another).
            assert!(
                t0.elapsed() >= Duration::from_millis(60),
                "{:?}",
                t0.elapsed()
            );
            c.set_nodelay(true).unwrap();
            let mut b = [1u8; 8];
            for _ in 0..5 {
                let t = Instant::now();
                c.write_all(&b).unwrap();
                c.read_exact(&mut b).unwrap();
                let rtt = t.elapsed();
                assert!(
                    rtt >= Duration::from_millis(30) && rtt < Duration::from_millis(45),
                    "{rtt:?}"
                );
            }
            drop(c);
            echo.join().unwrap();
            // The server's FIN and the client's last ACK are still on the line (the server
            // waits in LAST-ACK for 30 ms): settle waits for both.
            let tcp_states = |ns: &str| {
                let out = net.exec(ns, &["ss", "-Htan", "state", "all", "sport", "!=", ":22"]);
                String::from_utf8_lossy(&out.stdout).into_owned()
            };
            net.settle();
            assert_eq!(net.relay_stats().in_flight(), 0);
            let (server, client) = (tcp_states(&net.ns_server), tcp_states(&net.ns_client));
            assert!(!server.contains("LAST-ACK"), "server: {server}");
            assert!(client.contains("TIME-WAIT"), "client: {client}");
            assert!(net.relay_stats().relayed.load(Ordering::Relaxed) >= 14);
            assert_eq!(net.relay_stats().dropped.load(Ordering::Relaxed), 0);
        }
        let list = String::from_utf8_lossy(&sh(&["ip", "netns", "list"]).stdout).into_owned();
        for n in names {
            assert!(!list.contains(&n), "{n} left behind: {list}");
        }
    }
}
