//! What a TCP connection did, measured passively where the programs sit: retransmitted data
//! segments, RST and FIN segments each way, SYNs, and from them the connection's outcome.
//!
//! Per packet (the programs, `edge-ebpf/src/programs.rs`) only counters move: a data segment
//! whose sequence end is at or below the highest end already seen that way is a
//! retransmission ([`is_retransmission`]); otherwise it raises the high mark. RST, FIN and
//! pure SYN segments are counted. The outcome is not tracked per packet at all: the agent
//! reads it off the entry's per-direction OR of flags ([`outcome`]), which needs no ordering
//! between CPUs: a responder that sent RST and never SYN refused; one that sent SYN (the
//! SYN-ACK) and then the initiator's ACK established it; FIN both ways closed it; any other RST
//! reset it. What a midpoint cannot tell apart (a segment that arrives late, reordered, counts
//! as a retransmission) is in docs/tcp.md.

use crate::{
    flow::{tcp, Direction, FlowCounters, Initiator},
    parse::Parsed,
};

/// How a connection's handshake and end went, as far as the agent's interface saw it (the
/// wire's `wire::Outcome` is this type).
#[repr(u8)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(rename_all = "snake_case")
)]
pub enum Outcome {
    /// No handshake seen (the flow began before the agent, or mid-stream on this path).
    #[default]
    Unknown = 0,
    /// SYN seen, the handshake not complete yet.
    Connecting = 1,
    /// SYN, SYN-ACK and the initiator's ACK seen.
    Established = 2,
    /// The SYN was answered by a RST (closed port, or a firewall's reject).
    Refused = 3,
    /// SYN (and its retries) with no answer before the flow expired from the table (set by the
    /// agent when it removes the entry).
    Unanswered = 4,
    /// A RST other than a refusal, before FIN both ways.
    Reset = 5,
    /// FIN seen in both directions.
    Closed = 6,
}

impl Outcome {
    pub const ALL: [Outcome; 7] = [
        Outcome::Unknown,
        Outcome::Connecting,
        Outcome::Established,
        Outcome::Refused,
        Outcome::Unanswered,
        Outcome::Reset,
        Outcome::Closed,
    ];

    /// The value as the wire holds it; `None` beyond the last.
    pub fn from_u8(v: u8) -> Option<Outcome> {
        Outcome::ALL.get(v as usize).copied()
    }

    /// Lowercase name, as in JSON.
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Unknown => "unknown",
            Outcome::Connecting => "connecting",
            Outcome::Established => "established",
            Outcome::Refused => "refused",
            Outcome::Unanswered => "unanswered",
            Outcome::Reset => "reset",
            Outcome::Closed => "closed",
        }
    }

    /// Refused or unanswered: the connection never came up.
    pub fn is_failed_connect(self) -> bool {
        matches!(self, Outcome::Refused | Outcome::Unanswered)
    }

    /// An outcome after which the connection is over.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            Outcome::Refused | Outcome::Unanswered | Outcome::Reset | Outcome::Closed
        )
    }
}

impl core::fmt::Display for Outcome {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.pad(self.name())
    }
}

/// The connection's outcome from an entry's flags (an unanswered SYN reads as
/// [`Outcome::Connecting`]: only the agent knows when the entry expires).
pub fn outcome(c: &FlowCounters) -> Outcome {
    let (i, r) = match c.initiator() {
        Initiator::A => (Direction::AToB, Direction::BToA),
        Initiator::B => (Direction::BToA, Direction::AToB),
    };
    let (fi, fr) = (c.flags(i), c.flags(r));
    let syn = fi & tcp::SYN != 0;
    let syn_ack = fr & tcp::SYN != 0;
    if fi & fr & tcp::FIN != 0 {
        // A RST after both FINs (data arriving at a closed socket) does not undo the close.
        return Outcome::Closed;
    }
    if (fi | fr) & tcp::RST != 0 {
        return if syn && !syn_ack && fr & tcp::RST != 0 {
            Outcome::Refused
        } else {
            Outcome::Reset
        };
    }
    match (syn, syn_ack, fi & tcp::ACK != 0) {
        (false, _, _) => Outcome::Unknown,
        (true, true, true) => Outcome::Established,
        _ => Outcome::Connecting,
    }
}

/// Whether an entry leaving the table is a connection whose SYN was never answered: SYN
/// seen, nothing back (no SYN-ACK, no RST) from the responder.
pub fn unanswered(c: &FlowCounters) -> bool {
    let r = match c.initiator() {
        Initiator::A => Direction::BToA,
        Initiator::B => Direction::AToB,
    };
    outcome(c) == Outcome::Connecting && c.flags(r) & tcp::SYN == 0
}

/// SYNs beyond the first.
pub fn syn_retries(c: &FlowCounters) -> u32 {
    c.syns.saturating_sub(1)
}

