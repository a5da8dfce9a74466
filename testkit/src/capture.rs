//! A packet capture as ground truth: `tcpdump -w -` inside a test namespace, and a reader for
//! the pcap it writes.

use std::{
    io::Read,
    net::IpAddr,
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

/// Most packets a capture takes (`tcpdump -c`): keeps a runaway test bounded.
pub const MAX_PACKETS: u32 = 200_000;

/// How long tcpdump's output must stay unchanged before a capture is stopped. On a loaded
/// machine tcpdump can lag its ring by hundreds of milliseconds; `stop` checks afterwards
/// that nothing was left behind.
const QUIET: Duration = Duration::from_millis(1000);

/// A running `tcpdump` on one interface of a namespace, writing pcap to our pipe.
pub struct Capture {
    child: Child,
    /// Bytes of pcap received so far.
    got: Arc<AtomicUsize>,
    out: Option<JoinHandle<Vec<u8>>>,
    err: Option<JoinHandle<String>>,
}

impl Capture {
    /// Starts capturing on `iface` in namespace `ns` (headers only, BPF filter `filter`) and
    /// waits until tcpdump listens.
    pub fn start(ns: &str, iface: &str, filter: &str) -> Capture {
        let max = MAX_PACKETS.to_string();
        let mut child = Command::new("ip")
            .args([
                "netns", "exec", ns, "tcpdump", "-i", iface, "-n", "-U", "-w", "-",
            ])
            // Headers are all we read; -B: room for a burst (KiB), so nothing is dropped.
            .args(["-s", "128", "-B", "16384", "-c", &max, "-Z", "root", filter])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning tcpdump");
        let mut stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let got = Arc::new(AtomicUsize::new(0));
        let seen = got.clone();
        let out = std::thread::spawn(move || {
            let mut v = Vec::new();
            let mut buf = [0u8; 1 << 16];
            while let Ok(n @ 1..) = stdout.read(&mut buf) {
                v.extend_from_slice(&buf[..n]);
                seen.store(v.len(), Ordering::Relaxed);
            }
            v
        });
        let (rx, err) = crate::ready::watch_lines(stderr, "listening on");
        let mut c = Capture {
            child,
            got,
            out: Some(out),
            err: Some(err),
        };
        if rx.recv_timeout(Duration::from_secs(10)).is_err() {
            let _ = c.child.kill();
            let _ = c.child.wait();
            panic!(
                "tcpdump did not start:\n{}",
                c.err.take().unwrap().join().unwrap()
            );
        }
        c
    }

    /// Stops the capture (SIGINT, bounded wait) and returns what it saw. Panics unless it
    /// wrote every packet its filter took, since it would then not be the truth.
    pub fn stop(mut self) -> Pcap {
        // tcpdump leaves packets still in its ring unwritten when interrupted: wait until
        // its output has been quiet for a while (bounded) first.
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut last = (self.got.load(Ordering::Relaxed), Instant::now());
        while Instant::now() < deadline && last.1.elapsed() < QUIET {
            std::thread::sleep(Duration::from_millis(20));
            let n = self.got.load(Ordering::Relaxed);
            if n != last.0 {
                last = (n, Instant::now());
            }
        }
        // SAFETY: signalling our own child (`ip netns exec` execs tcpdump in place).
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("tcpdump did not stop");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let stderr = self.err.take().unwrap().join().unwrap();
        let bytes = self.out.take().unwrap().join().unwrap();
        let count = |what: &str| {
            stderr
                .lines()
                .find_map(|l| l.strip_suffix(what))
                .and_then(|n| n.trim().parse::<u64>().ok())
        };
        let captured = count(" packets captured");
        assert!(
            captured.is_some()
                && captured == count(" packets received by filter")
                && count(" packets dropped by kernel") == Some(0),
            "tcpdump missed packets:\n{stderr}"
        );
        Pcap {
            report: stderr,
            ..Pcap::parse(&bytes)
        }
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        if self.out.is_some() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// One captured IP packet: its addresses and IP total length (as on the wire).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpPacket {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub proto: u8,
    /// IPv4 total length, or IPv6 40 + payload length.
    pub ip_len: u64,
    /// VLAN ids, outermost first; 0 where absent.
    pub vlans: [u16; 2],
}

/// The IP packets of an Ethernet (linktype 1) pcap; other frames are skipped.
#[derive(Clone, Debug, Default)]
pub struct Pcap {
    pub packets: Vec<IpPacket>,
    /// What tcpdump said (its counts), for messages.
    pub report: String,
}

impl Pcap {
    /// Parses a classic pcap file (either byte order, micro- or nanosecond timestamps).
    pub fn parse(b: &[u8]) -> Pcap {
        assert!(
            b.len() >= 24,
            "pcap shorter than its header ({} bytes)",
            b.len()
        );
        let magic = [b[0], b[1], b[2], b[3]];
        let le = match magic {
            [0xd4, 0xc3, 0xb2, 0xa1] | [0x4d, 0x3c, 0xb2, 0xa1] => true,
            [0xa1, 0xb2, 0xc3, 0xd4] | [0xa1, 0xb2, 0x3c, 0x4d] => false,
            m => panic!("not a pcap file: magic {m:x?}"),
        };
        let u32_at = |o: usize| {
            let w = [b[o], b[o + 1], b[o + 2], b[o + 3]];
            if le {
                u32::from_le_bytes(w)
            } else {
                u32::from_be_bytes(w)
            }
        };
        assert_eq!(u32_at(20) & 0xffff, 1, "link type is not Ethernet");
        let mut packets = Vec::new();
        let mut off = 24;
        while off + 16 <= b.len() {
            let incl = u32_at(off + 8) as usize;
            let start = off + 16;
            let end = start + incl;
            assert!(end <= b.len(), "pcap record runs past the end");
            if let Some(p) = ip_packet(&b[start..end]) {
                packets.push(p);
            }
            off = end;
        }
        Pcap {
            packets,
            report: String::new(),
        }
    }

    /// Packets and bytes (sum of IP lengths) from `src` to `dst`.
    pub fn count(&self, src: IpAddr, dst: IpAddr) -> (u64, u64) {
        self.packets
            .iter()
            .filter(|p| p.src == src && p.dst == dst)
            .fold((0, 0), |(n, s), p| (n + 1, s + p.ip_len))
    }
}

fn ip_packet(f: &[u8]) -> Option<IpPacket> {
    let be16 = |o: usize| -> Option<u16> { Some(u16::from_be_bytes([*f.get(o)?, *f.get(o + 1)?])) };
    let mut ethertype = be16(12)?;
    let mut off = 14;
    let mut vlans = [0u16; 2];
    let mut n = 0;
    while matches!(ethertype, 0x8100 | 0x88a8 | 0x9100) {
        if n < 2 {
            vlans[n] = be16(off)? & 0x0fff;
        }
        n += 1;
        ethertype = be16(off + 2)?;
        off += 4;
    }
    let ip = f.get(off..)?;
    match ethertype {
        0x0800 if ip.len() >= 20 => Some(IpPacket {
            src: IpAddr::from(<[u8; 4]>::try_from(&ip[12..16]).ok()?),
            dst: IpAddr::from(<[u8; 4]>::try_from(&ip[16..20]).ok()?),
            proto: ip[9],
            ip_len: u16::from_be_bytes([ip[2], ip[3]]) as u64,
            vlans,
        }),
        0x86dd if ip.len() >= 40 => Some(IpPacket {
            src: IpAddr::from(<[u8; 16]>::try_from(&ip[8..24]).ok()?),
            dst: IpAddr::from(<[u8; 16]>::try_from(&ip[24..40]).ok()?),
            proto: ip[6],
            ip_len: 40 + u16::from_be_bytes([ip[4], ip[5]]) as u64,
            vlans,
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    /// A little-endian pcap with one tagged IPv4 frame, one ARP frame, one truncated record.
    #[test]
    fn parses_records_and_skips_non_ip() {
        let mut b = Vec::new();
        b.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
        b.extend_from_slice(&[2, 0, 4, 0]);
        b.extend_from_slice(&[0; 8]);
        b.extend_from_slice(&128u32.to_le_bytes());
        b.extend_from_slice(&1u32.to_le_bytes());
        let mut ip = vec![0u8; 14 + 4 + 20];
        ip[12..14].copy_from_slice(&[0x81, 0x00]);
        ip[14..16].copy_from_slice(&100u16.to_be_bytes());
        ip[16..18].copy_from_slice(&[0x08, 0x00]);
        ip[18] = 0x45;
        ip[20..22].copy_from_slice(&1500u16.to_be_bytes());
        ip[27] = 6;
        ip[30..34].copy_from_slice(&[10, 0, 0, 1]);
        ip[34..38].copy_from_slice(&[10, 0, 0, 2]);
        let mut arp = vec![0u8; 42];
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        for f in [&ip, &arp] {
            b.extend_from_slice(&[0; 8]);
            b.extend_from_slice(&(f.len() as u32).to_le_bytes());
            b.extend_from_slice(&(f.len() as u32).to_le_bytes());
            b.extend_from_slice(f);
        }
        let p = Pcap::parse(&b);
        assert_eq!(p.packets.len(), 1);
        let a: IpAddr = Ipv4Addr::new(10, 0, 0, 1).into();
        let c: IpAddr = Ipv4Addr::new(10, 0, 0, 2).into();
        assert_eq!(p.packets[0].vlans, [100, 0]);
        assert_eq!(p.packets[0].proto, 6);
        assert_eq!(p.count(a, c), (1, 1500));
        assert_eq!(p.count(c, a), (0, 0));
    }
}
