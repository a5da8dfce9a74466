//! The packet parser: one frame in, the flow it belongs to (or the stat it is counted under) out.
//!
//! Written against [`Frame`] so the very same code runs inside the eBPF programs (over the
//! packet pointers, with the bounds checks the verifier wants) and in host unit tests (over a
//! byte slice). Every read goes through [`Frame::load`]; a frame that ends early is a parse
//! error of the layer it ended in, never a panic and never a flow.

use crate::flow::{v4_mapped, zero_pad, Direction, FlowKey, Initiator};
use crate::stats::Stat;

/// At most this many VLAN tags (802.1ad S-tag + 802.1Q C-tag).
pub const MAX_VLAN_TAGS: usize = 2;
/// IPv6 extension headers walked before giving up (`ErrIpv6Ext`).
pub const MAX_IPV6_EXT: usize = 6;
/// TCP options looked at when searching for the timestamp option (RFC 7323). Linux puts it
/// third on a SYN (MSS, SACK-permitted, TS) and first on every other segment.
pub const MAX_TCP_OPTIONS: usize = 10;
/// Largest TCP option area: data offset 15 words minus the fixed 20 bytes.
const MAX_TCP_OPT_LEN: usize = 40;
const TCPOPT_EOL: u8 = 0;
const TCPOPT_NOP: u8 = 1;
const TCPOPT_TS: u8 = 8;
const TCPOLEN_TS: u8 = 10;
/// The timestamp option as Linux lays it out (RFC 7323 appendix A): NOP, NOP, kind, length,
/// then TSval and TSecr.
const TS_LAYOUT: [u8; 4] = [TCPOPT_NOP, TCPOPT_NOP, TCPOPT_TS, TCPOLEN_TS];
const TS_LAYOUT_LEN: usize = 12;

const ETH_HLEN: usize = 14;
const ETH_P_IPV4: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;
const ETH_P_QINQ_OLD: u16 = 0x9100;

pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_ICMPV6: u8 = 58;

/// Bytes read from a frame, 8-aligned. edge-ebpf is built with misaligned loads allowed
/// (packet fields read as words), and then LLVM may copy a plain byte array onto the BPF
/// stack with word stores at the array's own odd offsets, which the verifier rejects; an
/// 8-aligned array keeps those stores aligned.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bytes<const N: usize>(pub [u8; N]);

impl<const N: usize> core::ops::Deref for Bytes<N> {
    type Target = [u8; N];

    #[inline(always)]
    fn deref(&self) -> &[u8; N] {
        &self.0
    }
}

/// Read access to one frame, starting at the Ethernet header.
pub trait Frame {
    /// Length of the whole frame (for TC, `skb->len`: it may be more than [`Frame::load`]
    /// reaches when the skb is non-linear).
    fn len(&self) -> usize;
    /// `N` bytes at `off`, or `None` when the frame ends before `off + N`.
    fn load<const N: usize>(&self, off: usize) -> Option<Bytes<N>>;

    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Frame for [u8] {
    fn len(&self) -> usize {
        <[u8]>::len(self)
    }

    fn load<const N: usize>(&self, off: usize) -> Option<Bytes<N>> {
        let end = off.checked_add(N)?;
        let s = self.get(off..end)?;
        let mut out = Bytes([0u8; N]);
        out.0.copy_from_slice(s);
        Some(out)
    }
}

/// A frame that belongs to a conversation.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Parsed {
    pub key: FlowKey,
    pub dir: Direction,
    /// Who started the conversation, should this packet be its first.
    pub initiator: Initiator,
    /// IP + L4 header bytes, repeated in every segment of an aggregate.
    pub hdr_len: u16,
    /// IP total length of this packet (of the whole aggregate for a GSO/GRO skb), clamped to
    /// what the frame holds from the IP header on: a header cannot make a short frame count
    /// as a long one.
    pub ip_len: u32,
    /// TCP flags byte, 0 for other protocols.
    pub tcp_flags: u8,
    /// Whether a TCP timestamp option is present (then `tsval`/`tsecr` hold it).
    pub has_ts: bool,
    /// Bytes the IP header claimed (IPv4 total length, IPv6 40 + payload length) beyond what
    /// the frame holds: cut from `ip_len`, counted under `Stat::HeaderExcess`. At most 65,535
    /// (a claim of at most 65,575 bytes against at least the 40 the parser read).
    pub excess: u16,
    /// Offset of the L4 payload in the frame (TCP/UDP; after the ICMP header for ICMP).
    pub payload_off: u16,
    /// TCP sequence and acknowledgement numbers; 0 for other protocols.
    pub seq: u32,
    pub ack: u32,
    /// TCP timestamp option (RFC 7323): the sender's clock and the echo of the peer's.
    pub tsval: u32,
    pub tsecr: u32,
}

