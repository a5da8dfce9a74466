//! The flow table's key and value.
//!
//! One bidirectional record per conversation (IPFIX biflow, RFC 5103): the key orders the two
//! endpoints canonically, so both directions of a conversation hit the same entry, and the
//! value keeps its counters per [`Direction`].

use crate::rtt::FlowRtt;
use core::mem::MaybeUninit;

/// Map names of the flow tables in the eBPF object: IPv4 flows ([`FlowKey4`]) and IPv6 flows
/// ([`FlowKey`]). Two tables because the kernel hashes and compares the whole key on every
/// packet: IPv4's 24-byte key costs 5–10 ns less per packet than the 48-byte one
/// (bench/RESULTS.md).
pub const FLOWS4_MAP: &str = "FLOWS4";
pub const FLOWS6_MAP: &str = "FLOWS6";
/// Map name of the two-slot array where the `edgeflow_clock` program (run by the agent with
/// BPF_PROG_TEST_RUN) leaves the tick counter (slot 0) and CLOCK_MONOTONIC in ns (slot 1),
/// read at one moment.
pub const TICK_CLOCK_MAP: &str = "TICK_CLOCK";
/// Default number of entries in the flow table.
pub const DEFAULT_MAX_FLOWS: u32 = 16_384;
/// Smallest and largest table the agent accepts.
pub const MIN_MAX_FLOWS: u32 = 16;
pub const MAX_MAX_FLOWS: u32 = 1 << 22;

/// Identity of one conversation.
///
/// Endpoint `a` is the lower of the two (address, port) pairs, `b` the higher. Addresses are
/// 16 bytes, IPv4 as IPv4-mapped IPv6 (`::ffff:a.b.c.d`). For ICMP and ICMPv6 both ports hold
/// `type << 8 | code` of the request form (an echo reply is keyed as its echo request), so the
/// two directions of an exchange share one entry. Other protocols without ports use 0.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowKey {
    pub addr_a: [u8; 16],
    pub addr_b: [u8; 16],
    /// Host byte order.
    pub port_a: u16,
    pub port_b: u16,
    /// Outer VLAN id (802.1ad S-tag, or the only 802.1Q tag); 0 when untagged.
    pub vlan_outer: u16,
    /// Inner VLAN id of a stacked (QinQ) frame; 0 otherwise.
    pub vlan_inner: u16,
    /// The interface the packet was seen on, so a gateway watching two interfaces does not
    /// count a forwarded packet twice into one record.
    pub ifindex: u32,
    /// IP protocol number (6 TCP, 17 UDP, 1 ICMP, 58 ICMPv6, ...).
    pub proto: u8,
    pub _pad: [u8; 3],
}

/// [`FlowKey`] of an IPv4 flow as the IPv4 table keys it: the same fields, 4-byte addresses.
/// 8-aligned (its size is 24 either way) so the programs' copy on the stack is: the verifier
/// rejects a misaligned stack access, and LLVM copies the key in words.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey4 {
    pub addr_a: [u8; 4],
    pub addr_b: [u8; 4],
    pub port_a: u16,
    pub port_b: u16,
    pub vlan_outer: u16,
    pub vlan_inner: u16,
    pub ifindex: u32,
    pub proto: u8,
    pub _pad: [u8; 3],
}

/// Zeroes a key's padding bytes one volatile store at a time: `[0; 3]` or a plain loop
/// becomes a `memset` call, a byte loop in BPF. The kernel hashes the padding with the key.
#[inline(always)]
pub fn zero_pad(pad: &mut [u8; 3]) {
    for b in pad.iter_mut() {
        // SAFETY: a valid byte.
        unsafe { core::ptr::write_volatile(b, 0) };
    }
}

