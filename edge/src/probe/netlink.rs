//! The few rtnetlink requests the agent makes itself: list and delete TC filters, look for and
//! delete the clsact qdisc, read and set an interface's XDP program.
//!
//! aya attaches and detaches its own filters and links, but finding what a killed agent left
//! needs a dump of what is attached, and replacing a netlink XDP program needs the expected-fd
//! form aya keeps to itself. Everything goes through the socket, never through iproute2's `tc`
//! or `ip`: an edge box may not have them. Requests act in the calling thread's network
//! namespace (the socket is made in it).

use std::{
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
};

const RTM_NEWLINK: u16 = 16;
const RTM_GETLINK: u16 = 18;
const RTM_SETLINK: u16 = 19;
const RTM_NEWQDISC: u16 = 36;
const RTM_DELQDISC: u16 = 37;
const RTM_GETQDISC: u16 = 38;
const RTM_NEWTFILTER: u16 = 44;
const RTM_DELTFILTER: u16 = 45;
const RTM_GETTFILTER: u16 = 46;

const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLA_TYPE_MASK: u16 = 0x3fff;
const NLA_F_NESTED: u16 = 0x8000;

const TCA_KIND: u16 = 1;
const TCA_OPTIONS: u16 = 2;
const TCA_BPF_NAME: u16 = 7;
const TCA_BPF_ID: u16 = 11;

const IFLA_XDP: u16 = 43;
const IFLA_XDP_FD: u16 = 1;
const IFLA_XDP_ATTACHED: u16 = 2;
const IFLA_XDP_FLAGS: u16 = 3;
const IFLA_XDP_PROG_ID: u16 = 4;
const IFLA_XDP_DRV_PROG_ID: u16 = 5;
const IFLA_XDP_SKB_PROG_ID: u16 = 6;
const IFLA_XDP_HW_PROG_ID: u16 = 7;
const IFLA_XDP_EXPECTED_FD: u16 = 8;

/// `XDP_FLAGS_*` of linux/if_link.h.
pub const XDP_FLAGS_UPDATE_IF_NOEXIST: u32 = 1;
pub const XDP_FLAGS_SKB_MODE: u32 = 2;
pub const XDP_FLAGS_DRV_MODE: u32 = 4;
pub const XDP_FLAGS_HW_MODE: u32 = 8;
pub const XDP_FLAGS_REPLACE: u32 = 16;

const XDP_ATTACHED_DRV: u8 = 1;
const XDP_ATTACHED_SKB: u8 = 2;
const XDP_ATTACHED_HW: u8 = 3;
const XDP_ATTACHED_MULTI: u8 = 4;

/// The clsact qdisc's handle (`ffff:`) and parent (TC_H_CLSACT).
const CLSACT_HANDLE: u32 = 0xffff_0000;
const TC_H_CLSACT: u32 = 0xffff_fff1;
/// The clsact hooks as filter parents (`ffff:fff2`, `ffff:fff3`).
pub const PARENT_INGRESS: u32 = 0xffff_fff2;
pub const PARENT_EGRESS: u32 = 0xffff_fff3;

/// One TC filter on a clsact hook.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TcFilter {
    /// Its pref (priority).
    pub prio: u16,
    pub handle: u32,
    /// The classifier ("bpf", "u32", "matchall", ...).
    pub kind: String,
    /// A bpf filter's name (`TCA_BPF_NAME`; aya writes the program's name there).
    pub bpf_name: Option<String>,
    /// A bpf filter's program id.
    pub prog_id: Option<u32>,
}

/// A program attached to an interface's XDP hook, and in which mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct XdpProg {
    pub id: u32,
    /// `XDP_FLAGS_DRV_MODE`, `_SKB_MODE` or `_HW_MODE`: what to pass to replace or remove it.
    pub mode: u32,
}