impl Default for Parsed {
    fn default() -> Parsed {
        Parsed {
            key: FlowKey::default(),
            dir: Direction::AToB,
            initiator: Initiator::A,
            hdr_len: 0,
            ip_len: 0,
            tcp_flags: 0,
            has_ts: false,
            excess: 0,
            payload_off: 0,
            seq: 0,
            ack: 0,
            tsval: 0,
            tsecr: 0,
        }
    }
}

impl Parsed {
    /// Wire bytes of this packet when it stands for `segs` segments (DESIGN.md, GRO/GSO):
    /// `ip_len + (segs - 1) * hdr_len`.
    #[inline(always)]
    pub fn wire_bytes(&self, segs: u32) -> u64 {
        let extra = segs.saturating_sub(1);
        self.ip_len as u64 + extra as u64 * self.hdr_len as u64
    }
}

#[inline(always)]
fn be16(b: [u8; 2]) -> u16 {
    u16::from_be_bytes(b)
}

/// Parses one frame. `accel_vlan` is a VLAN tag the driver already took out of the frame
/// (TC: `skb->vlan_tci` when `vlan_present`); it is the outermost tag.
///
/// `Err(stat)` names the counter the frame belongs under instead of a flow.
pub fn parse<F: Frame + ?Sized>(f: &F, accel_vlan: Option<u16>) -> Result<Parsed, Stat> {
    let mut out = Parsed::default();
    parse_into(f, accel_vlan, &mut out)?;
    Ok(out)
}