/// An IPv4 address as IPv4-mapped IPv6 (`::ffff:a.b.c.d`), the form [`FlowKey`] holds it in.
#[inline(always)]
pub fn v4_mapped(a: [u8; 4]) -> [u8; 16] {
    // One 128-bit value, stored as words: an array literal becomes a memset call, a byte loop
    // in BPF.
    ((0xffff_u128 << 32) | u32::from_be_bytes(a) as u128).to_be_bytes()
}

/// The last four bytes of an address: the IPv4 address, if it is IPv4-mapped.
#[inline(always)]
fn v4_part(a: &[u8; 16]) -> [u8; 4] {
    [a[12], a[13], a[14], a[15]]
}

impl FlowKey4 {
    /// Writes `k`'s fields into `out`, with the IPv4 part of its (IPv4-mapped) addresses, and
    /// returns it. In place and field by field: a value returned and moved, or a struct
    /// literal, lets LLVM copy the padding's three bytes with a misaligned store (the
    /// verifier rejects it on the stack), and a struct copy can become a `memcpy` call (a
    /// byte loop in BPF).
    #[inline(always)]
    pub fn init_from<'a>(out: &'a mut MaybeUninit<FlowKey4>, k: &FlowKey) -> &'a FlowKey4 {
        let o = out.as_mut_ptr();
        // SAFETY: every field of `out` is written before it is handed out.
        unsafe {
            (&raw mut (*o).addr_a).write(v4_part(&k.addr_a));
            (&raw mut (*o).addr_b).write(v4_part(&k.addr_b));
            (&raw mut (*o).port_a).write(k.port_a);
            (&raw mut (*o).port_b).write(k.port_b);
            (&raw mut (*o).vlan_outer).write(k.vlan_outer);
            (&raw mut (*o).vlan_inner).write(k.vlan_inner);
            (&raw mut (*o).ifindex).write(k.ifindex);
            (&raw mut (*o).proto).write(k.proto);
            for i in 0..3 {
                core::ptr::write_volatile((&raw mut (*o)._pad).cast::<u8>().add(i), 0);
            }
            out.assume_init_ref()
        }
    }

    /// The flow's identity in the common form: addresses IPv4-mapped.
    pub fn to_key(&self) -> FlowKey {
        FlowKey {
            addr_a: v4_mapped(self.addr_a),
            addr_b: v4_mapped(self.addr_b),
            port_a: self.port_a,
            port_b: self.port_b,
            vlan_outer: self.vlan_outer,
            vlan_inner: self.vlan_inner,
            ifindex: self.ifindex,
            proto: self.proto,
            _pad: [0; 3],
        }
    }
}

impl FlowKey {
    /// The IPv4 table's key of this flow, when both addresses are IPv4-mapped.
    pub fn to_v4(&self) -> Option<FlowKey4> {
        let is_mapped = |a: &[u8; 16]| v4_mapped(v4_part(a)) == *a;
        if !is_mapped(&self.addr_a) || !is_mapped(&self.addr_b) {
            return None;
        }
        Some(*FlowKey4::init_from(&mut MaybeUninit::uninit(), self))
    }
}

/// Which way a packet went, relative to the key's canonical order.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// From endpoint `a` to endpoint `b`.
    AToB = 0,
    /// From endpoint `b` to endpoint `a`.
    BToA = 1,
}

impl Direction {
    #[inline(always)]
    pub fn index(self) -> usize {
        self as usize
    }
}

/// Which endpoint started the conversation, as far as the first packet tells.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Initiator {
    A = 0,
    B = 1,
}

/// One direction's per-packet fields, alone in a cache line of an IPv4 element.
///
/// On a monitored interface a flow's two directions are its two hooks (packets a→b arrive,
/// b→a leave, or the reverse), run by different CPUs: the receiver's ACKs leave from the CPU
/// of the process reading while the data arrives in the sender's softirq. Each hook writes only
/// its own direction's line, so the two CPUs do not take a line from each other on every
/// packet (bench/RESULTS.md, session 7).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DirCounters {
    /// Packets, counted as on the wire.
    pub packets: u64,
    /// The sum of each wire packet's IP total length.
    pub bytes: u64,
    /// The kernel's tick counter (`bpf_jiffies64`) at the latest packet: 1–10 ms resolution
    /// (HZ 1000–100). The agent converts ticks to time through [`TICK_CLOCK_MAP`].
    pub last_seen: u64,
    /// RTT (see [`crate::rtt`]): the last TSecr that arrived and the last TSval that left in
    /// this direction; only a new value is looked at.
    pub ts_last_ecr: u32,
    pub ts_last_val: u32,
    /// Fills the line: the other direction's fields start on the next one.
    pub _pad: [u64; 4],
}

