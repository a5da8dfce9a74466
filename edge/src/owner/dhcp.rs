//! LAN devices' names from their DHCP requests: the host name (option 12) and client
//! identifier (option 61) a client sends to a server (UDP port 67), kept per client MAC in a
//! bounded map.
//!
//! Snooped in userspace, where it is simplest and bounded: a packet socket per watched
//! interface with a classic BPF filter that passes only IPv4 UDP to port 67, read without
//! blocking once per window. DHCP is a few packets per device per lease, so the socket's
//! buffer holds a window's worth; the kernel counts what it drops (`PACKET_STATISTICS`), and
//! so does the map when it is full ([`Names::refused`]).

use std::{
    collections::HashMap,
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

/// MACs named at most, by default (`[owner] max_devices`).
pub const DEFAULT_MAX_DEVICES: usize = 4096;
/// Longest name kept (a DHCP option holds up to 255 bytes).
pub const MAX_NAME: usize = 64;
/// Options looked at per message, at most.
const MAX_OPTIONS: usize = 64;
const BOOTREQUEST: u8 = 1;
const MAGIC: [u8; 4] = [99, 130, 83, 99];
const OPT_PAD: u8 = 0;
const OPT_END: u8 = 255;
const OPT_HOST_NAME: u8 = 12;
const OPT_CLIENT_ID: u8 = 61;

/// What a DHCP request said about its client.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Request {
    pub mac: [u8; 6],
    pub host_name: Option<String>,
    /// Option 61 as text: `01:aa:bb:...` (type byte first), hex bytes.
    pub client_id: Option<String>,
}

/// A DHCP request from an Ethernet frame (IPv4, UDP to port 67, BOOTREQUEST with the magic
/// cookie); `None` for anything else or anything cut short.
pub fn parse_request(frame: &[u8]) -> Option<Request> {
    if frame.len() < 14 || frame[12..14] != [0x08, 0x00] {
        return None;
    }
    let ip = &frame[14..];
    if ip.len() < 20 || ip[0] >> 4 != 4 || ip[9] != 17 {
        return None;
    }
    // A later fragment has no UDP header.
    if u16::from_be_bytes([ip[6], ip[7]]) & 0x1fff != 0 {
        return None;
    }
    let udp = ip.get((ip[0] & 0x0f) as usize * 4..)?;
    if udp.len() < 8 || u16::from_be_bytes([udp[2], udp[3]]) != 67 {
        return None;
    }
    let b = &udp[8..];
    if b.len() < 240 || b[0] != BOOTREQUEST || b[1] != 1 || b[2] != 6 || b[236..240] != MAGIC {
        return None;
    }
    let mut req = Request {
        mac: b[28..34].try_into().ok()?,
        ..Request::default()
    };
    let mut o = &b[240..];
    for _ in 0..MAX_OPTIONS {
        let Some((&code, rest)) = o.split_first() else {
            break;
        };
        match code {
            OPT_PAD => {
                o = rest;
                continue;
            }
            OPT_END => break,
            _ => {}
        }
        let (&len, rest) = rest.split_first()?;
        let value = rest.get(..len as usize)?;
        match code {
            OPT_HOST_NAME => req.host_name = Some(text(value)).filter(|s| !s.is_empty()),
            OPT_CLIENT_ID if !value.is_empty() => req.client_id = Some(hex(value)),
            _ => {}
        }
        o = &rest[len as usize..];
    }
    Some(req)
}

/// Printable ASCII, bounded: a name is shown to people and stored.
fn text(v: &[u8]) -> String {
    v.iter()
        .take(MAX_NAME)
        .map(|&c| {
            if c.is_ascii_graphic() || c == b' ' {
                c as char
            } else {
                '?'
            }
        })
        .collect::<String>()
        .trim_end_matches('\0')
        .to_string()
}

fn hex(v: &[u8]) -> String {
    v.iter()
        .take(MAX_NAME / 3)
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// What a device said its name is, by MAC.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Named {
    pub host_name: Option<String>,
    pub client_id: Option<String>,
}