/// [`parse`], writing into `out` (every field). The programs keep `out` in a per-CPU map
/// slot: the BPF stack (512 bytes) has no room for copies of keys.
#[inline(always)]
pub fn parse_into<F: Frame + ?Sized>(
    f: &F,
    accel_vlan: Option<u16>,
    out: &mut Parsed,
) -> Result<(), Stat> {
    let mut ethertype = be16(f.load::<2>(12).ok_or(Stat::ErrEthernet)?.0);
    let mut off = ETH_HLEN;

    // Two scalars, not an indexed array: LLVM may turn a stack-array index into a pointer
    // OR, which the verifier rejects.
    let mut outer = 0u16;
    let mut inner = 0u16;
    let mut ntags = 0usize;
    if let Some(tci) = accel_vlan {
        outer = tci & 0x0fff;
        ntags = 1;
    }
    // One pass more than tags allowed, to see a third tag and reject it.
    for _ in 0..=MAX_VLAN_TAGS {
        if ethertype != ETH_P_8021Q && ethertype != ETH_P_8021AD && ethertype != ETH_P_QINQ_OLD {
            break;
        }
        if ntags >= MAX_VLAN_TAGS {
            return Err(Stat::ErrVlan);
        }
        let tag = f.load::<4>(off).ok_or(Stat::ErrVlan)?;
        let id = be16([tag[0], tag[1]]) & 0x0fff;
        if ntags == 0 {
            outer = id;
        } else {
            inner = id;
        }
        ntags += 1;
        ethertype = be16([tag[2], tag[3]]);
        off += 4;
    }

    let key = &mut out.key;
    key.vlan_outer = outer;
    key.vlan_inner = inner;
    key.ifindex = 0;
    zero_pad(&mut key._pad);
    let l3 = off;
    // Source goes to endpoint a, destination to b; they are put in order at the end.
    // What the IP header says the packet's length is, and what the frame holds from it on
    // (for TC the whole skb, paged data included, so an aggregate's claim stands).
    let claimed: u32;
    let held = f.len().saturating_sub(l3) as u32;
    let proto: u8;
    let mut l4: usize;

    match ethertype {
        ETH_P_IPV4 => {
            // The fixed header in one read first: a later, larger check must not make
            // LLVM drop the checks of these fields (the verifier would not follow).
            let h = f.load::<20>(l3).ok_or(Stat::ErrIpv4)?;
            if h[0] >> 4 != 4 {
                return Err(Stat::ErrIpv4);
            }
            let ihl = ((h[0] & 0x0f) as usize) * 4;
            if ihl < 20 {
                return Err(Stat::ErrIpv4);
            }
            let tot_len = be16([h[2], h[3]]) as usize;
            if be16([h[6], h[7]]) & 0x1fff != 0 {
                return Err(Stat::Fragment);
            }
            proto = h[9];
            key.addr_a = v4_mapped([h[12], h[13], h[14], h[15]]);
            key.addr_b = v4_mapped([h[16], h[17], h[18], h[19]]);
            if ihl > 20 {
                // The options must be there too.
                f.load::<1>(l3 + ihl - 1).ok_or(Stat::ErrIpv4)?;
            }
            // 0 is what a >64 KiB (BIG TCP) aggregate carries: fall back to what is there.
            claimed = if tot_len == 0 {
                held
            } else if tot_len < ihl {
                return Err(Stat::ErrIpv4);
            } else {
                tot_len as u32
            };
            l4 = l3 + ihl;
        }
        ETH_P_IPV6 => {
            let h = f.load::<8>(l3).ok_or(Stat::ErrIpv6)?;
            if h[0] >> 4 != 6 {
                return Err(Stat::ErrIpv6);
            }
            key.addr_a = load_addr6(f, l3 + 8).ok_or(Stat::ErrIpv6)?;
            key.addr_b = load_addr6(f, l3 + 24).ok_or(Stat::ErrIpv6)?;
            let payload = be16([h[4], h[5]]) as u32;
            claimed = if payload == 0 { held } else { 40 + payload };
            let mut next = h[6];
            l4 = l3 + 40;
            let mut walked = 0usize;
            loop {
                let len = match next {
                    // hop-by-hop, routing, destination options: (len + 1) * 8
                    0 | 43 | 60 => {
                        let e = f.load::<2>(l4).ok_or(Stat::ErrIpv6Ext)?;
                        next = e[0];
                        (e[1] as usize + 1) * 8
                    }
                    // fragment: fixed 8 bytes; only the first fragment has the L4 header
                    44 => {
                        let e = f.load::<4>(l4).ok_or(Stat::ErrIpv6Ext)?;
                        next = e[0];
                        if be16([e[2], e[3]]) >> 3 != 0 {
                            return Err(Stat::Fragment);
                        }
                        8
                    }
                    // authentication header: (len + 2) * 4
                    51 => {
                        let e = f.load::<2>(l4).ok_or(Stat::ErrIpv6Ext)?;
                        next = e[0];
                        (e[1] as usize + 2) * 4
                    }
                    _ => break,
                };
                // The whole header must be there: one cut short is this layer's error,
                // not the next one's.
                f.load::<1>(l4 + len - 1).ok_or(Stat::ErrIpv6Ext)?;
                l4 += len;
                walked += 1;
                if walked >= MAX_IPV6_EXT {
                    // The limit is reached; only an L4 header may follow.
                    if matches!(next, 0 | 43 | 44 | 51 | 60) {
                        return Err(Stat::ErrIpv6Ext);
                    }
                    break;
                }
            }
            proto = next;
        }
        _ => return Err(Stat::NonIp),
    }

    // TCP's fields go straight into `out` as they are read, zero for other protocols: fewer
    // values live across the match, fewer spills to the BPF stack.
    clear_tcp(out);
    // The last value: which side started it, should this be the first packet (true: the
    // sender).
    let (sport, dport, l4_hdr, sender_initiated) = match proto {
        IPPROTO_TCP => {
            let h = f.load::<20>(l4).ok_or(Stat::ErrL4)?;
            let doff = ((h[12] >> 4) as usize) * 4;
            if doff < 20 {
                return Err(Stat::ErrL4);
            }
            if doff > 20 {
                f.load::<1>(l4 + doff - 1).ok_or(Stat::ErrL4)?;
            }
            let sport = be16([h[0], h[1]]);
            let dport = be16([h[2], h[3]]);
            let flags = h[13];
            out.tcp_flags = flags;
            out.seq = u32::from_be_bytes([h[4], h[5], h[6], h[7]]);
            out.ack = u32::from_be_bytes([h[8], h[9], h[10], h[11]]);
            if let Some((val, ecr)) = tcp_timestamp(f, l4 + 20, doff - 20) {
                out.has_ts = true;
                out.tsval = val;
                out.tsecr = ecr;
            }
            let syn = flags & crate::flow::tcp::SYN != 0;
            let ack = flags & crate::flow::tcp::ACK != 0;
            let initiated = if syn { !ack } else { !serves(sport, dport) };
            (sport, dport, doff, initiated)
        }
        IPPROTO_UDP => {
            let p = f.load::<8>(l4).ok_or(Stat::ErrL4)?;
            let sport = be16([p[0], p[1]]);
            let dport = be16([p[2], p[3]]);
            (sport, dport, 8, !serves(sport, dport))
        }
        IPPROTO_ICMP | IPPROTO_ICMPV6 => {
            let p = f.load::<8>(l4).ok_or(Stat::ErrL4)?;
            let (ty, reply) = icmp_request_form(proto, p[0]);
            let tc = ((ty as u16) << 8) | p[1] as u16;
            (tc, tc, 8, !reply)
        }
        _ => (0, 0, 0, true),
    };

    let key = &mut out.key;
    key.proto = proto;
    // Canonical order: endpoint a is the lower (address, port). The addresses are compared
    // and swapped as two big-endian words each: array swaps and compares become byte loops.
    let (a_hi, a_lo) = addr_words(&key.addr_a);
    let (b_hi, b_lo) = addr_words(&key.addr_b);
    let a_first = if a_hi != b_hi {
        a_hi < b_hi
    } else if a_lo != b_lo {
        a_lo < b_lo
    } else {
        sport <= dport
    };
    let dir = if a_first {
        key.port_a = sport;
        key.port_b = dport;
        Direction::AToB
    } else {
        key.addr_a = addr_bytes(b_hi, b_lo);
        key.addr_b = addr_bytes(a_hi, a_lo);
        key.port_a = dport;
        key.port_b = sport;
        Direction::BToA
    };
    out.dir = dir;
    out.initiator = match (dir, sender_initiated) {
        (Direction::AToB, true) | (Direction::BToA, false) => Initiator::A,
        _ => Initiator::B,
    };
    let ip_len = if claimed > held { held } else { claimed };
    out.ip_len = ip_len;
    out.excess = (claimed - ip_len) as u16;
    out.hdr_len = (l4 - l3 + l4_hdr) as u16;
    out.payload_off = (l4 + l4_hdr) as u16;
    Ok(())
}