/// Counters of one conversation. Updated with atomic adds by every CPU that sees it.
///
/// The kernel's hash map puts a 48-byte header and the key before the value, so in the IPv4
/// table (24-byte key) the value starts at byte 72 of the element, in the key's second line.
/// That line holds what packets read but seldom write (first seen, flags, the RTT state that
/// changes once per sample), and each direction's per-packet fields ([`DirCounters`]) have a
/// line of their own: a 256-byte element, starting on a line. IPv6 elements (48-byte key)
/// are 280 bytes and do not keep to lines.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowCounters {
    /// The tick counter at the first packet (as [`DirCounters::last_seen`]).
    pub first_seen: u64,
    /// OR of TCP flags: bits 0..8 for a→b, bits 8..16 for b→a. Written only when a packet
    /// brings a new flag.
    pub tcp_flags: u32,
    /// [`Initiator`] as u8 in the low byte; the rest is zero.
    pub initiator: u32,
    /// TCP round-trip times measured at this interface (see [`crate::rtt`]).
    pub rtt: FlowRtt,
    pub _pad: u32,
    /// Per [`Direction`] (index 0: a→b, 1: b→a).
    pub dir: [DirCounters; 2],
}

impl FlowCounters {
    /// TCP flags seen in one direction.
    pub fn flags(&self, dir: Direction) -> u8 {
        (self.tcp_flags >> (8 * dir.index() as u32)) as u8
    }

    pub fn initiator(&self) -> Initiator {
        if self.initiator & 0xff == Initiator::B as u32 {
            Initiator::B
        } else {
            Initiator::A
        }
    }

    /// Packets per [`Direction`].
    pub fn packets(&self) -> [u64; 2] {
        [self.dir[0].packets, self.dir[1].packets]
    }

    /// Bytes per [`Direction`].
    pub fn bytes(&self) -> [u64; 2] {
        [self.dir[0].bytes, self.dir[1].bytes]
    }

    /// The tick counter at the latest packet either way.
    pub fn last_seen(&self) -> u64 {
        self.dir[0].last_seen.max(self.dir[1].last_seen)
    }

    /// A value with these counters per [`Direction`] and nothing else: for tests and tools.
    pub fn counted(packets: [u64; 2], bytes: [u64; 2]) -> FlowCounters {
        let mut c = FlowCounters::default();
        for d in 0..2 {
            c.dir[d].packets = packets[d];
            c.dir[d].bytes = bytes[d];
        }
        c
    }
}

/// TCP flag bits as in the header's 13th byte.
pub mod tcp {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
    pub const URG: u8 = 0x20;
    pub const ECE: u8 = 0x40;
    pub const CWR: u8 = 0x80;
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: both are repr(C), Copy, with explicit padding and no pointers: any byte
    // pattern is a valid value, which is what aya::Pod requires.
    unsafe impl aya::Pod for super::FlowKey {}
    unsafe impl aya::Pod for super::FlowKey4 {}
    unsafe impl aya::Pod for super::FlowCounters {}
    unsafe impl aya::Pod for super::DirCounters {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{align_of, offset_of, size_of};

