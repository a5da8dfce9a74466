//! The flow table's key and value.
//!
//! One bidirectional record per conversation (IPFIX biflow, RFC 5103): the key orders the two
//! endpoints canonically, so both directions of a conversation hit the same entry, and the
//! value keeps its counters per [`Direction`].

use crate::rtt::FlowRtt;

/// Map name of the flow table in the eBPF object: an array of [`crate::table::FlowSlot`]
/// (see [`crate::table`] for why not a hash map).
pub const FLOWS_MAP: &str = "FLOWS";
/// Map name of the hop masks beside it: per home slot, the distances from it at which flows
/// of that home were put ([`crate::table`], lookups); one word per slot.
pub const HOPS_MAP: &str = "FLOWS_HOPS";
/// Map name of the held-slots bitmap beside it ([`crate::table::TableShape::bitmap_words`]).
pub const HELD_MAP: &str = "FLOWS_HELD";
/// Map name of the two-slot array where the `edgeflow_clock` program (run by the agent with
/// BPF_PROG_TEST_RUN) leaves the tick counter (slot 0) and CLOCK_MONOTONIC in ns (slot 1),
/// read at one moment.
pub const TICK_CLOCK_MAP: &str = "TICK_CLOCK";
/// Default number of flows the flow table is sized for (it has twice as many slots:
/// [`crate::table::TableShape`]).
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

/// Zeroes a key's padding bytes one volatile store at a time: `[0; 3]` or a plain loop
/// becomes a `memset` call, a byte loop in BPF. The table's hash and compare cover the padding.
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

/// One direction's per-packet fields, alone in a cache line of a table slot.
///
/// On a monitored interface a flow's two directions are its two hooks (packets a→b arrive,
/// b→a leave, or the reverse), run by different CPUs: the receiver's ACKs leave from the CPU
/// of the process reading while the data arrives in the sender's softirq. Each hook writes only
/// its own direction's line, so the two CPUs do not take a line from each other on every
/// packet (bench/RESULTS.md, session 7).
#[repr(C, align(64))]
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
    /// TCP health (see [`crate::conn`]): the highest sequence end of a data segment seen
    /// this way, valid once `seq_known` is 1; a data segment ending at or below it is a
    /// retransmission.
    pub seq_high: u32,
    pub seq_known: u32,
    /// Retransmitted data segments (an aggregate by its segments) and their payload bytes.
    pub retrans_segs: u64,
    pub retrans_bytes: u64,
    /// RST and FIN segments.
    pub rst: u32,
    pub fin: u32,
}

/// Counters of one conversation. Updated with atomic adds by every CPU that sees it.
///
/// A line of what packets read but seldom write (first seen, flags, the RTT state that
/// changes once per sample), then each direction's per-packet fields ([`DirCounters`]) in a
/// line of their own.
#[repr(C, align(64))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowCounters {
    /// The tick counter at the first packet (as [`DirCounters::last_seen`]).
    pub first_seen: u64,
    /// OR of TCP flags: bits 0..8 for a→b, bits 8..16 for b→a. Written only when a packet
    /// brings a new flag.
    pub tcp_flags: u32,
    /// [`Initiator`] as u8 in the low byte; bit 8 is [`OWNER_PENDING`]; the rest is zero.
    pub initiator: u32,
    /// TCP round-trip times measured at this interface (see [`crate::rtt`]).
    pub rtt: FlowRtt,
    /// Pure SYN segments (connection attempts, [`crate::conn::syn_retries`]); counted with TCP
    /// health on.
    pub syns: u32,
    /// Fills the line.
    pub _pad: [u32; 2],
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

/// In [`FlowCounters::initiator`]: the flow's owner waits for its first TC egress packet
/// (`crate::owner`). In this line, which every packet's update reads anyway, an egress
/// packet of a known flow tells whether to look at the owner with no other line touched.
pub const OWNER_PENDING: u32 = 1 << 8;

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
        assert_eq!(
            size_of::<DirCounters>(),
            8 * 3 + 4 + 4 + 4 + 4 + 8 + 8 + 4 + 4
        );
        assert_eq!(
            size_of::<FlowCounters>(),
            8 + 4 + 4 + size_of::<FlowRtt>() + 4 + 8 + 2 * size_of::<DirCounters>()
        );
    }

    #[test]
    fn each_direction_has_a_line_of_its_own() {
        assert_eq!(align_of::<FlowCounters>(), 64);
        assert_eq!(offset_of!(FlowCounters, dir), 64);
        assert_eq!(size_of::<DirCounters>(), 64);
        // What a packet writes fits in its direction's line.
        assert_eq!(offset_of!(DirCounters, fin) + 4, 64);
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