/// The timestamp option's (TSval, TSecr) in the TCP option area `[off, off + len)`, if there.
///
/// The common layout (NOP, NOP, TS: every Linux segment after the SYN) is read in one go;
/// otherwise at most [`MAX_TCP_OPTIONS`] options are walked. A malformed option area gives
/// `None`: the segment still counts, it just yields no RTT sample.
#[inline(always)]
fn tcp_timestamp<F: Frame + ?Sized>(f: &F, off: usize, len: usize) -> Option<(u32, u32)> {
    if len > MAX_TCP_OPT_LEN {
        return None;
    }
    if len >= TS_LAYOUT_LEN {
        let o = f.load::<TS_LAYOUT_LEN>(off)?;
        if o[..4] == TS_LAYOUT {
            return Some(ts_fields(&o, 4));
        }
    }
    let mut pos = 0usize;
    for _ in 0..MAX_TCP_OPTIONS {
        // A timestamp option needs 10 bytes, so fewer left means none. This also makes the
        // 2-byte read below safe (1-byte packet reads compile to a compare the verifier
        // cannot use) and keeps `pos` small for the verifier.
        if pos + TCPOLEN_TS as usize > len || pos >= MAX_TCP_OPT_LEN {
            return None;
        }
        let Bytes([kind, olen]) = f.load::<2>(off + pos)?;
        match kind {
            TCPOPT_EOL => return None,
            TCPOPT_NOP => pos += 1,
            _ => {
                let olen = olen as usize;
                if olen < 2 || pos + olen > len {
                    return None;
                }
                if kind == TCPOPT_TS {
                    if olen != TCPOLEN_TS as usize {
                        return None;
                    }
                    let o = f.load::<8>(off + pos + 2)?;
                    return Some(ts_fields(&o, 0));
                }
                pos += olen;
            }
        }
    }
    None
}