    #[test]
    fn layouts_have_no_implicit_padding() {
        assert_eq!(size_of::<FlowKey>(), 16 + 16 + 2 + 2 + 2 + 2 + 4 + 1 + 3);
        assert_eq!(align_of::<FlowKey>(), 4);
        assert_eq!(size_of::<FlowKey4>(), 4 + 4 + 2 + 2 + 2 + 2 + 4 + 1 + 3);
        assert_eq!(align_of::<FlowKey4>(), 8);
        assert_eq!(size_of::<DirCounters>(), 8 * 3 + 4 + 4 + 4 * 8);
        assert_eq!(
            size_of::<FlowCounters>(),
            8 + 4 + 4 + size_of::<FlowRtt>() + 4 + 2 * size_of::<DirCounters>()
        );
        assert_eq!(align_of::<FlowCounters>(), 8);
    }

    /// The kernel's hash-map element: a 48-byte header (`struct htab_elem`), the key and the
    /// value, each rounded up to 8 bytes.
    fn element(key: usize) -> usize {
        48 + key.next_multiple_of(8) + size_of::<FlowCounters>()
    }

    #[test]
    fn each_direction_writes_a_line_of_its_own_in_an_ipv4_element() {
        let key = size_of::<FlowKey4>();
        assert_eq!(element(key) % 64, 0, "elements start on a line");
        // The line the key ends in holds the value's read-mostly part, up to the first
        // direction's fields.
        let value = 48 + key;
        assert_eq!(value / 64, 1);
        let dir = |d: usize| value + offset_of!(FlowCounters, dir) + d * size_of::<DirCounters>();
        assert_eq!((dir(0), dir(1)), (128, 192));
        // What a packet writes fits in its direction's line.
        assert!(offset_of!(DirCounters, _pad) <= 64);
        assert_eq!(size_of::<DirCounters>(), 64);
    }

    #[test]
    fn counts_and_latest_packet_read_across_directions() {
        let mut c = FlowCounters::counted([3, 4], [300, 400]);
        c.dir[0].last_seen = 9;
        c.dir[1].last_seen = 7;
        assert_eq!(
            (c.packets(), c.bytes(), c.last_seen()),
            ([3, 4], [300, 400], 9)
        );
    }

    #[test]
    fn ipv4_keys_convert_both_ways() {
        let k = FlowKey {
            addr_a: [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 0, 0, 1],
            addr_b: [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 0, 0, 2],
            port_a: 1234,
            port_b: 53,
            vlan_outer: 100,
            vlan_inner: 7,
            ifindex: 3,
            proto: 17,
            _pad: [0; 3],
        };
        let k4 = k.to_v4().unwrap();
        assert_eq!(
            (k4.addr_a, k4.addr_b, k4.port_a, k4.port_b),
            ([10, 0, 0, 1], [10, 0, 0, 2], 1234, 53)
        );
        assert_eq!(
            (k4.vlan_outer, k4.vlan_inner, k4.ifindex, k4.proto),
            (100, 7, 3, 17)
        );
        assert_eq!(k4.to_key(), k);
        // Padding is zero: the kernel hashes it.
        assert_eq!(k4._pad, [0; 3]);
    }

    #[test]
    fn ipv6_keys_have_no_ipv4_form() {
        let v6 = FlowKey {
            addr_a: [0x20, 0x01, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
            addr_b: [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 0, 0, 2],
            ..FlowKey::default()
        };
        assert_eq!(v6.to_v4(), None);
        let swapped = FlowKey {
            addr_a: v6.addr_b,
            addr_b: v6.addr_a,
            ..v6
        };
        assert_eq!(swapped.to_v4(), None);
    }

    #[test]
    fn flags_split_by_direction() {
        let c = FlowCounters {
            tcp_flags: (tcp::SYN as u32) | ((tcp::SYN | tcp::ACK) as u32) << 8,
            initiator: Initiator::B as u32,
            ..Default::default()
        };
        assert_eq!(c.flags(Direction::AToB), tcp::SYN);
        assert_eq!(c.flags(Direction::BToA), tcp::SYN | tcp::ACK);
        assert_eq!(c.initiator(), Initiator::B);
    }
}