/// The TC filters on clsact hook `parent` ([`PARENT_INGRESS`], [`PARENT_EGRESS`]) of
/// interface `ifindex`; none when the interface has no clsact qdisc.
pub fn tc_filters(ifindex: u32, parent: u32) -> io::Result<Vec<TcFilter>> {
    if !has_clsact(ifindex)? {
        return Ok(Vec::new());
    }
    let mut req = Msg::new(RTM_GETTFILTER, NLM_F_DUMP);
    req.tcmsg(ifindex, 0, parent, 0);
    let mut out = Vec::new();
    for (ty, body) in Socket::open()?.request(req)? {
        if ty != RTM_NEWTFILTER || body.len() < TCMSG_LEN {
            continue;
        }
        let (ifi, handle, info) = (
            i32::from_ne_bytes(body[4..8].try_into().unwrap()),
            u32::from_ne_bytes(body[8..12].try_into().unwrap()),
            u32::from_ne_bytes(body[16..20].try_into().unwrap()),
        );
        // A dump lists a filter's chain head (handle 0) before its instances.
        if ifi != ifindex as i32 || handle == 0 {
            continue;
        }
        let mut f = TcFilter {
            prio: (info >> 16) as u16,
            handle,
            kind: String::new(),
            bpf_name: None,
            prog_id: None,
        };
        for (at, data) in attrs(&body[TCMSG_LEN..]) {
            match at {
                TCA_KIND => f.kind = c_string(data),
                TCA_OPTIONS => {
                    for (at, data) in attrs(data) {
                        match at {
                            TCA_BPF_NAME => f.bpf_name = Some(c_string(data)),
                            TCA_BPF_ID if data.len() >= 4 => {
                                f.prog_id = Some(u32::from_ne_bytes(data[..4].try_into().unwrap()))
                            }
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        out.push(f);
    }
    Ok(out)
}

/// Deletes the filter at `prio`/`handle` on clsact hook `parent` of `ifindex`.
pub fn tc_filter_del(ifindex: u32, parent: u32, prio: u16, handle: u32) -> io::Result<()> {
    let mut req = Msg::new(RTM_DELTFILTER, NLM_F_ACK);
    // tcm_info: the pref in the upper half, the protocol (ETH_P_ALL, big-endian) below.
    let info = ((prio as u32) << 16) | (libc::ETH_P_ALL as u16).to_be() as u32;
    req.tcmsg(ifindex, handle, parent, info);
    Socket::open()?.request(req).map(drop)
}

/// Whether interface `ifindex` has a clsact qdisc.
pub fn has_clsact(ifindex: u32) -> io::Result<bool> {
    let mut req = Msg::new(RTM_GETQDISC, NLM_F_DUMP);
    req.tcmsg(ifindex, 0, 0, 0);
    let replies = Socket::open()?.request(req)?;
    Ok(replies.iter().any(|(ty, body)| {
        *ty == RTM_NEWQDISC
            && body.len() >= TCMSG_LEN
            && i32::from_ne_bytes(body[4..8].try_into().unwrap()) == ifindex as i32
            && attrs(&body[TCMSG_LEN..]).any(|(at, d)| at == TCA_KIND && c_string(d) == "clsact")
    }))
}

/// Deletes interface `ifindex`'s clsact qdisc (and with it every filter on its hooks).
pub fn clsact_del(ifindex: u32) -> io::Result<()> {
    let mut req = Msg::new(RTM_DELQDISC, NLM_F_ACK);
    req.tcmsg(ifindex, CLSACT_HANDLE, TC_H_CLSACT, 0);
    Socket::open()?.request(req).map(drop)
}

/// The programs on interface `ifindex`'s XDP hook (one per mode; usually none or one).
pub fn xdp_progs(ifindex: u32) -> io::Result<Vec<XdpProg>> {
    let mut req = Msg::new(RTM_GETLINK, NLM_F_ACK);
    req.ifinfomsg(ifindex);
    let mut out = Vec::new();
    for (ty, body) in Socket::open()?.request(req)? {
        if ty != RTM_NEWLINK || body.len() < IFINFOMSG_LEN {
            continue;
        }
        let Some((_, xdp)) = attrs(&body[IFINFOMSG_LEN..]).find(|(at, _)| *at == IFLA_XDP) else {
            continue;
        };
        let (mut attached, mut ids) = (0u8, [0u32; 4]);
        for (at, d) in attrs(xdp) {
            let word = || {
                d.get(..4)
                    .map_or(0, |b| u32::from_ne_bytes(b.try_into().unwrap()))
            };
            match at {
                IFLA_XDP_ATTACHED => attached = d.first().copied().unwrap_or(0),
                IFLA_XDP_PROG_ID => ids[0] = word(),
                IFLA_XDP_DRV_PROG_ID => ids[1] = word(),
                IFLA_XDP_SKB_PROG_ID => ids[2] = word(),
                IFLA_XDP_HW_PROG_ID => ids[3] = word(),
                _ => {}
            }
        }
        let mut add = |id: u32, mode: u32| {
            if id != 0 {
                out.push(XdpProg { id, mode });
            }
        };
        match attached {
            XDP_ATTACHED_DRV => add(ids[0], XDP_FLAGS_DRV_MODE),
            XDP_ATTACHED_SKB => add(ids[0], XDP_FLAGS_SKB_MODE),
            XDP_ATTACHED_HW => add(ids[0], XDP_FLAGS_HW_MODE),
            XDP_ATTACHED_MULTI => {
                add(ids[1], XDP_FLAGS_DRV_MODE);
                add(ids[2], XDP_FLAGS_SKB_MODE);
                add(ids[3], XDP_FLAGS_HW_MODE);
            }
            _ => {}
        }
    }
    Ok(out)
}

/// Sets interface `ifindex`'s XDP program through netlink (not a link: it stays after the
/// process is gone): `prog` `None` removes it. `expected`: only if the program there now is
/// that one (XDP_FLAGS_REPLACE, Linux 5.7); `None`: only if there is none
/// (XDP_FLAGS_UPDATE_IF_NOEXIST). `mode`: an `XDP_FLAGS_*_MODE`.
pub fn xdp_set(
    ifindex: u32,
    prog: Option<RawFd>,
    expected: Option<RawFd>,
    mode: u32,
) -> io::Result<()> {
    let mut req = Msg::new(RTM_SETLINK, NLM_F_ACK);
    req.ifinfomsg(ifindex);
    let nest = req.nest(IFLA_XDP);
    req.attr(IFLA_XDP_FD, &prog.unwrap_or(-1).to_ne_bytes());
    let flags = match expected {
        Some(fd) => {
            req.attr(IFLA_XDP_EXPECTED_FD, &fd.to_ne_bytes());
            mode | XDP_FLAGS_REPLACE
        }
        None => mode | XDP_FLAGS_UPDATE_IF_NOEXIST,
    };
    req.attr(IFLA_XDP_FLAGS, &flags.to_ne_bytes());
    req.end_nest(nest);
    Socket::open()?.request(req).map(drop)
}

const NLMSG_HDR_LEN: usize = 16;
const TCMSG_LEN: usize = 20;
const IFINFOMSG_LEN: usize = 16;

/// A request being built: header, family header, attributes (each 4-aligned).
struct Msg(Vec<u8>);

impl Msg {
    fn new(ty: u16, flags: u16) -> Msg {
        let mut b = vec![0u8; NLMSG_HDR_LEN];
        b[4..6].copy_from_slice(&ty.to_ne_bytes());
        b[6..8].copy_from_slice(&(flags | NLM_F_REQUEST).to_ne_bytes());
        Msg(b)
    }

    /// struct tcmsg: family AF_UNSPEC, then ifindex, handle, parent, info.
    fn tcmsg(&mut self, ifindex: u32, handle: u32, parent: u32, info: u32) {
        self.0.extend_from_slice(&[0; 4]);
        for w in [ifindex, handle, parent, info] {
            self.0.extend_from_slice(&w.to_ne_bytes());
        }
    }

    /// struct ifinfomsg: family AF_UNSPEC, type 0, the index, no flag changes.
    fn ifinfomsg(&mut self, ifindex: u32) {
        self.0.extend_from_slice(&[0; 4]);
        self.0.extend_from_slice(&ifindex.to_ne_bytes());
        self.0.extend_from_slice(&[0; 8]);
    }

    fn attr(&mut self, ty: u16, data: &[u8]) {
        self.0
            .extend_from_slice(&((4 + data.len()) as u16).to_ne_bytes());
        self.0.extend_from_slice(&ty.to_ne_bytes());
        self.0.extend_from_slice(data);
        self.0.resize(self.0.len().next_multiple_of(4), 0);
    }

    fn nest(&mut self, ty: u16) -> usize {
        let at = self.0.len();
        self.attr(ty | NLA_F_NESTED, &[]);
        at
    }

    fn end_nest(&mut self, at: usize) {
        let len = (self.0.len() - at) as u16;
        self.0[at..at + 2].copy_from_slice(&len.to_ne_bytes());
    }

    fn finish(mut self, seq: u32) -> Vec<u8> {
        let len = self.0.len() as u32;
        self.0[0..4].copy_from_slice(&len.to_ne_bytes());
        self.0[8..12].copy_from_slice(&seq.to_ne_bytes());
        self.0
    }
}

/// The attributes in `b`: (type without flags, payload).
fn attrs(mut b: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if b.len() < 4 {
            return None;
        }
        let len = u16::from_ne_bytes([b[0], b[1]]) as usize;
        let ty = u16::from_ne_bytes([b[2], b[3]]) & NLA_TYPE_MASK;
        if len < 4 || len > b.len() {
            return None;
        }
        let data = &b[4..len];
        b = &b[len.next_multiple_of(4).min(b.len())..];
        Some((ty, data))
    })
}

fn c_string(d: &[u8]) -> String {
    let end = d.iter().position(|&c| c == 0).unwrap_or(d.len());
    String::from_utf8_lossy(&d[..end]).into_owned()
}

struct Socket(OwnedFd);

impl Socket {
    fn open() -> io::Result<Socket> {
        // SAFETY: plain socket call; the fd is owned below.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a new fd of ours.
        let s = Socket(unsafe { OwnedFd::from_raw_fd(fd) });
        // Extended acks would only add text to errors we describe ourselves.
        Ok(s)
    }

    /// Sends `req` and collects the replies (type, body) until the dump ends or the kernel
    /// acknowledges; a negative acknowledgement is the error.
    fn request(&self, req: Msg) -> io::Result<Vec<(u16, Vec<u8>)>> {
        let msg = req.finish(1);
        // SAFETY: all-zero is a valid sockaddr_nl (pid 0: the kernel).
        let mut to: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        to.nl_family = libc::AF_NETLINK as u16;
        // SAFETY: a live buffer and address of the sizes given.
        let rc = unsafe {
            libc::sendto(
                self.0.as_raw_fd(),
                msg.as_ptr().cast(),
                msg.len(),
                0,
                (&raw const to).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as u32,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut out = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            // SAFETY: a buffer of the length given.
            let n =
                unsafe { libc::recv(self.0.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            let mut b = &buf[..n as usize];
            while b.len() >= NLMSG_HDR_LEN {
                let len = u32::from_ne_bytes(b[0..4].try_into().unwrap()) as usize;
                let ty = u16::from_ne_bytes([b[4], b[5]]);
                if len < NLMSG_HDR_LEN || len > b.len() {
                    return Err(io::Error::other("truncated netlink reply"));
                }
                let body = &b[NLMSG_HDR_LEN..len];
                match ty {
                    NLMSG_DONE => return Ok(out),
                    NLMSG_ERROR => {
                        let code = body
                            .get(..4)
                            .map_or(0, |c| i32::from_ne_bytes(c.try_into().unwrap()));
                        return if code == 0 {
                            Ok(out)
                        } else {
                            Err(io::Error::from_raw_os_error(-code))
                        };
                    }
                    _ => out.push((ty, body.to_vec())),
                }
                b = &b[len.next_multiple_of(4).min(b.len())..];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_round_trip_with_padding_and_nesting() {
        let mut m = Msg::new(RTM_SETLINK, NLM_F_ACK);
        let n = m.nest(IFLA_XDP);
        m.attr(IFLA_XDP_FD, &7i32.to_ne_bytes());
        m.attr(TCA_KIND, b"bpf\0");
        m.end_nest(n);
        let b = m.finish(9);
        assert_eq!(
            u32::from_ne_bytes(b[0..4].try_into().unwrap()) as usize,
            b.len()
        );
        assert_eq!(b.len() % 4, 0);
        let outer: Vec<_> = attrs(&b[NLMSG_HDR_LEN..]).collect();
        assert_eq!(outer.len(), 1);
        assert_eq!(outer[0].0, IFLA_XDP);
        let inner: Vec<_> = attrs(outer[0].1).collect();
        assert_eq!(inner[0], (IFLA_XDP_FD, &7i32.to_ne_bytes()[..]));
        assert_eq!(c_string(inner[1].1), "bpf");
    }

    #[test]
    fn reads_loopback() {
        let lo = crate::probe::netdev::ifindex("lo").unwrap();
        assert!(xdp_progs(lo).is_ok());
        assert!(tc_filters(lo, PARENT_INGRESS).is_ok());
    }

    #[test]
    fn an_unknown_interface_is_an_error() {
        assert!(xdp_progs(u32::MAX - 1).is_err());
    }
}