#[inline(always)]
fn ts_fields<const N: usize>(o: &[u8; N], at: usize) -> (u32, u32) {
    (
        u32::from_be_bytes([o[at], o[at + 1], o[at + 2], o[at + 3]]),
        u32::from_be_bytes([o[at + 4], o[at + 5], o[at + 6], o[at + 7]]),
    )
}

/// A well-known port answering an ephemeral one: the packet goes server → client.
#[inline(always)]
fn serves(sport: u16, dport: u16) -> bool {
    sport < 1024 && dport >= 1024
}

/// Maps a reply type to its request type, so both halves of an exchange share a key.
/// Returns (type, whether it was a reply).
#[inline(always)]
fn icmp_request_form(proto: u8, ty: u8) -> (u8, bool) {
    if proto == IPPROTO_ICMP {
        match ty {
            0 => (8, true),   // echo reply → echo request
            14 => (13, true), // timestamp reply
            16 => (15, true), // information reply
            18 => (17, true), // address mask reply
            t => (t, false),
        }
    } else {
        match ty {
            129 => (128, true), // echo reply → echo request
            t => (t, false),
        }
    }
}

/// An IPv6 address as two 8-byte reads: a 16-byte array copy out of the packet compiles to a
/// split copy with a `memcpy` call (a byte loop in BPF).
#[inline(always)]
fn load_addr6<F: Frame + ?Sized>(f: &F, off: usize) -> Option<[u8; 16]> {
    let hi = u64::from_be_bytes(f.load::<8>(off)?.0) as u128;
    let lo = u64::from_be_bytes(f.load::<8>(off + 8)?.0) as u128;
    Some((hi << 64 | lo).to_be_bytes())
}

/// Zeroes the TCP fields of `out`, one volatile store each: LLVM merges plain zero stores
/// into a `memset` call, a byte loop in BPF.
#[inline(always)]
fn clear_tcp(out: &mut Parsed) {
    // SAFETY: writes to fields of a valid `&mut Parsed`.
    unsafe {
        core::ptr::write_volatile(&raw mut out.tcp_flags, 0);
        core::ptr::write_volatile(&raw mut out.has_ts, false);
        core::ptr::write_volatile(&raw mut out.payload_off, 0);
        core::ptr::write_volatile(&raw mut out.seq, 0);
        core::ptr::write_volatile(&raw mut out.ack, 0);
        core::ptr::write_volatile(&raw mut out.tsval, 0);
        core::ptr::write_volatile(&raw mut out.tsecr, 0);
    }
}

/// An address as two big-endian u64 words: comparing them in order compares the addresses.
#[inline(always)]
fn addr_words(a: &[u8; 16]) -> (u64, u64) {
    let v = u128::from_be_bytes(*a);
    ((v >> 64) as u64, v as u64)
}

#[inline(always)]
fn addr_bytes(hi: u64, lo: u64) -> [u8; 16] {
    ((hi as u128) << 64 | lo as u128).to_be_bytes()
}

#[cfg(test)]
mod tests;