/// TCP payload bytes of a parsed segment (of the whole aggregate for a GSO/GRO skb, whose
/// `ip_len` covers every segment's payload and one set of headers).
#[inline(always)]
pub fn payload(p: &Parsed) -> u32 {
    p.ip_len.saturating_sub(p.hdr_len as u32)
}

/// The sequence number after a data segment's last byte, or `None` for a segment without
/// data or a SYN (its data, TCP Fast Open's, is the handshake's).
#[inline(always)]
pub fn data_end(p: &Parsed) -> Option<(u32, u32)> {
    let len = payload(p);
    if len == 0 || p.tcp_flags & tcp::SYN != 0 {
        return None;
    }
    Some((p.seq.wrapping_add(len), len))
}

/// Whether a data segment ending at `end` retransmits: it ends at or below `high`, the
/// highest end seen that way (sequence space wraps: compared as RFC 1982 serial numbers).
#[inline(always)]
pub fn is_retransmission(high: u32, end: u32) -> bool {
    (end.wrapping_sub(high) as i32) <= 0
}

/// A pure SYN (not a SYN-ACK): the initiator's connection attempt.
#[inline(always)]
pub fn is_syn(flags: u8) -> bool {
    flags & (tcp::SYN | tcp::ACK) == tcp::SYN
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::tcp::*;

    /// An entry whose initiator is `who`, with the initiator's and the responder's flags.
    fn entry(who: Initiator, init: u8, resp: u8) -> FlowCounters {
        let (i, r) = match who {
            Initiator::A => (0, 8),
            Initiator::B => (8, 0),
        };
        FlowCounters {
            tcp_flags: (init as u32) << i | (resp as u32) << r,
            initiator: who as u32,
            ..Default::default()
        }
    }

    #[test]
    fn outcomes_from_flags_either_initiator() {
        let cases = [
            (SYN, 0, Outcome::Connecting),
            (SYN, SYN | ACK, Outcome::Connecting),
            (SYN | ACK, SYN | ACK, Outcome::Established),
            (SYN | ACK | PSH, SYN | ACK | PSH, Outcome::Established),
            (SYN, RST | ACK, Outcome::Refused),
            (SYN | ACK, SYN | ACK | RST, Outcome::Reset),
            (SYN | ACK | RST, SYN | ACK, Outcome::Reset),
            (SYN | ACK | FIN, SYN | ACK | FIN, Outcome::Closed),
            (SYN | ACK | FIN, SYN | ACK | FIN | RST, Outcome::Closed),
            (SYN | ACK | FIN, SYN | ACK | RST, Outcome::Reset),
            (SYN | ACK | FIN, SYN | ACK, Outcome::Established),
            // Mid-stream: no handshake seen.
            (ACK | PSH, ACK, Outcome::Unknown),
            (ACK, ACK | RST, Outcome::Reset),
            (ACK | FIN, ACK | FIN, Outcome::Closed),
            // The initiator gives up before any answer: not a refusal.
            (SYN | RST, 0, Outcome::Reset),
        ];
        for (init, resp, want) in cases {
            for who in [Initiator::A, Initiator::B] {
                assert_eq!(
                    outcome(&entry(who, init, resp)),
                    want,
                    "{init:#x} {resp:#x} {who:?}"
                );
            }
        }
    }

    #[test]
    fn unanswered_means_nothing_came_back() {
        for who in [Initiator::A, Initiator::B] {
            assert!(unanswered(&entry(who, SYN, 0)));
            assert!(!unanswered(&entry(who, SYN, SYN | ACK)));
            assert!(!unanswered(&entry(who, SYN, RST | ACK)));
            assert!(!unanswered(&entry(who, ACK, ACK)));
        }
    }

    #[test]
    fn retransmission_is_at_or_below_the_high_mark_across_the_wrap() {
        assert!(is_retransmission(1000, 1000));
        assert!(is_retransmission(1000, 500));
        assert!(!is_retransmission(1000, 1001));
        // Across 2^32.
        assert!(!is_retransmission(u32::MAX - 10, 5));
        assert!(is_retransmission(5, u32::MAX - 10));
    }

    #[test]
    fn data_segments_and_their_end() {
        let mut p = Parsed {
            ip_len: 20 + 32 + 1448,
            hdr_len: 20 + 32,
            seq: u32::MAX - 447,
            tcp_flags: ACK,
            ..Default::default()
        };
        assert_eq!(payload(&p), 1448);
        assert_eq!(data_end(&p), Some((1000, 1448)));
        p.tcp_flags = SYN;
        assert_eq!(data_end(&p), None);
        p.tcp_flags = ACK;
        p.ip_len = 52;
        assert_eq!(data_end(&p), None);
        assert!(is_syn(SYN) && !is_syn(SYN | ACK) && !is_syn(ACK));
        let c = FlowCounters {
            syns: 4,
            ..Default::default()
        };
        assert_eq!(syn_retries(&c), 3);
        assert_eq!(syn_retries(&FlowCounters::default()), 0);
    }
}