/// MAC → what its DHCP requests said, bounded.
pub struct Names {
    by_mac: HashMap<[u8; 6], Named>,
    max: usize,
    /// Requests from a new MAC that found the map full (since start).
    pub refused: u64,
    /// Requests seen (since start).
    pub requests: u64,
}

impl Names {
    pub fn new(max: usize) -> Names {
        Names {
            by_mac: HashMap::new(),
            max,
            refused: 0,
            requests: 0,
        }
    }

    /// Takes a request in: a later request replaces what an earlier one from the MAC said
    /// (a renamed host), keeping what it does not repeat.
    pub fn learn(&mut self, r: Request) {
        self.requests += 1;
        if !self.by_mac.contains_key(&r.mac) && self.by_mac.len() >= self.max {
            self.refused += 1;
            return;
        }
        let e = self.by_mac.entry(r.mac).or_default();
        if r.host_name.is_some() {
            e.host_name = r.host_name;
        }
        if r.client_id.is_some() {
            e.client_id = r.client_id;
        }
    }

    pub fn get(&self, mac: &[u8; 6]) -> Option<&Named> {
        self.by_mac.get(mac)
    }

    pub fn len(&self) -> usize {
        self.by_mac.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_mac.is_empty()
    }
}

/// IPv4, UDP, not a later fragment, destination port 67 (`tcpdump -dd 'udp dst port 67'`,
/// IPv4 half).
const FILTER: [libc::sock_filter; 11] = [
    op(0x28, 0, 0, 12),
    op(0x15, 0, 8, 0x0800),
    op(0x30, 0, 0, 23),
    op(0x15, 0, 6, 17),
    op(0x28, 0, 0, 20),
    op(0x45, 4, 0, 0x1fff),
    op(0xb1, 0, 0, 14),
    op(0x48, 0, 0, 16),
    op(0x15, 0, 1, 67),
    op(0x06, 0, 0, 0x40000),
    op(0x06, 0, 0, 0),
];

const fn op(code: u16, jt: u8, jf: u8, k: u32) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

/// A packet socket receiving one interface's DHCP requests.
pub struct Snoop {
    fd: OwnedFd,
    pub iface: String,
}

impl Snoop {
    /// Opens it on `ifindex`; call in the interface's network namespace.
    pub fn open(iface: &str, ifindex: u32) -> io::Result<Snoop> {
        let proto = (libc::ETH_P_IP as u16).to_be();
        // SAFETY: plain socket call; the fd is owned from here on.
        let fd = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                proto as i32,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a new fd we own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let prog = libc::sock_fprog {
            len: FILTER.len() as u16,
            filter: FILTER.as_ptr() as *mut libc::sock_filter,
        };
        // SAFETY: the filter outlives the call (the kernel copies it).
        let rc = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_ATTACH_FILTER,
                (&raw const prog).cast(),
                size_of::<libc::sock_fprog>() as u32,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: zeroed sockaddr_ll with the fields bind reads set.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = proto;
        sll.sll_ifindex = ifindex as i32;
        // SAFETY: a valid sockaddr_ll and its size.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&raw const sll).cast(),
                size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Snoop {
            fd,
            iface: iface.into(),
        })
    }

    /// Reads what arrived (at most `max` frames) into `names`. Returns the frames the
    /// kernel dropped since the last call (the socket's buffer was full).
    pub fn read_into(&self, names: &mut Names, max: usize) -> io::Result<u64> {
        let mut buf = [0u8; 1600];
        for _ in 0..max {
            // SAFETY: reads into our buffer, at most its size.
            let n = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_TRUNC,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::WouldBlock {
                    break;
                }
                return Err(e);
            }
            let n = (n as usize).min(buf.len());
            if let Some(r) = parse_request(&buf[..n]) {
                names.learn(r);
            }
        }
        // SAFETY: tpacket_stats is two u32; the kernel fills it and resets its counters.
        let mut st: libc::tpacket_stats = unsafe { std::mem::zeroed() };
        let mut len = size_of::<libc::tpacket_stats>() as u32;
        let rc = unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_STATISTICS,
                (&raw mut st).cast(),
                &mut len,
            )
        };
        Ok(if rc == 0 { st.tp_drops as u64 } else { 0 })
    }
}

/// A DHCP request frame as a client sends it (for tests): DISCOVER from `mac`, with option
/// 12 `host_name` and option 61 (type 1, the MAC) when given.
pub fn craft_request(mac: [u8; 6], host_name: Option<&str>) -> Vec<u8> {
    let mut b = vec![0u8; 240];
    b[0] = BOOTREQUEST;
    b[1] = 1;
    b[2] = 6;
    b[4..8].copy_from_slice(&0x1234_5678u32.to_be_bytes());
    b[28..34].copy_from_slice(&mac);
    b[236..240].copy_from_slice(&MAGIC);
    b.extend_from_slice(&[53, 1, 1]);
    if let Some(h) = host_name {
        b.push(OPT_HOST_NAME);
        b.push(h.len() as u8);
        b.extend_from_slice(h.as_bytes());
    }
    b.extend_from_slice(&[OPT_CLIENT_ID, 7, 1]);
    b.extend_from_slice(&mac);
    b.push(OPT_END);
    let udp_len = 8 + b.len();
    let mut f = Vec::new();
    f.extend_from_slice(&[0xff; 6]);
    f.extend_from_slice(&mac);
    f.extend_from_slice(&[0x08, 0x00]);
    let total = 20 + udp_len;
    f.extend_from_slice(&[
        0x45,
        0,
        (total >> 8) as u8,
        total as u8,
        0,
        0,
        0,
        0,
        64,
        17,
        0,
        0,
    ]);
    f.extend_from_slice(&[0, 0, 0, 0, 255, 255, 255, 255]);
    f.extend_from_slice(&[0, 68, 0, 67, (udp_len >> 8) as u8, udp_len as u8, 0, 0]);
    f.extend_from_slice(&b);
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0a];

    #[test]
    fn a_request_gives_its_host_name_and_client_id() {
        let r = parse_request(&craft_request(MAC, Some("printer-2"))).unwrap();
        assert_eq!(r.mac, MAC);
        assert_eq!(r.host_name.as_deref(), Some("printer-2"));
        assert_eq!(r.client_id.as_deref(), Some("01:02:00:00:00:00:0a"));
        let r = parse_request(&craft_request(MAC, None)).unwrap();
        assert_eq!(r.host_name, None);
    }

    #[test]
    fn cut_or_foreign_frames_are_not_requests() {
        let f = craft_request(MAC, Some("x"));
        for n in [0, 13, 30, 41, 100, 281] {
            assert_eq!(parse_request(&f[..n]), None, "cut at {n}");
        }
        // An option longer than the frame ends the parse: no request.
        let mut long = f.clone();
        let at = long.len() - 1;
        long[at] = OPT_HOST_NAME;
        long.push(200);
        assert_eq!(parse_request(&long), None);
        // A reply (op 2) is not a request.
        let mut reply = f.clone();
        reply[42] = 2;
        assert_eq!(parse_request(&reply), None);
        // Names are printable and bounded.
        let r = parse_request(&craft_request(MAC, Some("a\u{1}b"))).unwrap();
        assert_eq!(r.host_name.as_deref(), Some("a?b"));
    }

    #[test]
    fn names_are_bounded_and_counted_when_full() {
        let mut n = Names::new(2);
        for i in 0..3u8 {
            n.learn(Request {
                mac: [0, 0, 0, 0, 0, i],
                host_name: Some(format!("h{i}")),
                client_id: None,
            });
        }
        assert_eq!((n.len(), n.refused, n.requests), (2, 1, 3));
        // A known MAC renames itself even when full.
        n.learn(Request {
            mac: [0, 0, 0, 0, 0, 1],
            host_name: Some("renamed".into()),
            client_id: None,
        });
        assert_eq!(
            n.get(&[0, 0, 0, 0, 0, 1]).unwrap().host_name.as_deref(),
            Some("renamed")
        );
        assert_eq!(n.get(&[0, 0, 0, 0, 0, 2]), None);
    }
}
